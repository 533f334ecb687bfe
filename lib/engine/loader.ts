/**
 * Loading: a checkpoint directory (either naming, sharded safetensors, BF16/F16/F32) or a synthetic model of
 * GLM-4-9B's exact shapes, onto one device. Load-time quantization goes one tensor at a time: the tensor is
 * read from disk, uploaded, quantized on the device and its full-precision copy freed, so neither the host
 * nor the device ever holds the whole full-precision model.
 */
import path from "node:path";
import { totalmem } from "node:os";
import { constants as bufferConstants } from "node:buffer";
import { Glm4Error, wrapNative } from "../errors.js";
import type { Glm4Config } from "../checkpoint/config.js";
import { Checkpoint } from "../checkpoint/safetensors.js";
import { iterateWeights, type WeightTensor } from "../checkpoint/namings.js";
import { INT4_RECORD_FILE, checkInt4Checkpoint, checkInt4Params, u16View, type Int4Record } from "../checkpoint/int4-format.js";
import type { DType, NativeContext, NativeTensor } from "./native.js";
import { HostEmbedding, disposeWeights, sliceLinear, type LayerWeights, type Linear, type ModelWeights, type Quantization } from "./weights.js";

export interface LoadProgress {
  /** "weights" while tensors load; "done" once. */
  stage: "weights" | "done";
  /** Bytes of the checkpoint (or synthetic parameters) processed so far, and in all. */
  loaded: number;
  total: number;
  /** The tensor just finished (normalized name). */
  tensor?: string;
}

const DISK_DTYPE: Record<string, DType> = { BF16: "bf16", F16: "f16", F32: "f32" };

export interface WeightLoadOptions {
  quantization: Quantization;
  groupSize: 32 | 64 | 128;
  onProgress?: (p: LoadProgress) => void;
  signal?: AbortSignal;
}

/** Which normalized tensors are linear layers (quantized at INT4); the embedding, norms and biases are not. */
export function isLinearName(name: string): boolean {
  return name === "output" || /^layers\.\d+\.(qkv|attn_out|gate_up|down)$/.test(name);
}

/** Bytes a linear [n, k] weight takes on the device. */
export function linearBytes(n: number, k: number, q: Quantization, group: number): number {
  return q === "int4" ? (n * k) / 2 + 2 * 2 * n * (k / group) : 2 * n * k;
}

/** Uploads one on-disk tensor, converting f16 to f32 (the ops take bf16 or f32 weights). */
function upload(ctx: NativeContext, t: { dtype: string; shape: number[]; data: Buffer }): NativeTensor {
  const dt = DISK_DTYPE[t.dtype];
  if (!dt) throw new Glm4Error("ERR_GLM4_UNKNOWN_DTYPE", `tensor dtype ${t.dtype} cannot be loaded (BF16, F16, F32 only)`);
  const raw = ctx.fromBuffer(dt, t.shape, t.data);
  if (dt !== "f16") return raw;
  const f = ctx.empty("f32", t.shape);
  ctx.convert(f, raw);
  ctx.flush();
  raw.dispose();
  return f;
}

/** Rows per upload chunk: at most 64 MiB of full-precision weight on the device at a time. */
export function chunkRows(k: number, bytesPerElement: number): number {
  return Math.max(1, Math.floor((64 * 2 ** 20) / (k * bytesPerElement)));
}

/**
 * An INT4 linear [n, k] quantized on the device, chunk by chunk: `chunk(r0, r1)` returns rows [r0, r1) in full
 * precision on the device (the caller's upload or a random fill); it is quantized into those rows of the codes
 * and freed before the next chunk, so the device never holds more than one chunk of full-precision weight.
 */
