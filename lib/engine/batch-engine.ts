/**
 * Continuous batching for decode: B sequences ("slots") share one KV cache per layer, [maxBatch * S, Hkv, D],
 * slot b owning rows b*S .. b*S + S - 1 (row = slot * S + position). Sequences join (`admit` + `prefill`) and
 * leave (`release`) between steps; `step` runs ONE decode step for every given slot, so the weights are read once
 * for all of them (the INT4 and dense GEMVs take M = 1..8 rows in one weight pass).
 *
 *   const b = new BatchEngine(ctx, cfg, weights, { maxBatch: 8, maxContext: 4096, kvDtype: "bf16", prefillChunk: 512 });
 *   const s = b.admit();  await b.prefill(s, promptIds);
 *   for (;;) { const [t] = await b.pick([{ slot: s, params }]); ...; await b.step([{ slot: s, token: t }]); }
 *   b.release(s);
 *
 * A decode step for B slots is captured once per B (a Plan: on CUDA one graph launch) and replayed: the host
 * writes x [B, H] (embedding rows gathered on the host), the positions [B] (rotary angles), the cache rows [B]
 * (kv_write, attention) and the first rows of the slots [B] (attention's start). Steps of more than
 * kStepRows sequences run as several replays of at most kStepRows rows.
 *
 * Per-row results equal those of the single-sequence Engine bit for bit where the ops' per-row arithmetic does
 * not depend on the number of rows: always on the CPU backend; on CUDA for M <= 8 (see kStepRows) and with the
 * same prefill chunking (prefill here runs the same chunks through the same ops as Engine.prefill).
 */
import { Glm4Error, wrapNative } from "../errors.js";
import type { Glm4Config } from "../checkpoint/config.js";
import type { NativeContext, NativePlan, NativeTensor } from "./native.js";
import { Scratch, recordLayers, recordLinear } from "./forward.js";
import type { EngineOptions } from "./engine.js";
import type { ModelWeights } from "./weights.js";

/**
 * Rows of one replayed decode step. Up to 8 rows the CUDA INT4 GEMV (csrc/cuda/int4.cu) and the dense GEMV
 * (matmul.cu) read the weights once for all rows, and each row's arithmetic is the same for every M in 1..8 (a
 * lane owns the same 16-byte chunks in the same order, the chunk sums and the warp reduction do not involve other
 * rows). Past 8 rows matmul switches to the tensor-core GEMM, which rounds x to bf16: results would then differ
 * from a sequence decoded alone, and the GEMM is slower than the GEMV at these sizes (bench/NOTES.md).
 */
export const kStepRows = 8;

export interface BatchEngineOptions extends EngineOptions {
  /** Sequences that can be in the batch at once (slots). `maxContext` is each slot's capacity. */
  maxBatch: number;
}

/** Per-row sampling parameters: temperature <= 0 is greedy (argmax). u: a uniform in [0, 1). */
export interface PickParams {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  u: number;
}

interface SlotState {
  busy: boolean;
  /** Tokens in the slot's cache (the next token goes to this position). */
  length: number;
  ids: number[];
}

interface StepPlan {
  b: number;
  scratch: Scratch;
  rows: NativeTensor; // i32 [b] cache rows: slot * S + position
  start: NativeTensor; // i32 [b] first row of each slot: slot * S
  hLast: NativeTensor; // f32 [b, H]
  logits: NativeTensor; // f32 [b, V]
  plan: NativePlan;
}

/** Where a slot's current logits are: a row of some [*, V] tensor. */
interface LogitsAt {
  t: NativeTensor;
  row: number;
}

