/**
 * The model's weights as the engine holds them: per layer, the norms and the linear layers (INT4 or dense, the
 * fused QKV weight with q, k, v as its row views), the final norm, the output layer, and the embedding table in
 * host memory (GLM-4-9B: 151552 x 4096 bf16 = 1.16 GiB that would otherwise sit on the GPU to serve one 8 KB
 * row a token: the engine gathers the rows on the host and writes them as the step's input).
 */
import { Glm4Error } from "../errors.js";
import type { LayerPart, ModelTensor } from "../checkpoint/tensors.js";
import { f16ToF32 } from "../util.js";
import type { NativeContext, NativeTensor, QWeight } from "./native.js";

export type Quantization = "int4" | "none";

/** A linear layer's weight: INT4 (canonical layout 0, or the CUDA kernel layout 1 after repackForKernels) or full
 * precision (bf16/f32). */
export type Linear = { kind: "int4"; q: QWeight; n: number; k: number } | { kind: "dense"; w: NativeTensor; n: number; k: number };

/** A layer's weights: the fields of LAYER_FIELD (one per tensor of the list), plus the q/k/v views. */
export interface LayerWeights {
  attnNorm: NativeTensor;
  /** The fused [q; k; v] weight (and bias): one GEMV launch for a single token, whose q, k, v are then
   * contiguous slices of one output row. q, k, v below are row views of it, for prompts of several tokens. */
  qkv: Linear;
  qkvBias?: NativeTensor;
  q: Linear;
  k: Linear;
  v: Linear;
  qBias?: NativeTensor;
  kBias?: NativeTensor;
  vBias?: NativeTensor;
  attnOut: Linear;
  ffnNorm: NativeTensor;
  gateUp: Linear;
  down: Linear;
}

/** Where each layer tensor of the list (lib/checkpoint/tensors.ts) lives in LayerWeights. */
export const LAYER_FIELD = {
  attn_norm: "attnNorm",
  qkv: "qkv",
  qkv_bias: "qkvBias",
  attn_out: "attnOut",
  ffn_norm: "ffnNorm",
  gate_up: "gateUp",
  down: "down",
} as const satisfies Record<LayerPart, keyof LayerWeights>;

/** The embedding table in host memory, in its on-disk dtype; rows are converted to f32 when gathered. */
export class HostEmbedding {
  constructor(
    readonly data: Buffer,
    readonly dtype: "BF16" | "F16" | "F32",
    readonly rows: number,
    readonly cols: number,
  ) {
    const want = rows * cols * (dtype === "F32" ? 4 : 2);
    if (data.byteLength !== want) throw new Glm4Error("ERR_GLM4_SHAPE_MISMATCH", `embedding: ${data.byteLength} bytes for [${rows}, ${cols}] ${dtype} (${want} expected)`);
  }
  get nbytes(): number {
    return this.data.byteLength;
  }

  private mapped: NativeTensor | null = null;
  /**
   * The table as a tensor the device's embedding op reads (made on first use, kept until disposeDevice): on CUDA in
   * page-locked host memory mapped for the device, read over the bus a row a token (8 KB for GLM-4), so no device
   * memory goes to it; null for an f16 table (the embedding op reads bf16 and f32). The steps of Engine.run gather
   * their rows with it from token ids the previous pick left on the device.
   */
  onDevice(ctx: NativeContext): NativeTensor | null {
    if (this.dtype === "F16" || this.mappedFailed) return null;
    try {
      this.mapped ??= ctx.hostMapped(this.dtype === "BF16" ? "bf16" : "f32", [this.rows, this.cols], this.data);
    } catch (e) {
      // No page-locked memory to be had (a host short of RAM, a locked-memory limit): the host gathers the rows as
      // before (slower, same results); said once.
      this.mappedFailed = true;
      process.emitWarning(`the embedding table could not be placed in page-locked host memory (${(e as Error).message}); prompts and decode steps gather its rows on the host instead`, { code: "GLM4_EMBED_HOST_GATHER" });
      return null;
    }
    return this.mapped;
  }
  private mappedFailed = false;
  /** Frees what onDevice made (the host copy stays). */
  disposeDevice(): void {
    this.mapped?.dispose();
    this.mapped = null;
  }
  /**
   * Rows `ids` in the table's own dtype, one after another: one Buffer copy (memcpy) a row, no per-element work. A
   * prefill chunk widens them to f32 on the device (forward.ts recordEmbeddings): 2048 rows of 4096 bf16 are 16 MB
   * copied instead of 8.4M conversions in a JS loop and 32 MB.
   */
  gatherRaw(ids: readonly number[]): Buffer {
    const rowBytes = this.cols * (this.dtype === "F32" ? 4 : 2);
    const out = Buffer.allocUnsafe(ids.length * rowBytes);
    for (let t = 0; t < ids.length; t++) {
      const id = ids[t];
      if (!Number.isInteger(id) || id < 0 || id >= this.rows) throw new RangeError(`token id ${id} is outside the vocabulary [0, ${this.rows})`);
      this.data.copy(out, t * rowBytes, id * rowBytes, (id + 1) * rowBytes);
    }
    return out;
  }