export function quantizeRows(ctx: NativeContext, n: number, k: number, group: 32 | 64 | 128, rows: number, chunk: (r0: number, r1: number) => NativeTensor): Linear {
  if (k % group !== 0) throw new Glm4Error("ERR_GLM4_SHAPE_MISMATCH", `a linear weight [${n}, ${k}] cannot be quantized with group ${group}: ${k} is not a multiple of ${group}; use a group size that divides ${k}`);
  const q = { codes: ctx.empty("i4", [n, k]), scales: ctx.empty("bf16", [n, k / group]), zeros: ctx.empty("bf16", [n, k / group]), groupSize: group };
  try {
    for (let r0 = 0; r0 < n; r0 += rows) {
      const r1 = Math.min(n, r0 + rows);
      const w = chunk(r0, r1);
      const part = { codes: q.codes.slice0(r0, r1), scales: q.scales.slice0(r0, r1), zeros: q.zeros.slice0(r0, r1), groupSize: group };
      try {
        ctx.quantizeInt4(part, w);
        ctx.flush();
      } finally {
        w.dispose();
        part.codes.dispose();
        part.scales.dispose();
        part.zeros.dispose();
      }
    }
  } catch (e) {
    q.codes.dispose();
    q.scales.dispose();
    q.zeros.dispose();
    throw e;
  }
  return { kind: "int4", q, n, k };
}

/** A full-precision weight on the device -> an INT4 Linear (the full-precision copy is freed). */
export function quantizeOnDevice(ctx: NativeContext, w: NativeTensor, group: 32 | 64 | 128): Linear {
  const [n, k] = w.shape;
  try {
    return quantizeRows(ctx, n, k, group, n, () => w);
  } finally {
    w.dispose();
  }
}

/**
 * A full-precision linear weight in host memory -> INT4 on ctx, quantized by row chunks (at most 64 MiB of
 * full precision on the device at a time). The one path shared by load-time quantization and `quantize`,
 * so that both give the same codes bit for bit.
 */
export function quantizeHostLinear(ctx: NativeContext, t: { name: string; dtype: string; shape: number[]; data: Buffer }, group: 32 | 64 | 128): Linear {
  const dt = DISK_DTYPE[t.dtype];
  if (!dt) throw new Glm4Error("ERR_GLM4_UNKNOWN_DTYPE", `tensor ${t.name}: dtype ${t.dtype} cannot be loaded (BF16, F16, F32 only)`);
  const [n, k] = t.shape;
  const rowBytes = k * (dt === "f32" ? 4 : 2);
  return quantizeRows(ctx, n, k, group, chunkRows(k, dt === "f32" ? 4 : 2), (r0, r1) => ctx.fromBuffer(dt, [r1 - r0, k], t.data.subarray(r0 * rowBytes, r1 * rowBytes)));
}

/** A tensor read from disk, in host memory. */
export interface HostTensor {
  name: string;
  dtype: string;
  shape: number[];
  data: Buffer;
}

/** Accumulates normalized tensors into ModelWeights (q/k/v become row views of the fused QKV weight). */
export class WeightAssembler {
  readonly w: Omit<Partial<ModelWeights>, "layers"> & { layers: Partial<LayerWeights>[] };
  constructor(
    readonly ctx: NativeContext,
    readonly cfg: Glm4Config,
    readonly opts: { quantization: Quantization; groupSize: 32 | 64 | 128 },
  ) {
    this.w = { layers: Array.from({ length: cfg.numLayers }, () => ({})) };
  }

  /** A tensor from disk: the embedding stays on the host, INT4 linears are uploaded and quantized by row chunks. */
  addHost(t: HostTensor): void {
    const ctx = this.ctx;
    if (t.name === "embed") {
      if (t.dtype !== "BF16" && t.dtype !== "F16" && t.dtype !== "F32") throw new Glm4Error("ERR_GLM4_UNKNOWN_DTYPE", `embedding dtype ${t.dtype} cannot be loaded (BF16, F16, F32 only)`);
      this.w.embed = new HostEmbedding(t.data, t.dtype, t.shape[0], t.shape[1]);
      return;
    }
    if (isLinearName(t.name) && this.opts.quantization === "int4") {
      this.addLinear(t.name, quantizeHostLinear(ctx, t, this.opts.groupSize));
      return;
    }
    this.add(t.name, upload(ctx, t));
  }

