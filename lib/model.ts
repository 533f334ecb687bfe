/**
 * GLM-4 assembled from the native ops: embedding, N layers (RMSNorm, QKV with bias, partial interleaved
 * rotary, KV-cache write, GQA attention, output projection, residual, RMSNorm, fused gate|up, SwiGLU, down,
 * residual), final norm and output layer. One `Context` per model: several models live side by side, each
 * with its own memory and stream.
 *
 * A decode step (one token) is recorded once into a Plan and replayed for every token: the token's embedding
 * row and its position live in device tensors written before each replay, so on CUDA the whole step is one
 * graph launch.
 *
 * The embedding table stays in host memory (GLM-4-9B: 151552 x 4096 bf16 = 1.16 GiB that would otherwise sit
 * on the GPU to serve one 8 KB row a token): the engine gathers the rows on the host and writes them as the
 * step's input. That is what keeps a full INT4 load with an 8K cache under 6.5 GiB of GPU memory.
 */
import { Glm4Error, wrapNative } from "./errors.js";
import type { Glm4Config } from "./config.js";
import { native, type DType, type NativeContext, type NativePlan, type NativeTensor, type QWeight } from "./native.js";

export type Quantization = "int4" | "none";

/** A linear layer's weight: INT4 (canonical layout) or full precision (bf16/f32). */
export type Linear = { kind: "int4"; q: QWeight; n: number; k: number } | { kind: "dense"; w: NativeTensor; n: number; k: number };