  /** Rows `ids` as f32, one after another. */
  gather(ids: readonly number[]): Float32Array {
    const H = this.cols;
    const out = new Float32Array(ids.length * H);
    const u32 = new Uint32Array(out.buffer);
    const d = this.data;
    for (let t = 0; t < ids.length; t++) {
      const id = ids[t];
      if (!Number.isInteger(id) || id < 0 || id >= this.rows) throw new RangeError(`token id ${id} is outside the vocabulary [0, ${this.rows})`);
      if (this.dtype === "BF16") {
        const row = new Uint16Array(d.buffer, d.byteOffset + id * H * 2, H);
        for (let j = 0; j < H; j++) u32[t * H + j] = row[j] << 16; // bf16 is the top half of an f32
      } else if (this.dtype === "F32") {
        out.set(new Float32Array(d.buffer.slice(d.byteOffset + id * H * 4, d.byteOffset + (id + 1) * H * 4)), t * H);
      } else {
        for (let j = 0; j < H; j++) out[t * H + j] = f16ToF32(d.readUInt16LE(id * H * 2 + j * 2));
      }
    }
    return out;
  }
}

export interface ModelWeights {
  embed: HostEmbedding;
  layers: LayerWeights[];
  finalNorm: NativeTensor;
  output: Linear;
}

/** Rows [a, b) of a linear weight, sharing memory (q, k and v are row ranges of the fused QKV weight). */
export function sliceLinear(l: Linear, a: number, b: number): Linear {
  if (l.kind === "dense") return { kind: "dense", w: l.w.slice0(a, b), n: b - a, k: l.k };
  const q = l.q;
  return {
    kind: "int4",
    q: { ...q, codes: q.codes.slice0(a, b), scales: q.scales.slice0(a, b), zeros: q.zeros.slice0(a, b) },
    n: b - a,
    k: l.k,
  };
}

export function disposeLinear(l: Linear): void {
  if (l.kind === "dense") l.w.dispose();
  else {
    l.q.codes.dispose();
    l.q.scales.dispose();
    l.q.zeros.dispose();
  }
}

function isLinear(v: Linear | NativeTensor): v is Linear {
  return "kind" in v;
}

/** The weight a tensor of the list became (the host embedding, a device tensor, or a linear layer). */
export function weightOf(w: ModelWeights, t: ModelTensor): HostEmbedding | NativeTensor | Linear {
  if (t.layer !== null) return w.layers[t.layer][LAYER_FIELD[t.part as LayerPart]]!;
  return t.part === "embed" ? w.embed : t.part === "final_norm" ? w.finalNorm : w.output;
}

/** Bytes a linear layer or a device tensor holds on the device. */
export function deviceBytes(v: Linear | NativeTensor): number {
  if (!isLinear(v)) return v.nbytes;
  return v.kind === "int4" ? v.q.codes.nbytes + v.q.scales.nbytes + v.q.zeros.nbytes : v.w.nbytes;
}

/** Frees every device tensor of `w`, views included; also the partial weights of a load that failed half-way. */
export function disposeWeights(w: Partial<ModelWeights>): void {
  w.embed?.disposeDevice();
  w.finalNorm?.dispose();
  if (w.output) disposeLinear(w.output);
  for (const L of (w.layers ?? []) as Partial<LayerWeights>[]) {
    for (const v of Object.values(L)) if (v) (isLinear(v) ? disposeLinear(v) : v.dispose());
  }
}

/** Whether a linear is INT4 in the CUDA kernel layout (layout 1): linear_int4 serves it, with its fusions. */
export function isTiled(l: Linear | undefined): l is Extract<Linear, { kind: "int4" }> {
  return l !== undefined && l.kind === "int4" && l.q.layout === 1;
}

/**
 * Repacks every INT4 linear whose shape allows it (N % 16 == 0, K % 64 == 0: all of GLM-4's) into the CUDA kernel
 * layout (layout 1, csrc/core/int4_layout.h) that the CUDA GEMV and GEMMs read; one weight at a time, each canonical
 * copy freed as soon as its repack has run (the transient is the largest linear: the output layer). The fused QKV
 * weight is repacked whole and q, k, v become row views of the result again. For CUDA contexts; the CPU backend
 * keeps the canonical layout (it never repacks).
 */
export async function repackForKernels(ctx: NativeContext, w: ModelWeights): Promise<void> {
  const one = async (l: Linear): Promise<Linear> => {
    if (l.kind !== "int4" || (l.q.layout ?? 0) !== 0 || l.n % 16 !== 0 || l.k % 64 !== 0) return l;
    const g = l.q.groupSize;
    const q: QWeight = {
      codes: ctx.empty("i4", [l.n, l.k]),
      scales: ctx.empty("bf16", [l.n, l.k / g]),
      zeros: ctx.empty("bf16", [l.n, l.k / g]),
      groupSize: g,
      layout: 1,
      ...(l.q.codebook ? { codebook: l.q.codebook } : {}),
    };
    try {
      ctx.repackInt4(q, l.q);
      await ctx.flushAsync();
    } catch (e) {
      for (const t of [q.codes, q.scales, q.zeros]) t.dispose();
      throw e;
    }
    disposeLinear(l);
    return { kind: "int4", q, n: l.n, k: l.k };
  };
  for (const L of w.layers) {
    if (L.qkv && L.q.n % 16 === 0 && L.k.n % 16 === 0) {
      const nq = L.q.n, nk = L.k.n, nv = L.v.n;
      const fused = await one(L.qkv);
      if (fused !== L.qkv) {
        for (const v of [L.q, L.k, L.v]) disposeLinear(v); // row views of the canonical weight
        L.qkv = fused;
        L.q = sliceLinear(fused, 0, nq);
        L.k = sliceLinear(fused, nq, nq + nk);
        L.v = sliceLinear(fused, nq + nk, nq + nk + nv);
      }
    } else if (!L.qkv) {
      L.q = await one(L.q);
      L.k = await one(L.k);
      L.v = await one(L.v);
    }
    L.attnOut = await one(L.attnOut);
    L.gateUp = await one(L.gateUp);
    L.down = await one(L.down);
  }
  w.output = await one(w.output);
}