  /** Random weights of `shape` (synthetic model), made on the device; the embedding is brought to the host. */
  addRandom(name: string, shape: number[], seed: number, mean: number, std: number): void {
    const ctx = this.ctx;
    if (name === "embed") {
      const [n, k] = shape;
      const data = Buffer.allocUnsafe(n * k * 2);
      const rows = chunkRows(k, 2);
      for (let r0 = 0; r0 < n; r0 += rows) {
        const r1 = Math.min(n, r0 + rows);
        const c = ctx.empty("bf16", [r1 - r0, k]);
        ctx.fillRandom(c, seed * 65536 + r0, mean, std);
        const h = c.read() as Uint16Array;
        Buffer.from(h.buffer, h.byteOffset, h.byteLength).copy(data, r0 * k * 2);
        c.dispose();
      }
      this.w.embed = new HostEmbedding(data, "BF16", n, k);
      return;
    }
    if (isLinearName(name) && this.opts.quantization === "int4") {
      const [n, k] = shape;
      this.addLinear(name, quantizeRows(ctx, n, k, this.opts.groupSize, chunkRows(k, 2), (r0, r1) => {
        const c = ctx.empty("bf16", [r1 - r0, k]);
        ctx.fillRandom(c, seed * 65536 + r0, mean, std);
        return c;
      }));
      return;
    }
    const t = ctx.empty("bf16", shape);
    ctx.fillRandom(t, seed, mean, std);
    ctx.flush();
    this.add(name, t);
  }

  /** Takes ownership of a linear layer's weight (INT4 or dense) made elsewhere (INT4 checkpoints, GPTQ import). */
  addLinear(name: string, lin: Linear): void {
    this.place(name, undefined, lin);
  }

  /** Takes ownership of `t` (a device tensor with the normalized name's shape). */
  add(name: string, t: NativeTensor): void {
    let lin: Linear | undefined;
    if (isLinearName(name)) {
      lin = this.opts.quantization === "int4" ? quantizeOnDevice(this.ctx, t, this.opts.groupSize) : { kind: "dense", w: t, n: t.shape[0], k: t.shape[1] };
    }
    this.place(name, t, lin);
  }

  private place(name: string, t: NativeTensor | undefined, lin: Linear | undefined): void {
    const cfg = this.cfg;
    if (name === "embed") throw new Glm4Error("ERR_GLM4_INTERNAL", "the embedding goes through addHost/addRandom");
    else if (name === "final_norm") this.w.finalNorm = t;
    else if (name === "output") this.w.output = lin!;
    else {
      const m = /^layers\.(\d+)\.(\w+)$/.exec(name);
      if (!m) throw new Glm4Error("ERR_GLM4_INTERNAL", `unexpected tensor ${name}`);
      const L = this.w.layers[Number(m[1])];
      const qRows = cfg.numHeads * cfg.headDim, kvRows = cfg.numKvHeads * cfg.headDim;
      switch (m[2]) {
        case "attn_norm": L.attnNorm = t!; break;
        case "ffn_norm": L.ffnNorm = t!; break;
        case "attn_out": L.attnOut = lin!; break;
        case "gate_up": L.gateUp = lin!; break;
        case "down": L.down = lin!; break;
        case "qkv": {
          L.q = sliceLinear(lin!, 0, qRows);
          L.k = sliceLinear(lin!, qRows, qRows + kvRows);
          L.v = sliceLinear(lin!, qRows + kvRows, qRows + 2 * kvRows);
          L.qkv = lin!;
          break;
        }
        case "qkv_bias": {
          L.qBias = t!.slice0(0, qRows);
          L.kBias = t!.slice0(qRows, qRows + kvRows);
          L.vBias = t!.slice0(qRows + kvRows, qRows + 2 * kvRows);
          L.qkvBias = t!;
          break;
        }
        default:
          throw new Glm4Error("ERR_GLM4_INTERNAL", `unexpected tensor ${name}`);
      }
    }
  }

  finish(): ModelWeights {
    const w = this.w;
    const missing: string[] = [];
    if (!w.embed) missing.push("embed");
    if (!w.finalNorm) missing.push("final_norm");
    if (!w.output) missing.push("output");
    w.layers.forEach((L, i) => {
      for (const k of ["attnNorm", "q", "k", "v", "attnOut", "ffnNorm", "gateUp", "down"] as const) if (!L[k]) missing.push(`layers.${i}.${k}`);
      if (this.cfg.qkvBias && !L.qBias) missing.push(`layers.${i}.qkv_bias`);
    });
    if (missing.length) throw new Glm4Error("ERR_GLM4_MISSING_TENSOR", `the checkpoint lacks ${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ` and ${missing.length - 5} more` : ""}`);
    return w as ModelWeights;
  }