export class BatchEngine {
  readonly kcache: NativeTensor[] = [];
  readonly vcache: NativeTensor[] = [];
  private readonly slots: SlotState[];
  private readonly plans = new Map<number, StepPlan>();
  private readonly slotLogits: NativeTensor; // f32 [maxBatch, V]: logits of slot s at row s (after a prefill, or moved out of a step's buffer)
  private readonly pickBuf: NativeTensor; // f32 [maxBatch, V]: rows gathered for one pick
  private readonly hOne: NativeTensor; // f32 [1, H]: the last hidden state of a prefill chunk, normed
  private readonly tokArg: NativeTensor; // i32 [maxBatch]
  private readonly tokSample: NativeTensor; // i32 [maxBatch]
  private readonly params: NativeTensor; // f32 [maxBatch, 4]
  private readonly topK: NativeTensor; // i32 [maxBatch]
  private readonly where: (LogitsAt | null)[];
  private disposed = false;

  constructor(
    readonly ctx: NativeContext,
    readonly cfg: Glm4Config,
    readonly w: ModelWeights,
    readonly opts: BatchEngineOptions,
  ) {
    const { maxBatch, maxContext } = opts;
    if (!Number.isInteger(maxBatch) || maxBatch < 1 || maxBatch > 1024) throw new RangeError(`maxBatch must be an integer in [1, 1024], got ${String(maxBatch)}`);
    if (!Number.isInteger(maxContext) || maxContext < 1) throw new RangeError(`maxContext must be a positive integer, got ${String(maxContext)}`);
    if (maxBatch * maxContext >= 2 ** 31) throw new RangeError(`maxBatch * maxContext = ${maxBatch * maxContext} cache rows do not fit int32 row indices`);
    const { numKvHeads: Hkv, headDim: D, vocabSize: V, hiddenSize: H } = cfg;
    for (let i = 0; i < cfg.numLayers; i++) {
      this.kcache.push(ctx.empty(opts.kvDtype, [maxBatch * maxContext, Hkv, D]));
      this.vcache.push(ctx.empty(opts.kvDtype, [maxBatch * maxContext, Hkv, D]));
    }
    this.slots = Array.from({ length: maxBatch }, () => ({ busy: false, length: 0, ids: [] }));
    this.where = Array.from({ length: maxBatch }, () => null);
    this.slotLogits = ctx.empty("f32", [maxBatch, V]);
    this.pickBuf = ctx.empty("f32", [maxBatch, V]);
    this.hOne = ctx.empty("f32", [1, H]);
    this.tokArg = ctx.empty("i32", [maxBatch]);
    this.tokSample = ctx.empty("i32", [maxBatch]);
    this.params = ctx.empty("f32", [maxBatch, 4]);
    this.topK = ctx.empty("i32", [maxBatch]);
  }

  get maxBatch(): number {
    return this.slots.length;
  }

  /** Slots in use. */
  get active(): number {
    return this.slots.filter((s) => s.busy).length;
  }

  private live(): void {
    if (this.disposed) throw new Glm4Error("ERR_GLM4_DISPOSED", "the batch engine (or its model) was disposed");
  }

  private slot(i: number, busy = true): SlotState {
    this.live();
    const s = this.slots[i];
    if (!Number.isInteger(i) || !s) throw new RangeError(`slot ${String(i)} is not in [0, ${this.slots.length})`);
    if (busy && !s.busy) throw new RangeError(`slot ${i} is not admitted`);
    return s;
  }

