/**
 * Putting a model's weights together on a device: the WeightAssembler places each tensor of the list
 * (lib/checkpoint/tensors.ts) into ModelWeights, and assembleFromCheckpoint is the skeleton every checkpoint
 * loader shares (BF16/F16/F32, INT4, GPTQ): progress, abort, and on any failure freeing what reached the device
 * and closing the files.
 */
import { Glm4Error } from "../errors.js";
import type { Glm4Config } from "../checkpoint/config.js";
import { Checkpoint } from "../checkpoint/checkpoint.js";
import { GLOBAL_PARTS, LAYER_PARTS, isLinearName, modelTensors, parseTensorName, qkvRows } from "../checkpoint/tensors.js";
import type { NativeContext, NativeTensor } from "./native.js";
import type { Int4Scheme, OutputLayer } from "../checkpoint/int4-format.js";
import { chunkRows, quantizeHostLinear, quantizeOnDevice, quantizeRows, upload } from "./upload.js";
import { HostEmbedding, LAYER_FIELD, disposeWeights, sliceLinear, type LayerWeights, type Linear, type ModelWeights, type Quantization } from "./weights.js";

export interface LoadProgress {
  /** "weights" while tensors load; "done" once. */
  stage: "weights" | "done";
  /** Bytes of the checkpoint (or synthetic parameters) processed so far, and in all. */
  loaded: number;
  total: number;
  /** The tensor just finished (normalized name). */
  tensor?: string;
}

export interface WeightLoadOptions {
  quantization: Quantization;
  groupSize: 32 | 64 | 128;
  /** INT4 scheme (default "asym") and the output layer's precision (default "int4") of load-time quantization. */
  scheme?: Int4Scheme;
  outputLayer?: OutputLayer;
  onProgress?: (p: LoadProgress) => void;
  signal?: AbortSignal;
}

/** How the assembler turns linear layers into weights: INT4 (group, scheme; the output layer maybe kept) or dense. */
export interface AssemblyOptions {
  quantization: Quantization;
  groupSize: 32 | 64 | 128;
  scheme?: Int4Scheme;
  outputLayer?: OutputLayer;
}

/** A tensor read from disk, in host memory. */
export interface HostTensor {
  name: string;
  dtype: string;
  shape: number[];
  data: Buffer;
}

/**
 * Accumulates the model's tensors (lib/checkpoint/tensors.ts) into ModelWeights: each goes to its LayerWeights
 * field (LAYER_FIELD), q/k/v become row views of the fused QKV weight, and `finish` names the tensors of the list
 * that never came.
 */
export class WeightAssembler {
  readonly w: Omit<Partial<ModelWeights>, "layers"> & { layers: Partial<LayerWeights>[] };
  private readonly placed = new Set<string>();
  constructor(
    readonly ctx: NativeContext,
    readonly cfg: Glm4Config,
    readonly opts: AssemblyOptions,
  ) {
    this.w = { layers: Array.from({ length: cfg.numLayers }, () => ({})) };
  }

  /** A tensor from disk: the embedding stays on the host, INT4 linears are uploaded and quantized by row chunks. */
  async addHost(t: HostTensor): Promise<void> {
    const ctx = this.ctx;
    if (t.name === "embed") {
      if (t.dtype !== "BF16" && t.dtype !== "F16" && t.dtype !== "F32") throw new Glm4Error("ERR_GLM4_UNKNOWN_DTYPE", `embedding dtype ${t.dtype} cannot be loaded (BF16, F16, F32 only)`);
      this.setEmbed(new HostEmbedding(t.data, t.dtype, t.shape[0], t.shape[1]));
      return;
    }
    if (this.quantizes(t.name)) {
      this.addLinear(t.name, await quantizeHostLinear(ctx, t, this.opts.groupSize, this.opts.scheme));
      return;
    }
    await this.add(t.name, await upload(ctx, t));
  }

  /** Random weights of `shape` (synthetic model), made on the device; the embedding is brought to the host. */
  async addRandom(name: string, shape: number[], seed: number, mean: number, std: number): Promise<void> {
    const ctx = this.ctx;
    if (name === "embed") {
      const [n, k] = shape;
      const data = Buffer.allocUnsafe(n * k * 2);
      const rows = chunkRows(k, 2);
      for (let r0 = 0; r0 < n; r0 += rows) {
        const r1 = Math.min(n, r0 + rows);
        const c = ctx.empty("bf16", [r1 - r0, k]);
        try {
          ctx.fillRandom(c, seed * 65536 + r0, mean, std);
          await ctx.flushAsync(); // the fill runs off the JS thread; read() then only copies
          const h = c.read() as Uint16Array;
          Buffer.from(h.buffer, h.byteOffset, h.byteLength).copy(data, r0 * k * 2);
        } finally {
          c.dispose();
        }
      }
      this.setEmbed(new HostEmbedding(data, "BF16", n, k));
      return;
    }
    if (this.quantizes(name)) {
      const [n, k] = shape;
      this.addLinear(
        name,
        await quantizeRows(
          ctx,
          n,
          k,
          this.opts.groupSize,
          chunkRows(k, 2),
          (r0, r1) => {
            const c = ctx.empty("bf16", [r1 - r0, k]);
            ctx.fillRandom(c, seed * 65536 + r0, mean, std);
            return c;
          },
          this.opts.scheme,
        ),
      );
      return;
    }
    const t = ctx.empty("bf16", shape);
    ctx.fillRandom(t, seed, mean, std);
    await ctx.flushAsync();
    await this.add(name, t);
  }