  dispose(): void {
    disposeWeights(this.w as Partial<ModelWeights>);
  }
}

/**
 * Loading reads one tensor at a time into host memory: a tensor larger than the machine's memory, or than
 * the largest Buffer Node can allocate, cannot be loaded. A header may claim terabytes (a sparse file makes
 * the claim cheap), so this is checked from the headers before anything that size is allocated.
 */
export function checkHostFits(ckpt: Checkpoint): void {
  const limit = Math.min(totalmem(), bufferConstants.MAX_LENGTH);
  let big: { name: string; byteLength: number; file: string } | undefined;
  for (const t of ckpt.tensors.values()) if (!big || t.byteLength > big.byteLength) big = t;
  if (big && big.byteLength > limit) {
    const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
    throw new Glm4Error(
      "ERR_GLM4_OUT_OF_MEMORY",
      `${big.file}: tensor ${JSON.stringify(big.name)} is ${gib(big.byteLength)}; loading reads a tensor whole into host memory, and this machine allows ${gib(limit)} at once (memory ${gib(totalmem())}, largest Node Buffer ${gib(bufferConstants.MAX_LENGTH)}). The header claims an impossible size, or the checkpoint is not a GLM-4-9B.`,
    );
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
  asmOpts: { quantization: Quantization; groupSize: 32 | 64 | 128 },
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

/** Loads every tensor of a checkpoint directory onto ctx. */
export async function loadCheckpointWeights(dir: string, cfg: Glm4Config, ctx: NativeContext, opts: WeightLoadOptions): Promise<ModelWeights> {
  return assembleFromCheckpoint(dir, cfg, ctx, opts, opts, async ({ ckpt, asm, advance, checkAbort }) => {
    checkHostFits(ckpt);
    for await (const t of iterateWeights(ckpt, cfg, { signal: opts.signal }) as AsyncGenerator<WeightTensor>) {
      checkAbort();
      try {
        asm.addHost(t);
      } catch (e) {
        throw wrapNative(e);
      }
      advance(t.data.byteLength, t.name);
    }
  });
}

/** GLM-4-9B(-chat)'s configuration (from its config.json). */
export function glm4_9bConfig(): Glm4Config {
  return {
    flavour: "chatglm",
    numLayers: 40,
    hiddenSize: 4096,
    numHeads: 32,
    headDim: 128,
    numKvHeads: 2,
    ffnSize: 13696,
    vocabSize: 151552,
    rmsEps: 1.5625e-7,
    ropeTheta: 10000 * 500,
    rotaryDim: 64,
    qkvBias: true,
    maxPositions: 131072,
    eosTokenIds: [151329, 151336, 151338],
    padTokenId: 151329,
    torchDtype: "bfloat16",
  };
}

/** The normalized tensors of a config, in load order, with their shapes. */
export function tensorPlan(cfg: Glm4Config): { name: string; shape: number[] }[] {
  const { hiddenSize: H, numHeads: Hq, numKvHeads: Hkv, headDim: D, ffnSize: F, vocabSize: V } = cfg;
  const out: { name: string; shape: number[] }[] = [{ name: "embed", shape: [V, H] }];
  for (let i = 0; i < cfg.numLayers; i++) {
    out.push({ name: `layers.${i}.attn_norm`, shape: [H] });
    out.push({ name: `layers.${i}.qkv`, shape: [(Hq + 2 * Hkv) * D, H] });
    if (cfg.qkvBias) out.push({ name: `layers.${i}.qkv_bias`, shape: [(Hq + 2 * Hkv) * D] });
    out.push({ name: `layers.${i}.attn_out`, shape: [H, Hq * D] });
    out.push({ name: `layers.${i}.ffn_norm`, shape: [H] });
    out.push({ name: `layers.${i}.gate_up`, shape: [2 * F, H] });
    out.push({ name: `layers.${i}.down`, shape: [H, F] });
  }
  out.push({ name: "final_norm", shape: [H] });
  out.push({ name: "output", shape: [V, H] });
  return out;
}

/**
 * Random weights of the config's exact shapes, made on the device (bf16, then quantized like a real load):
 * for speed and memory measurements without an 18 GB file. Scales keep activations healthy (linear std
 * 1/sqrt(fan_in), norms 1, biases small) so that no NaN or Inf appears over long generations.
 */
export async function syntheticWeights(cfg: Glm4Config, ctx: NativeContext, opts: WeightLoadOptions & { seed?: number }): Promise<ModelWeights> {
  const asm = new WeightAssembler(ctx, cfg, opts);
  const plan = tensorPlan(cfg);
  const total = plan.reduce((a, t) => a + 2 * t.shape.reduce((x, y) => x * y, 1), 0);
  let loaded = 0;
  let seed = opts.seed ?? 1234;
  try {
    for (const t of plan) {
      if (opts.signal?.aborted) throw new Glm4Error("ERR_GLM4_ABORTED", "building the synthetic model was aborted", { cause: opts.signal.reason });
      const isNorm = /norm$/.test(t.name);
      const isBias = /bias$/.test(t.name);
      const std = isNorm ? 0.02 : isBias ? 0.02 : t.name === "embed" ? 1 : 1 / Math.sqrt(t.shape[1]);
      asm.addRandom(t.name, t.shape, seed++, isNorm ? 1 : 0, std);
      loaded += 2 * t.shape.reduce((x, y) => x * y, 1);
      opts.onProgress?.({ stage: "weights", loaded, total, tensor: t.name });
    }
    const w = asm.finish();
    opts.onProgress?.({ stage: "done", loaded: total, total });
    return w;
  } catch (e) {
    asm.dispose();
    throw wrapNative(e);
  }
}

/**
 * Loads an INT4 checkpoint written by `glm4-int4 quantize` (lib/checkpoint/int4-format.ts): codes, scales and zeros go
 * onto ctx as they are (no full-precision step); scales and zeros are checked on the host first. The
 * embedding, norms and biases load as from a BF16 checkpoint.
 */
export async function loadInt4CheckpointWeights(dir: string, cfg: Glm4Config, ctx: NativeContext, opts: WeightLoadOptions, record: Int4Record): Promise<ModelWeights> {
  const recordFile = path.join(dir, INT4_RECORD_FILE);
  if (opts.quantization !== "int4") {
    throw new Glm4Error("ERR_GLM4_BAD_QUANTIZATION", `${recordFile}: this checkpoint is already quantized to INT4 (group ${record.group_size}), so quantization "${opts.quantization}" cannot load it: its full-precision weights are not in it. Load it with quantization "int4" (the default), or load the BF16 source checkpoint with quantization "none".`);
  }
  return assembleFromCheckpoint(dir, cfg, ctx, opts, { quantization: "int4", groupSize: record.group_size }, async ({ ckpt, asm, advance, checkAbort }) => {
    const entries = checkInt4Checkpoint(ckpt, cfg, record, recordFile);
    checkHostFits(ckpt);
    for (const e of entries) {
      checkAbort();
      if (e.kind === "int4") {
        const [qw, sc, zr] = [await ckpt.read(e.qweight), await ckpt.read(e.scales), await ckpt.read(e.zeros)];
        const scales = u16View(sc.data), zeros = u16View(zr.data);
        checkInt4Params(ckpt.info(e.scales).file, e.name, scales, zeros, e.k / e.groupSize);
        const parts: NativeTensor[] = [];
        try {
          parts.push(ctx.fromBuffer("i4", [e.n, e.k], qw.data));
          parts.push(ctx.fromBuffer("bf16", [e.n, e.k / e.groupSize], scales));
          parts.push(ctx.fromBuffer("bf16", [e.n, e.k / e.groupSize], zeros));
        } catch (err) {
          for (const p of parts) p.dispose();
          throw wrapNative(err);
        }
        asm.addLinear(e.name, { kind: "int4", q: { codes: parts[0], scales: parts[1], zeros: parts[2], groupSize: e.groupSize }, n: e.n, k: e.k });
        advance(qw.data.byteLength + sc.data.byteLength + zr.data.byteLength, e.name);
      } else {
        const t = await ckpt.read(e.tensor);
        try {
          asm.addHost({ name: e.name, dtype: t.dtype, shape: t.shape, data: t.data });
        } catch (err) {
          throw wrapNative(err);
        }
        advance(t.data.byteLength, e.name);
      }
    }
  });
}