export interface LayerWeights {
  attnNorm: NativeTensor;
  /** The fused [q; k; v] weight (and bias): one GEMV launch for a single token, whose q, k, v are then
   * contiguous slices of one output row. q, k, v below are row views of it, for prompts of several tokens. */
  qkv?: Linear;
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

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
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
    q: { codes: q.codes.slice0(a, b), scales: q.scales.slice0(a, b), zeros: q.zeros.slice0(a, b), groupSize: q.groupSize, layout: q.layout },
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

/** Scratch activations for T tokens. @internal shared with lib/batch-engine.ts */
export class Scratch {
  readonly x: NativeTensor; // f32 [T, H] residual stream
  readonly h: NativeTensor; // f32 [T, H] normed
  readonly q: NativeTensor; // f32 [T, Hq, D]
  readonly k: NativeTensor; // f32 [T, Hkv, D]
  readonly v: NativeTensor; // f32 [T, Hkv, D]
  readonly attn: NativeTensor; // f32 [T, Hq, D]
  readonly o: NativeTensor; // f32 [T, H]
  readonly gu: NativeTensor; // f32 [T, 2F]
  readonly act: NativeTensor; // f32 [T, F]
  readonly pos: NativeTensor; // i32 [T]
  /** T = 1 only: f32 [1, (Hq + 2 Hkv) D], the fused QKV output; q, k, v are views of its three segments. */
  readonly qkv: NativeTensor | null;
  constructor(ctx: NativeContext, cfg: Glm4Config, readonly t: number) {
    const { hiddenSize: H, numHeads: Hq, numKvHeads: Hkv, headDim: D, ffnSize: F } = cfg;
    this.x = ctx.empty("f32", [t, H]);
    this.h = ctx.empty("f32", [t, H]);
    if (t === 1) {
      const qkv = ctx.empty("f32", [(Hq + 2 * Hkv) * D]);
      this.q = qkv.slice0(0, Hq * D).reshape([1, Hq, D]);
      this.k = qkv.slice0(Hq * D, (Hq + Hkv) * D).reshape([1, Hkv, D]);
      this.v = qkv.slice0((Hq + Hkv) * D, (Hq + 2 * Hkv) * D).reshape([1, Hkv, D]);
      this.qkv = qkv.reshape([1, (Hq + 2 * Hkv) * D]);
      qkv.dispose();
    } else {
      this.qkv = null;
      this.q = ctx.empty("f32", [t, Hq, D]);
      this.k = ctx.empty("f32", [t, Hkv, D]);
      this.v = ctx.empty("f32", [t, Hkv, D]);
    }
    this.attn = ctx.empty("f32", [t, Hq, D]);
    this.o = ctx.empty("f32", [t, H]);
    this.gu = ctx.empty("f32", [t, 2 * F]);
    this.act = ctx.empty("f32", [t, F]);
    this.pos = ctx.empty("i32", [t]);
  }
  dispose(): void {
    for (const t of [this.x, this.h, this.q, this.k, this.v, this.attn, this.o, this.gu, this.act, this.pos]) t.dispose();
    this.qkv?.dispose();
  }
}

/** out = x W^T (+ bias) for an INT4 or a dense weight. */
export function recordLinear(ctx: NativeContext, out: NativeTensor, x: NativeTensor, l: Linear, bias?: NativeTensor): void {
  if (l.kind === "int4") ctx.matmulInt4(out, x, l.q, bias ?? null);
  else ctx.matmul(out, x, l.w, bias ?? null);
}

/**
 * Records the layers for the embedded tokens in s.x; leaves the final hidden states in s.x. Rotary takes the
 * sequence positions s.pos (the angles); kv_write and attention take cache rows `rows` (i32 [T]) and attention
 * reads rows start[t]..rows[t] (`start` null: from row 0). One sequence per cache: rows = s.pos, start = null;
 * slots of a shared cache (lib/batch-engine.ts): rows = slot * S + position, start = slot * S.
 *
 * Each residual add is fused with the RMSNorm that follows it (add_rmsnorm: the FFN norm, the next layer's
 * attention norm) and rotary(q) + rotary(k) + kv_write are one op (rotary_kv_write): 4 launches a layer fewer,
 * with results bit-identical to the unfused sequence. With `final` (out f32 [T, H], the final norm's weight),
 * the last residual add is fused with the final norm too, written to final.out (s.x still ends as the final
 * hidden states).
 */
export function recordLayers(ctx: NativeContext, cfg: Glm4Config, w: ModelWeights, s: Scratch, kcache: readonly NativeTensor[], vcache: readonly NativeTensor[], rows: NativeTensor, start: NativeTensor | null, final?: { out: NativeTensor; norm: NativeTensor }): void {
  const T = s.t;
  const scale = 1 / Math.sqrt(cfg.headDim);
  const q2 = s.q.reshape([T, cfg.numHeads * cfg.headDim]);
  const k2 = s.k.reshape([T, cfg.numKvHeads * cfg.headDim]);
  const v2 = s.v.reshape([T, cfg.numKvHeads * cfg.headDim]);
  const a2 = s.attn.reshape([T, cfg.numHeads * cfg.headDim]);
  // Layer 0's attention norm stands alone; every later one is fused with the previous layer's last residual add.
  if (cfg.numLayers > 0) ctx.rmsnorm(s.h, s.x, w.layers[0].attnNorm, cfg.rmsEps);
  else if (final) ctx.rmsnorm(final.out, s.x, final.norm, cfg.rmsEps);
  for (let i = 0; i < cfg.numLayers; i++) {
    const L = w.layers[i];
    if (s.qkv && L.qkv) {
      // One token: one launch for the fused QKV weight (per-row arithmetic is the same as the three views').
      recordLinear(ctx, s.qkv, s.h, L.qkv, L.qkvBias);
    } else {
      recordLinear(ctx, q2, s.h, L.q, L.qBias);
      recordLinear(ctx, k2, s.h, L.k, L.kBias);
      recordLinear(ctx, v2, s.h, L.v, L.vBias);
    }
    ctx.rotaryKvWrite(s.q, s.k, s.v, kcache[i], vcache[i], s.pos, rows, cfg.rotaryDim, cfg.ropeTheta);
    ctx.attention(s.attn, s.q, kcache[i], vcache[i], rows, scale, start);
    recordLinear(ctx, s.o, a2, L.attnOut);
    ctx.addRmsnorm(s.h, s.x, s.o, L.ffnNorm, cfg.rmsEps);
    recordLinear(ctx, s.gu, s.h, L.gateUp);
    ctx.swiglu(s.act, s.gu);
    recordLinear(ctx, s.o, s.act, L.down);
    if (i + 1 < cfg.numLayers) ctx.addRmsnorm(s.h, s.x, s.o, w.layers[i + 1].attnNorm, cfg.rmsEps);
    else if (final) ctx.addRmsnorm(final.out, s.x, s.o, final.norm, cfg.rmsEps);
    else ctx.add(s.x, s.x, s.o);
  }
  for (const t of [q2, k2, v2, a2]) t.dispose();
}

export interface EngineOptions {
  maxContext: number;
  /** KV-cache dtype: bf16 on the GPU (half the memory), f32 on the CPU reference. */
  kvDtype: DType;
  /** Tokens per prefill chunk (bounds the scratch memory of long prompts). */
  prefillChunk: number;
}

/**
 * The forward pass over one sequence with its KV cache. Not safe for concurrent use: callers serialize
 * (the model's queue does).
 */
export class Engine {
  readonly kcache: NativeTensor[] = [];
  readonly vcache: NativeTensor[] = [];
  /** Tokens currently in the cache (the next token goes to this position). */
  length = 0;
  /** The ids in the cache, position by position (kept in step with `length` by prefill, step, truncate, reset). */
  private ids: number[] = [];
  private decode?: { scratch: Scratch; plan: NativePlan; logits: NativeTensor; tok: NativeTensor; params: NativeTensor; topK: NativeTensor; hLast: NativeTensor };
  private disposed = false;

