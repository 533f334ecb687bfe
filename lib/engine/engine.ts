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
import { Glm4Error, wrapNative } from "../errors.js";
import type { Glm4Config } from "../checkpoint/config.js";
import type { DType, NativeContext, NativePlan, NativeTensor } from "./native.js";
import { Scratch, recordLayers, recordLinear } from "./forward.js";
import type { Linear, ModelWeights } from "./weights.js";

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