  /** Whether the linear layer `name` becomes INT4 (quantization "int4", except the output layer kept in bf16). */
  quantizes(name: string): boolean {
    return isLinearName(name) && this.opts.quantization === "int4" && !(name === "output" && this.opts.outputLayer === "bf16");
  }

  /** Takes ownership of a linear layer's weight (INT4 or dense) made elsewhere (INT4 checkpoints, GPTQ import). */
  addLinear(name: string, lin: Linear): void {
    this.place(name, undefined, lin);
  }

  /** Takes ownership of `t` (a device tensor with the normalized name's shape). */
  async add(name: string, t: NativeTensor): Promise<void> {
    let lin: Linear | undefined;
    if (isLinearName(name)) {
      lin = this.quantizes(name) ? await quantizeOnDevice(this.ctx, t, this.opts.groupSize, this.opts.scheme) : { kind: "dense", w: t, n: t.shape[0], k: t.shape[1] };
    }
    this.place(name, t, lin);
  }

  private setEmbed(e: HostEmbedding): void {
    this.w.embed = e;
    this.placed.add("embed");
  }

  private place(name: string, t: NativeTensor | undefined, lin: Linear | undefined): void {
    const p = parseTensorName(name);
    if (!p || p.part === "embed") throw new Glm4Error("ERR_GLM4_INTERNAL", p ? "the embedding goes through addHost/addRandom" : `unexpected tensor ${name}`);
    const kind = p.layer === null ? GLOBAL_PARTS[p.part].kind : LAYER_PARTS[p.part].kind;
    const value = kind === "linear" ? lin! : t!;
    if (p.layer === null) {
      if (p.part === "final_norm") this.w.finalNorm = value as NativeTensor;
      else this.w.output = value as Linear;
    } else {
      const L = this.w.layers[p.layer];
      if (!L) throw new Glm4Error("ERR_GLM4_INTERNAL", `unexpected tensor ${name}`);
      (L as Record<string, unknown>)[LAYER_FIELD[p.part]] = value;
      const { q, kv } = qkvRows(this.cfg);
      if (p.part === "qkv") {
        L.q = sliceLinear(lin!, 0, q);
        L.k = sliceLinear(lin!, q, q + kv);
        L.v = sliceLinear(lin!, q + kv, q + 2 * kv);
      } else if (p.part === "qkv_bias") {
        L.qBias = t!.slice0(0, q);
        L.kBias = t!.slice0(q, q + kv);
        L.vBias = t!.slice0(q + kv, q + 2 * kv);
      }
    }
    this.placed.add(name);
  }

  finish(): ModelWeights {
    const missing = modelTensors(this.cfg).filter((t) => !this.placed.has(t.name)).map((t) => t.name);
    if (missing.length) throw new Glm4Error("ERR_GLM4_MISSING_TENSOR", `the checkpoint lacks ${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ` and ${missing.length - 5} more` : ""}`);
    return this.w as ModelWeights;
  }

  dispose(): void {
    disposeWeights(this.w as Partial<ModelWeights>);
  }
}

/** What a checkpoint loader's body works with (see assembleFromCheckpoint). */
export interface CheckpointAssembly {
  ckpt: Checkpoint;
  asm: WeightAssembler;
  /** Counts `bytes` of the checkpoint as done and reports progress. */
  advance(bytes: number, tensor: string): void;
  /** Throws ERR_GLM4_ABORTED once the load's signal is aborted. */
  checkAbort(): void;
}

/**
 * The skeleton every checkpoint loader shares (BF16/F16/F32, INT4, GPTQ): open the checkpoint, let `body` place
 * the tensors through the assembler, report progress, and on any failure free what reached the device and
 * close the files.
 */
export async function assembleFromCheckpoint(
  dir: string,
  cfg: Glm4Config,
  ctx: NativeContext,
  opts: WeightLoadOptions,
  asmOpts: AssemblyOptions,
  body: (a: CheckpointAssembly) => Promise<void>,
): Promise<ModelWeights> {
  const ckpt = await Checkpoint.open(dir);
  const asm = new WeightAssembler(ctx, cfg, asmOpts);
  try {
    let total = 0;
    for (const t of ckpt.tensors.values()) total += t.byteLength;
    let loaded = 0;
    await body({
      ckpt,
      asm,
      advance: (bytes, tensor) => {
        loaded += bytes;
        opts.onProgress?.({ stage: "weights", loaded, total, tensor });
      },
      checkAbort: () => {
        if (opts.signal?.aborted) throw new Glm4Error("ERR_GLM4_ABORTED", `loading ${dir} was aborted`, { cause: opts.signal.reason });
      },
    });
    const w = asm.finish();
    opts.onProgress?.({ stage: "done", loaded: total, total });
    return w;
  } catch (e) {
    asm.dispose();
    throw e;
  } finally {
    await ckpt.close();
  }
}