  constructor(
    readonly ctx: NativeContext,
    readonly cfg: Glm4Config,
    readonly w: ModelWeights,
    readonly opts: EngineOptions,
  ) {
    const { numKvHeads: Hkv, headDim: D } = cfg;
    for (let i = 0; i < cfg.numLayers; i++) {
      this.kcache.push(ctx.empty(opts.kvDtype, [opts.maxContext, Hkv, D]));
      this.vcache.push(ctx.empty(opts.kvDtype, [opts.maxContext, Hkv, D]));
    }
  }

  private linear(out: NativeTensor, x: NativeTensor, l: Linear, bias?: NativeTensor): void {
    recordLinear(this.ctx, out, x, l, bias);
  }

  /**
   * Records the layers for the embedded tokens in s.x at positions s.pos; leaves the final hidden states in s.x
   * (and, with finalOut, their final norm in it).
   */
  private recordLayers(s: Scratch, finalOut?: NativeTensor): void {
    recordLayers(this.ctx, this.cfg, this.w, s, this.kcache, this.vcache, s.pos, null, finalOut ? { out: finalOut, norm: this.w.finalNorm } : undefined);
  }

  private checkRoom(n: number): void {
    if (this.length + n > this.opts.maxContext) {
      throw new Glm4Error(
        "ERR_GLM4_CONTEXT_FULL",
        `the sequence would reach ${this.length + n} tokens but the KV cache holds ${this.opts.maxContext}; load the model with a larger maxContext or shorten the prompt`,
      );
    }
  }