  /**
   * Takes a free slot and returns it (its cache keeps what the previous sequence left, for `reusePrefix`). With a
   * prompt, the free slot whose cache shares the longest prefix with it is chosen. Throws when none is free.
   */
  admit(prompt: readonly number[] = []): number {
    this.live();
    let best = -1, bestLen = -1;
    this.slots.forEach((s, i) => {
      if (s.busy) return;
      const have = s.ids.length === s.length ? s.ids : [];
      let n = 0;
      while (n < have.length && n < prompt.length && have[n] === prompt[n]) n++;
      if (n > bestLen) (best = i), (bestLen = n);
    });
    if (best < 0) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `all ${this.slots.length} slots of the batch are in use; release one first`);
    this.slots[best].busy = true;
    return best;
  }

  /** Frees a slot (its cache contents stay for a later prefix reuse). */
  release(slot: number): void {
    const s = this.slot(slot);
    s.busy = false;
    this.where[slot] = null;
  }

  /** Free slots, and for each the tokens its cache holds (for choosing by prefix). */
  cachedTokens(slot: number): readonly number[] {
    const s = this.slot(slot, false);
    return s.ids.length === s.length ? s.ids : [];
  }

  length(slot: number): number {
    return this.slot(slot, false).length;
  }

  reset(slot: number): void {
    const s = this.slot(slot);
    s.length = 0;
    s.ids = [];
    this.where[slot] = null;
  }

  truncate(slot: number, n: number): void {
    const s = this.slot(slot);
    if (!Number.isInteger(n) || n < 0 || n > s.length) throw new RangeError(`truncate(${n}): slot ${slot} holds ${s.length} tokens`);
    s.length = n;
    s.ids.length = Math.min(s.ids.length, n);
  }

  /** Like Engine.reusePrefix for one slot: keeps at most prompt.length - 1 tokens of a shared prefix. */
  reusePrefix(slot: number, prompt: readonly number[]): number {
    const have = this.cachedTokens(slot);
    const limit = Math.min(have.length, prompt.length - 1);
    let n = 0;
    while (n < limit && have[n] === prompt[n]) n++;
    if (n === 0) this.reset(slot);
    else this.truncate(slot, n);
    return n;
  }

  private checkIds(ids: readonly number[]): void {
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.cfg.vocabSize) throw new RangeError(`token id ${id} is outside the vocabulary [0, ${this.cfg.vocabSize})`);
    }
  }

  private checkRoom(slot: number, n: number): void {
    const len = this.slots[slot].length;
    if (len + n > this.opts.maxContext) {
      throw new Glm4Error(
        "ERR_GLM4_CONTEXT_FULL",
        `slot ${slot} would reach ${len + n} tokens but each slot's KV cache holds ${this.opts.maxContext}; use a larger maxContext or shorten the prompt`,
      );
    }
  }

  /**
   * Feeds `ids` to one slot at its current position, in the chunks Engine.prefill uses (a 1-token chunk goes
   * through the captured step). The logits of the last token become the slot's current logits.
   */
  async prefill(slot: number, ids: readonly number[]): Promise<void> {
    const st = this.slot(slot);
    if (ids.length === 0) throw new RangeError("prefill needs at least one token");
    this.checkIds(ids);
    this.checkRoom(slot, ids.length);
    const { ctx, cfg } = this;
    const S = this.opts.maxContext;
    try {
      for (let first = 0; first < ids.length; first += this.opts.prefillChunk) {
        const chunk = ids.slice(first, first + this.opts.prefillChunk);
        if (chunk.length === 1) {
          await this.step([{ slot, token: chunk[0] }]);
          continue;
        }
        const T = chunk.length;
        const s = new Scratch(ctx, cfg, T);
        const rows = ctx.empty("i32", [T]);
        const start = ctx.empty("i32", [T]);
        try {
          s.x.write(this.w.embed.gather(chunk));
          s.pos.write(Int32Array.from(chunk, (_, j) => st.length + j));
          rows.write(Int32Array.from(chunk, (_, j) => slot * S + st.length + j));
          start.write(new Int32Array(T).fill(slot * S));
          recordLayers(ctx, cfg, this.w, s, this.kcache, this.vcache, rows, start);
          const last = s.x.slice0(T - 1, T);
          const dst = this.slotLogits.slice0(slot, slot + 1);
          ctx.rmsnorm(this.hOne, last, this.w.finalNorm, cfg.rmsEps);
          recordLinear(ctx, dst, this.hOne, this.w.output);
          last.dispose();
          dst.dispose();
          await ctx.flushAsync();
        } finally {
          s.dispose();
          rows.dispose();
          start.dispose();
        }
        st.length += T;
        st.ids.push(...chunk);
        this.where[slot] = { t: this.slotLogits, row: slot };
      }
    } catch (e) {
      throw wrapNative(e);
    }
  }

  private ensurePlan(b: number): StepPlan {
    const have = this.plans.get(b);
    if (have) return have;
    const { ctx, cfg } = this;
    const scratch = new Scratch(ctx, cfg, b);
    const rows = ctx.empty("i32", [b]);
    const start = ctx.empty("i32", [b]);
    const hLast = ctx.empty("f32", [b, cfg.hiddenSize]);
    const logits = ctx.empty("f32", [b, cfg.vocabSize]);
    ctx.flush();
    ctx.beginCapture();
    let plan: NativePlan;
    try {
      recordLayers(ctx, cfg, this.w, scratch, this.kcache, this.vcache, rows, start, { out: hLast, norm: this.w.finalNorm });
      recordLinear(ctx, logits, hLast, this.w.output);
    } finally {
      plan = ctx.endCapture();
    }
    const p: StepPlan = { b, scratch, rows, start, hLast, logits, plan };
    this.plans.set(b, p);
    return p;
  }

  /** Records a copy of row `from.row` of `from.t` into row `to` of `dst`. */
  private copyRow(dst: NativeTensor, to: number, from: LogitsAt): void {
    const d = dst.slice0(to, to + 1), s = from.t.slice0(from.row, from.row + 1);
    this.ctx.copy(d, s);
    d.dispose();
    s.dispose();
  }

  /**
   * One decode step for every entry (distinct admitted slots): entry i's token goes to its slot's next position.
   * Recorded, not run: the next pick() (or readLogits, or a flush) runs it. At most kStepRows rows a replay.
   */
  async step(entries: readonly { slot: number; token: number }[]): Promise<void> {
    this.live();
    if (entries.length === 0) return;
    const seen = new Set<number>();
    for (const e of entries) {
      this.slot(e.slot);
      if (seen.has(e.slot)) throw new RangeError(`slot ${e.slot} appears twice in one step`);
      seen.add(e.slot);
      this.checkRoom(e.slot, 1);
    }
    this.checkIds(entries.map((e) => e.token));
    const S = this.opts.maxContext;
    try {
      for (let g = 0; g < entries.length; g += kStepRows) {
        const group = entries.slice(g, g + kStepRows);
        const p = this.ensurePlan(group.length);
        // Slots whose logits still sit in this plan's buffer and are not stepped now: move them out first.
        const inGroup = new Set(group.map((e) => e.slot));
        this.where.forEach((w, s) => {
          if (w && w.t === p.logits && !inGroup.has(s)) {
            this.copyRow(this.slotLogits, s, w);
            this.where[s] = { t: this.slotLogits, row: s };
          }
        });
        p.scratch.x.write(this.w.embed.gather(group.map((e) => e.token)));
        p.scratch.pos.write(Int32Array.from(group, (e) => this.slots[e.slot].length));
        p.rows.write(Int32Array.from(group, (e) => e.slot * S + this.slots[e.slot].length));
        p.start.write(Int32Array.from(group, (e) => e.slot * S));
        this.ctx.replay(p.plan);
        group.forEach((e, i) => {
          const st = this.slots[e.slot];
          st.length += 1;
          st.ids.push(e.token);
          this.where[e.slot] = { t: p.logits, row: i };
        });
      }
    } catch (e) {
      throw wrapNative(e);
    }
  }

  /** The [n, V] logits of `slots` in that order: a prefix of one buffer when they already are, else gathered. */
  private logitsOf(slots: readonly number[]): NativeTensor {
    const at = slots.map((s) => {
      const w = this.where[s];
      if (!w) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `slot ${s} has no logits yet: prefill or step it first`);
      return w;
    });
    if (at.every((w, i) => w.t === at[0].t && w.row === i)) return at[0].t.slice0(0, slots.length);
    at.forEach((w, i) => this.copyRow(this.pickBuf, i, w));
    return this.pickBuf.slice0(0, slots.length);
  }

  /**
   * Picks the next token of each row from its slot's current logits, on the device, in one flush: argmax for
   * rows with temperature <= 0 (the argmax op, as Engine.pick), the sample op for the others.
   */
  async pick(rows: readonly { slot: number; params: PickParams }[]): Promise<number[]> {
    this.live();
    const n = rows.length;
    if (n === 0) return [];
    const slots = rows.map((r) => (this.slot(r.slot), r.slot));
    if (new Set(slots).size !== n) throw new RangeError("a slot appears twice in one pick");
    const greedy = rows.map((r) => !(r.params.temperature > 0));
    const views: NativeTensor[] = [];
    try {
      const L = this.logitsOf(slots);
      views.push(L);
      let arg: NativeTensor | null = null, smp: NativeTensor | null = null;
      if (greedy.some(Boolean)) {
        arg = this.tokArg.slice0(0, n);
        views.push(arg);
        this.ctx.argmax(arg, L);
      }
      if (!greedy.every(Boolean)) {
        smp = this.tokSample.slice0(0, n);
        const pr = this.params.slice0(0, n), tk = this.topK.slice0(0, n);
        views.push(smp, pr, tk);
        const pv = new Float32Array(4 * n), kv = new Int32Array(n);
        rows.forEach((r, i) => {
          const p = r.params;
          pv.set(greedy[i] ? [0, 1, 0, 0] : [p.temperature, p.topP, p.minP, p.u], 4 * i);
          kv[i] = greedy[i] ? 0 : p.topK;
        });
        pr.write(pv);
        tk.write(kv);
        this.ctx.sample(smp, L, pr, tk);
      }
      await this.ctx.flushAsync();
      const a = arg ? (arg.read() as Int32Array) : null, b = smp ? (smp.read() as Int32Array) : null;
      return rows.map((_, i) => (greedy[i] ? a![i] : b![i]));
    } catch (e) {
      throw wrapNative(e);
    } finally {
      for (const v of views) v.dispose();
    }
  }

  /** A slot's current logits copied to the host (runs pending work). */
  readLogits(slot: number): Float32Array {
    this.slot(slot);
    const w = this.where[slot];
    if (!w) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `slot ${slot} has no logits yet: prefill or step it first`);
    const v = w.t.slice0(w.row, w.row + 1);
    try {
      return v.read() as Float32Array;
    } finally {
      v.dispose();
    }
  }

  /** The captured step for b rows (built on first use). @internal for the bench's profile. */
  stepPlan(b: number): NativePlan {
    return this.ensurePlan(b).plan;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const p of this.plans.values()) {
      p.plan.dispose();
      p.scratch.dispose();
      for (const t of [p.rows, p.start, p.hLast, p.logits]) t.dispose();
    }
    this.plans.clear();
    for (const t of [this.slotLogits, this.pickBuf, this.hOne, this.tokArg, this.tokSample, this.params, this.topK]) t.dispose();
    for (const t of [...this.kcache, ...this.vcache]) t.dispose();
  }
}

/**
 * One slot of a BatchEngine seen as a single-sequence engine (the surface Generation drives): `step` and `pick`
 * run a batch of one. The scheduler drives the batch directly (one step and one pick for all its slots) and uses
 * this view for prefill, host-side sampling and the length checks.
 */
export class SlotEngine {
  constructor(
    readonly batch: BatchEngine,
    readonly slot: number,
  ) {}
  get opts(): { maxContext: number } {
    return this.batch.opts;
  }
  get length(): number {
    return this.batch.length(this.slot);
  }
  get tokens(): readonly number[] {
    return this.batch.cachedTokens(this.slot);
  }
  reset(): void {
    this.batch.reset(this.slot);
  }
  reusePrefix(prompt: readonly number[]): number {
    return this.batch.reusePrefix(this.slot, prompt);
  }
  async prefill(ids: readonly number[]): Promise<void> {
    await this.batch.prefill(this.slot, ids);
  }
  async step(id: number): Promise<void> {
    await this.batch.step([{ slot: this.slot, token: id }]);
  }
  async pick(p: PickParams): Promise<number> {
    return (await this.batch.pick([{ slot: this.slot, params: p }]))[0];
  }
  readLogits(): Float32Array {
    return this.batch.readLogits(this.slot);
  }
}