  private checkIds(ids: readonly number[]): void {
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.cfg.vocabSize) {
        throw new RangeError(`token id ${id} is outside the vocabulary [0, ${this.cfg.vocabSize})`);
      }
    }
  }

  reset(): void {
    this.length = 0;
    this.ids = [];
  }

  /** The token ids in the KV cache (empty when `length` was moved by hand and no longer matches them). */
  get tokens(): readonly number[] {
    return this.ids.length === this.length ? this.ids : [];
  }

  /**
   * Keeps the first n tokens of the cache and drops the rest: attention reads rows 0..pos only, so the rows
   * past n are simply overwritten by the next prefill or step.
   */
  truncate(n: number): void {
    if (!Number.isInteger(n) || n < 0 || n > this.length) throw new RangeError(`truncate(${n}): the cache holds ${this.length} tokens`);
    this.length = n;
    this.ids.length = Math.min(this.ids.length, n);
  }

  /**
   * Keeps the longest prefix of the cache that `prompt` starts with, at most prompt.length - 1 tokens (the last
   * token of the prompt is always fed again: its logits are what the next pick reads). Returns how many tokens
   * were kept; the caller prefills prompt.slice(kept).
   */
  reusePrefix(prompt: readonly number[]): number {
    const have = this.tokens;
    const limit = Math.min(have.length, prompt.length - 1);
    let n = 0;
    while (n < limit && have[n] === prompt[n]) n++;
    if (n === 0) this.reset();
    else this.truncate(n);
    return n;
  }

  /**
   * Feeds tokens at the current position. Returns the logits of the last token (f32 [1, V] device tensor
   * owned by the engine, valid until the next call) or, with allLogits, a new f32 [T, V] tensor (caller disposes).
   */
  async prefill(ids: readonly number[], allLogits = false): Promise<NativeTensor> {
    if (this.disposed) throw new Glm4Error("ERR_GLM4_DISPOSED", "the model was disposed");
    if (ids.length === 0) throw new RangeError("prefill needs at least one token");
    this.checkIds(ids);
    this.checkRoom(ids.length);
    const { ctx, cfg } = this;
    const all = allLogits ? ctx.empty("f32", [ids.length, cfg.vocabSize]) : null;
    try {
      for (let start = 0; start < ids.length; start += this.opts.prefillChunk) {
        const chunk = ids.slice(start, start + this.opts.prefillChunk);
        if (chunk.length === 1 && !allLogits) {
          // A single token goes through the captured decode step.
          await this.step(chunk[0]);
          continue;
        }
        const s = new Scratch(ctx, cfg, chunk.length);
        try {
          s.x.write(this.w.embed.gather(chunk));
          s.pos.write(Int32Array.from(chunk, (_, j) => this.length + j));
          this.recordLayers(s);
          const d = this.ensureDecode();
          if (all) {
            const dst = all.slice0(start, start + chunk.length);
            ctx.rmsnorm(s.h, s.x, this.w.finalNorm, cfg.rmsEps);
            this.linear(dst, s.h, this.w.output);
            dst.dispose();
          }
          // Logits of the chunk's last token into the decode step's logits buffer.
          const last = s.x.slice0(chunk.length - 1, chunk.length);
          ctx.rmsnorm(d.hLast, last, this.w.finalNorm, cfg.rmsEps);
          this.linear(d.logits, d.hLast, this.w.output);
          last.dispose();
          await ctx.flushAsync();
        } finally {
          s.dispose();
        }
        this.length += chunk.length;
        this.ids.push(...chunk);
      }
    } catch (e) {
      all?.dispose();
      throw wrapNative(e);
    }
    return all ?? this.ensureDecode().logits;
  }

  private ensureDecode() {
    if (this.decode) return this.decode;
    const { ctx, cfg } = this;
    const scratch = new Scratch(ctx, cfg, 1);
    const logits = ctx.empty("f32", [1, cfg.vocabSize]);
    const hLast = ctx.empty("f32", [1, cfg.hiddenSize]);
    const tok = ctx.empty("i32", [1]);
    const params = ctx.empty("f32", [1, 4]);
    const topK = ctx.empty("i32", [1]);
    ctx.flush();
    ctx.beginCapture();
    let plan: NativePlan;
    try {
      this.recordLayers(scratch, hLast); // the last residual add fused with the final norm into hLast
      this.linear(logits, hLast, this.w.output);
    } finally {
      plan = ctx.endCapture();
    }
    this.decode = { scratch, plan, logits, tok, params, topK, hLast };
    return this.decode;
  }

  /** Records one token through the captured step; its logits land in the engine's logits buffer once the next pick(), readLogits() or flush runs. */
  async step(id: number): Promise<NativeTensor> {
    if (this.disposed) throw new Glm4Error("ERR_GLM4_DISPOSED", "the model was disposed");
    this.checkIds([id]);
    this.checkRoom(1);
    const d = this.ensureDecode();
    try {
      d.scratch.x.write(this.w.embed.gather([id]));
      d.scratch.pos.write(Int32Array.of(this.length));
      // Recorded, not run: the next pick()/readLogits() runs the step and the token choice in one flush
      // (one trip through the worker thread a token instead of two).
      this.ctx.replay(d.plan);
    } catch (e) {
      throw wrapNative(e);
    }
    this.length += 1;
    this.ids.push(id);
    return d.logits;
  }

  /**
   * Picks the next token from the current logits on the device: argmax when temperature <= 0, else the
   * sampling op with (temperature, topP, minP, u) and topK.
   */
  async pick(p: { temperature: number; topK: number; topP: number; minP: number; u: number }): Promise<number> {
    const d = this.ensureDecode();
    try {
      if (p.temperature <= 0) this.ctx.argmax(d.tok, d.logits);
      else {
        d.params.write(Float32Array.of(p.temperature, p.topP, p.minP, p.u));
        d.topK.write(Int32Array.of(p.topK));
        this.ctx.sample(d.tok, d.logits, d.params, d.topK);
      }
      await this.ctx.flushAsync();
      return (d.tok.read() as Int32Array)[0];
    } catch (e) {
      throw wrapNative(e);
    }
  }

  /** The captured decode step (built on first use). @internal for the bench's per-op profile. */
  decodePlan(): NativePlan {
    return this.ensureDecode().plan;
  }

  /** The current logits (of the last token fed) copied to the host. */
  readLogits(): Float32Array {
    return this.ensureDecode().logits.read() as Float32Array;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    if (this.decode) {
      this.decode.plan.dispose();
      this.decode.scratch.dispose();
      for (const t of [this.decode.logits, this.decode.tok, this.decode.params, this.decode.topK, this.decode.hLast]) t.dispose();
    }
    for (const t of [...this.kcache, ...this.vcache]) t.dispose();
  }
}

export function disposeWeights(w: Partial<ModelWeights>): void {
  w.finalNorm?.dispose();
  if (w.output) disposeLinear(w.output);
  // Also called on the partial weights of a load that failed half-way: any field may be missing.
  for (const L of (w.layers ?? []) as Partial<LayerWeights>[]) {
    L.attnNorm?.dispose();
    L.ffnNorm?.dispose();
    for (const b of [L.qBias, L.kBias, L.vBias, L.qkvBias]) b?.dispose();
    for (const l of [L.qkv, L.q, L.k, L.v, L.attnOut, L.gateUp, L.down]) if (l) disposeLinear(l);
  }
}

export function createContext(device: string, threads?: number): NativeContext {
  try {
    return new (native().Context)(device, threads);
  } catch (e) {
    throw wrapNative(e);
  }
}
