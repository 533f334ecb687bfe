/**
 * (Over 500 lines by design: issue 11 asks for prefill, capture, pick, prefix reuse and the room checks to exist
 * once, here; the forward pass itself is forward.ts, the cache kv-cache.ts and block-pool.ts.)
 * The engine: the forward pass over sequences held in the slots of one KV cache. A single sequence is a batch of
 * one slot (the model's own engine and each session's have one slot; the server's scheduler has one slot per
 * concurrent request), so prefill, the captured decode step, the pick, prefix reuse and the room checks exist
 * once. Sequences join (`admit` + `prefill`) and leave (`release`) between steps; `step` runs ONE decode step for
 * every given slot, so the weights are read once for all of them (the INT4 and dense GEMVs take M = 1..8 rows in
 * one weight pass).
 *
 *   const e = new Engine(ctx, cfg, weights, { maxBatch: 8, maxContext: 4096, kvDtype: "bf16", prefillChunk: 512 });
 *   const s = e.admit(promptIds);  await e.prefill(s, promptIds);
 *   for (;;) { const [t] = await e.pick([{ slot: s, params }]); ...; await e.step([{ slot: s, token: t }]); }
 *   e.release(s);
 * or, for one sequence, a Sequence view of its slot (lib/engine/sequence.ts): `new Sequence(e, s)`.
 *
 * The KV cache is paged (lib/engine/kv-cache.ts): a slot holds blocks for the tokens it has, full blocks of a prompt
 * head are shared between slots (reusePrefix), and a prefill or step that needs blocks the pool lacks throws
 * ERR_GLM4_KV_CACHE_FULL before anything is recorded (the scheduler preempts then).
 *
 * A decode step of B slots runs as a step captured once per bucket of rows (STEP_BUCKETS: 1, 2, 4, ..., 128; a
 * Plan: on CUDA one graph launch; bucket 1 records the fused one-token QKV launch) and replayed: the host writes
 * x [bucket, H] (embedding rows gathered on the host: the table stays in host memory), the positions, the cache
 * rows and each row's block-table row; rows past B are a dummy sequence (token 0 at position 0 in the pad block,
 * its output ignored). `step` only records the replay: the next pick() runs the step and the token choice in one
 * flush (one trip through the worker thread a token). Steps of more than 128 sequences run as several replays.
 *
 * Per-row results of a batch equal those of the same sequence alone bit for bit where the ops' per-row
 * arithmetic does not depend on the number of rows: always on the CPU backend; on CUDA for buckets up to 8 (the
 * GEMVs, see kGemvRows) and with the same prefill chunking. Past 8 rows the INT4 linears run the tensor-core GEMM
 * (x rounded to bf16): logits then agree with the solo decode within the engine's tolerance, not bit for bit.
 * Not safe for concurrent use: callers serialize (the runtime's queue does).
 */
import { Glm4Error, wrapNative } from "../errors.js";
import type { Glm4Config } from "../checkpoint/config.js";
import type { DType, NativeContext, NativePlan, NativeTensor } from "./native.js";
import { Scratch, fusedDecode, layerPath, recordLayers, recordLinear, recordLogits, writeEmbeddings } from "./forward.js";
import { KvCache, type KvAddress } from "./kv-cache.js";
import { cudaIndex } from "./device.js";
export { KV_BLOCK } from "./kv-cache.js";
import { isTiled, type ModelWeights } from "./weights.js";

/**
 * Rows up to which a step runs the GEMVs. Up to 8 rows the CUDA INT4 GEMV (csrc/cuda/int4.cu) and the dense GEMV
 * (matmul.cu) read the weights once for all rows, and each row's arithmetic is the same for every M in 1..8 (a
 * lane owns the same 16-byte chunks in the same order, the chunk sums and the warp reduction do not involve other
 * rows): batched rows equal solo rows bit for bit. Past 8 rows matmul runs the tensor-core GEMM, which rounds x
 * to bf16 (csrc/cuda/gemm_int4.cu): the weights are still read once a step, for up to 128 rows.
 */
export const kGemvRows = 8;

/**
 * Row counts a decode step is captured for; a step of B rows replays the smallest bucket >= B (padded rows), the
 * last bucket being the most rows a replay. GLM4_STEP_BUCKETS="1,2,4,16,32,64,128" (ascending integers in 1..128)
 * replaces the list: a measurement aid (e.g. B = 5..8 on the GEMM of bucket 16 instead of the M = 8 GEMV).
 */
export const STEP_BUCKETS: readonly number[] = stepBucketsFrom(process.env.GLM4_STEP_BUCKETS);

function stepBucketsFrom(env: string | undefined): readonly number[] {
  if (env === undefined || env.trim() === "") return [1, 2, 4, 8, 16, 32, 64, 128];
  const list = env.split(",").map((x) => Number(x.trim()));
  if (!list.every((x, i) => Number.isInteger(x) && x >= 1 && x <= 128 && (i === 0 || x > list[i - 1]))) {
    throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `GLM4_STEP_BUCKETS must be ascending integers in 1..128, got ${JSON.stringify(env)}`);
  }
  return list;
}

/** The captured step a batch of b rows replays. */
export function stepBucket(b: number): number {
  return STEP_BUCKETS.find((x) => x >= b) ?? STEP_BUCKETS[STEP_BUCKETS.length - 1];
}

export interface EngineOptions {
  /** Tokens each slot's KV cache holds. */
  maxContext: number;
  /** KV-cache dtype: bf16 on the GPU (half the memory), f32 on the CPU reference. */
  kvDtype: DType;
  /** Tokens per prefill chunk (bounds the scratch memory of long prompts). */
  prefillChunk: number;
  /** Sequences that can be in the batch at once (slots; default 1). */
  maxBatch?: number;
  /** Blocks of the paged KV cache, the pad block included (default: every slot can reach maxContext). */
  kvBlocks?: number;
}

/**
 * Per-row sampling parameters: temperature <= 0 is greedy (argmax). u: a uniform in [0, 1). repetitionPenalty (1 =
 * off) applies to penaltyIds on the device, before the rest (HF's: a listed token's logit is divided by it when
 * positive, multiplied by it otherwise).
 */
export interface PickParams {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  u: number;
  repetitionPenalty?: number;
  penaltyIds?: ArrayLike<number>;
}

interface SlotState {
  busy: boolean;
  /** Tokens in the slot's cache (the next token goes to this position). */
  length: number;
  /** The ids in the cache, position by position (kept in step with `length` by prefill, step, truncate, reset). */
  ids: number[];
}

interface StepPlan {
  b: number;
  scratch: Scratch;
  addr: KvAddress;
  hLast: NativeTensor; // f32 | bf16 (the output layer's GEMM input past 8 rows) [b, H]
  logits: NativeTensor; // f32 [b, V]
  /** b > kGemvRows with a bf16/f16 table: the step's embedding rows in the table's dtype, widened into scratch.x by a
   * convert recorded before the replay (a memcpy a row instead of a JS loop over b x H values). */
  xin: NativeTensor | null;
  plan: NativePlan;
  /** run()'s buffers for this bucket (made on first use). */
  rounds?: RoundBufs;
}

/** Most rounds one run() takes (GLM4_RUN_ROUNDS is at most this). */
export const kRoundsMax = 64;

/**
 * A step plan's buffers for run(): ids, positions and cache rows of up to kRoundsMax rounds ([kRoundsMax, b], i32;
 * ids start at 0), sampling parameters ([kRoundsMax, b, 5] f32) and top-k ([b]), with their row views made once;
 * prefix views (the first n rows) kept by name and n.
 */
interface RoundBufs {
  ids: NativeTensor;
  pos: NativeTensor;
  rows: NativeTensor;
  params: NativeTensor;
  topK: NativeTensor;
  idsRow: NativeTensor[];
  posRow: NativeTensor[];
  rowsRow: NativeTensor[];
  paramsRow: NativeTensor[];
  prefixes: Map<string, NativeTensor>;
  all: NativeTensor[];
}

function roundBufs(ctx: NativeContext, p: StepPlan): RoundBufs {
  if (p.rounds) return p.rounds;
  const b = p.b;
  const all: NativeTensor[] = [];
  const keep = (t: NativeTensor) => (all.push(t), t);
  const rowsOf = (t: NativeTensor, shape: number[]) =>
    Array.from({ length: kRoundsMax }, (_, j) => {
      const v = t.slice0(j, j + 1);
      try {
        return keep(v.reshape(shape));
      } finally {
        v.dispose();
      }
    });
  try {
    const ids = keep(ctx.fromBuffer("i32", [kRoundsMax, b], new Int32Array(kRoundsMax * b)));
    const pos = keep(ctx.empty("i32", [kRoundsMax, b]));
    const rows = keep(ctx.empty("i32", [kRoundsMax, b]));
    const params = keep(ctx.empty("f32", [kRoundsMax, b, 5]));
    const topK = keep(ctx.empty("i32", [b]));
    p.rounds = { ids, pos, rows, params, topK, idsRow: rowsOf(ids, [b]), posRow: rowsOf(pos, [b]), rowsRow: rowsOf(rows, [b]), paramsRow: rowsOf(params, [b, 5]), prefixes: new Map(), all };
    return p.rounds;
  } catch (e) {
    for (const t of all) t.dispose();
    throw e;
  }
}

/** Rows [0, n) of t (t itself when that is all of it), made once per (name, n) and kept with the round buffers. */
function cachedPrefix(R: RoundBufs, name: string, t: NativeTensor, n: number): NativeTensor {
  if (t.shape[0] === n) return t;
  const key = `${name}:${n}`;
  let v = R.prefixes.get(key);
  if (!v) {
    v = t.slice0(0, n);
    R.prefixes.set(key, v);
    R.all.push(v);
  }
  return v;
}

/** Where a slot's current logits are: a row of some [*, V] tensor. */
interface LogitsAt {
  t: NativeTensor;
  row: number;
}

/** Rows [0, n) of t: t itself when that is all of it (no view to make and free), else a view the caller frees. */
function prefix(t: NativeTensor, n: number, views: NativeTensor[]): NativeTensor {
  if (t.shape[0] === n) return t;
  const v = t.slice0(0, n);
  views.push(v);
  return v;
}

export class Engine {
  readonly kv: KvCache;
  private readonly slots: SlotState[];
  private readonly plans = new Map<number, StepPlan>();
  private readonly slotLogits: NativeTensor; // f32 [maxBatch, V]: logits of slot s at row s (after a prefill, or moved out of a step's buffer)
  private pickBuf: NativeTensor | null = null; // f32 [maxBatch, V]: rows gathered for one pick (made when first needed)
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
    readonly opts: EngineOptions,
  ) {
    const maxBatch = opts.maxBatch ?? 1;
    if (!Number.isInteger(opts.prefillChunk) || opts.prefillChunk < 1) throw new RangeError(`prefillChunk must be a positive integer, got ${String(opts.prefillChunk)}`);
    this.kv = new KvCache(ctx, cfg, maxBatch, opts.maxContext, opts.kvDtype, opts.kvBlocks);
    const { vocabSize: V, hiddenSize: H } = cfg;
    this.slots = Array.from({ length: maxBatch }, () => ({ busy: false, length: 0, ids: [] }));
    this.where = Array.from({ length: maxBatch }, () => null);
    this.slotLogits = ctx.empty("f32", [maxBatch, V]);
    this.hOne = ctx.empty("f32", [1, H]);
    this.tokArg = ctx.empty("i32", [maxBatch]);
    this.tokSample = ctx.empty("i32", [maxBatch]);
    this.params = ctx.empty("f32", [maxBatch, 5]);
    this.topK = ctx.empty("i32", [maxBatch]);
  }

  get maxBatch(): number {
    return this.slots.length;
  }

  /** Tokens each slot holds at most. */
  get maxContext(): number {
    return this.kv.capacity;
  }

  /** Slots in use. */
  get active(): number {
    return this.slots.filter((s) => s.busy).length;
  }

  private live(): void {
    if (this.disposed) throw new Glm4Error("ERR_GLM4_DISPOSED", "the engine (or its model) was disposed");
  }

  private slot(i: number, busy = true): SlotState {
    this.live();
    const s = this.slots[i];
    if (!Number.isInteger(i) || !s) throw new RangeError(`slot ${String(i)} is not in [0, ${this.slots.length})`);
    if (busy && !s.busy) throw new RangeError(`slot ${i} is not admitted`);
    return s;
  }

  /**
   * Takes a free slot (its cache empty) and returns it. A prompt head that other sequences computed comes back
   * through reusePrefix. Throws when none is free.
   */
  admit(): number {
    this.live();
    const i = this.slots.findIndex((s) => !s.busy);
    if (i < 0) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `all ${this.slots.length} slots of the batch are in use; release one first`);
    this.slots[i].busy = true;
    return i;
  }

  /** Frees a slot and its KV blocks at once (full prompt blocks stay cached for a later prefix match). */
  release(slot: number): void {
    const s = this.slot(slot);
    this.reset(slot);
    s.busy = false;
  }

  /** Blocks of the KV-cache pool: all, held by sequences, cached prompt heads, allocatable. */
  kvStats(): ReturnType<KvCache["stats"]> {
    return this.kv.stats();
  }

  /** New KV blocks that `n` more tokens of `slot` need (0 when its blocks have room). */
  blocksFor(slot: number, n: number): number {
    const len = this.slot(slot).length;
    return this.kv.need(slot, len, len + n);
  }

  /** The tokens a slot's cache holds (empty when `length` no longer matches them). */
  cachedTokens(slot: number): readonly number[] {
    const s = this.slot(slot, false);
    return s.ids.length === s.length ? s.ids : [];
  }

  /** Tokens in a slot's cache (the next token goes to this position). */
  length(slot: number): number {
    return this.slot(slot, false).length;
  }

  /** Empties a slot's cache (its blocks go back to the pool). */
  reset(slot: number): void {
    const s = this.slot(slot);
    s.length = 0;
    s.ids = [];
    this.where[slot] = null;
    this.kv.free(slot);
  }

  /**
   * Keeps the first n tokens of a slot's cache and drops the rest (whole blocks past them go back to the pool; a
   * shared block that the next write lands in is copied first).
   */
  truncate(slot: number, n: number): void {
    const s = this.slot(slot);
    if (!Number.isInteger(n) || n < 0 || n > s.length) throw new RangeError(`truncate(${n}): slot ${slot} holds ${s.length} tokens`);
    s.length = n;
    s.ids.length = Math.min(s.ids.length, n);
    this.kv.truncate(slot, n);
  }

  /**
   * Keeps the longest prefix of the slot's cache that `prompt` starts with, then takes the full blocks of the
   * prompt's head that other sequences computed (shared by reference), at most prompt.length - 1 tokens in all (the
   * last token of the prompt is always fed again: its logits are what the next pick reads). Returns how many tokens
   * the cache holds now; the caller prefills prompt.slice(kept).
   */
  reusePrefix(slot: number, prompt: readonly number[]): number {
    const have = this.cachedTokens(slot);
    const limit = Math.min(have.length, prompt.length - 1);
    let n = 0;
    while (n < limit && have[n] === prompt[n]) n++;
    if (n === 0) this.reset(slot);
    else this.truncate(slot, n);
    const st = this.slots[slot];
    const m = this.kv.attachPrefix(slot, prompt, n);
    if (m > n) {
      st.length = m;
      st.ids = prompt.slice(0, m);
      this.where[slot] = null;
    }
    return m;
  }

  private checkIds(ids: readonly number[]): void {
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.cfg.vocabSize) throw new RangeError(`token id ${id} is outside the vocabulary [0, ${this.cfg.vocabSize})`);
    }
  }

  private checkRoom(slot: number, n: number): void {
    const len = this.slots[slot].length;
    if (len + n > this.kv.capacity) {
      const which = this.slots.length > 1 ? ` (slot ${slot})` : "";
      throw new Glm4Error(
        "ERR_GLM4_CONTEXT_FULL",
        `the sequence${which} would reach ${len + n} tokens but its KV cache holds ${this.kv.capacity}; load the model with a larger maxContext or shorten the prompt`,
      );
    }
  }

  /**
   * Feeds `ids` to one slot at its current position, in chunks of `prefillChunk` tokens (a 1-token chunk goes
   * through the captured step). The logits of the last token become the slot's current logits. With allLogits,
   * returns a new f32 [ids.length, V] tensor of every token's logits (the caller disposes it; no chunk goes
   * through the step then); else null.
   */
  async prefill(slot: number, ids: readonly number[], opts: { allLogits?: boolean } = {}): Promise<NativeTensor | null> {
    const st = this.slot(slot);
    if (ids.length === 0) throw new RangeError("prefill needs at least one token");
    this.checkIds(ids);
    this.checkRoom(slot, ids.length);
    // Every block the prompt needs, before anything is recorded: a full pool refuses here, unchanged.
    this.kv.reserve([{ slot, len: st.length, to: st.length + ids.length }]);
    const { ctx, cfg, w } = this;
    const chunkLen = this.opts.prefillChunk;
    let all: NativeTensor | null = null;
    try {
      // The one-row step is captured here, not at the first decode step: a generation's decode time then
      // measures decoding only.
      await this.ensurePlan(stepBucket(1));
      all = opts.allLogits ? ctx.empty("f32", [ids.length, cfg.vocabSize]) : null;
      for (let first = 0; first < ids.length; first += chunkLen) {
        const chunk = ids.slice(first, first + chunkLen);
        if (chunk.length === 1 && !all) {
          await this.step([{ slot, token: chunk[0] }]);
          continue;
        }
        const T = chunk.length;
        const s = new Scratch(ctx, cfg, T, layerPath(w, T, cudaIndex(ctx.device)));
        let addr: KvAddress | null = null;
        const staged: NativeTensor[] = [];
        try {
          addr = this.kv.newAddress(ctx, T, slot);
          this.kv.sync();
          await writeEmbeddings(ctx, w, s.x, chunk, staged);
          s.pos.write(Int32Array.from(chunk, (_, j) => st.length + j));
          this.kv.writeAddress(addr, chunk.map((_, j) => ({ slot, pos: st.length + j })));
          // The device starts on layer 0 while the other layers are recorded (~10 us of host time an op).
          // (A flush launches its ops and then waits for the device, so the device idles from the end of layer 0
          // until the rest is recorded: flushing after more layers is the next step, bench/NOTES.md, not measured.)
          let early: Promise<void> | null = null;
          recordLayers(ctx, cfg, w, s, this.kv, addr, undefined, (i) => {
            if (i === 0 && cfg.numLayers > 1) {
              early = ctx.flushAsync();
              early.catch(() => undefined); // awaited below; this only keeps an early failure from counting as unhandled
            }
          });
          if (all) {
            const dst = all.slice0(first, first + T);
            // s.h is bf16 on the GEMM path: the output layer reads it as is when it is a layout-1 INT4 too.
            const hn = s.h.dtype === "f32" || isTiled(w.output) ? s.h : ctx.empty("f32", s.h.shape);
            if (hn !== s.h) staged.push(hn);
            ctx.rmsnorm(hn, s.x, w.finalNorm, cfg.rmsEps);
            recordLinear(ctx, dst, hn, w.output);
            dst.dispose();
          }
          // Logits of the chunk's last token into the slot's row of slotLogits.
          const last = s.x.slice0(T - 1, T);
          const dst = this.slotLogits.slice0(slot, slot + 1);
          ctx.rmsnorm(this.hOne, last, w.finalNorm, cfg.rmsEps);
          recordLinear(ctx, dst, this.hOne, w.output);
          last.dispose();
          dst.dispose();
          await Promise.all([early, ctx.flushAsync()]);
        } finally {
          s.dispose();
          addr?.dispose();
          for (const t of staged) t.dispose();
        }
        st.length += T;
        st.ids.push(...chunk);
        this.kv.filled(slot, st.ids, st.length);
        this.where[slot] = { t: this.slotLogits, row: slot };
      }
    } catch (e) {
      all?.dispose();
      throw wrapNative(e);
    }
    return all;
  }

  private async ensurePlan(b: number): Promise<StepPlan> {
    const have = this.plans.get(b);
    if (have) return have;
    const { ctx, cfg } = this;
    const scratch = new Scratch(ctx, cfg, b, layerPath(this.w, b, cudaIndex(ctx.device)));
    const addr = this.kv.newAddress(ctx, b);
    // Past the GEMV rows, the final norm writes the bf16 the output GEMM reads (layout-1 INT4 output layer).
    const hLast = ctx.empty(scratch.path.bf16 && isTiled(this.w.output) ? "bf16" : "f32", [b, cfg.hiddenSize]);
    const logits = ctx.empty("f32", [b, cfg.vocabSize]);
    await ctx.flushAsync(); // what was recorded before runs now, not inside the capture
    ctx.beginCapture();
    try {
      // The last residual add is fused with the final norm into hLast.
      if (fusedDecode(this.w, b)) {
        // INT4 linears in the CUDA kernel layout: norms, residual adds and SwiGLU ride in the GEMVs (forward.ts)
        recordLayers(ctx, cfg, this.w, scratch, this.kv, addr);
        recordLogits(ctx, cfg, this.w, logits, scratch.x, hLast);
      } else {
        recordLayers(ctx, cfg, this.w, scratch, this.kv, addr, { out: hLast, norm: this.w.finalNorm });
        recordLinear(ctx, logits, hLast, this.w.output);
      }
    } catch (e) {
      ctx.endCapture().dispose();
      scratch.dispose();
      addr.dispose();
      for (const t of [hLast, logits]) t.dispose();
      throw e;
    }
    // On CUDA the step's graph (~360 nodes a token) is recorded and instantiated here, off the JS thread.
    const plan: NativePlan = await ctx.endCaptureAsync();
    const e = this.w.embed;
    const xin = b > kGemvRows && e.dtype !== "F32" && process.env.GLM4_EMBED_GATHER !== "js" ? ctx.empty(e.dtype === "BF16" ? "bf16" : "f16", [b, cfg.hiddenSize]) : null;
    const p: StepPlan = { b, scratch, addr, hLast, logits, xin, plan };
    this.plans.set(b, p);
    return p;
  }

  /** Slots whose logits still sit in `buf` (a step plan's) and are not among `stepped`: moved to slotLogits first. */
  private moveLogitsOut(buf: NativeTensor, stepped: readonly number[]): void {
    if (this.slots.length === 1) return;
    const keep = new Set(stepped);
    this.where.forEach((w, s) => {
      if (w && w.t === buf && !keep.has(s)) {
        this.copyRow(this.slotLogits, s, w);
        this.where[s] = { t: this.slotLogits, row: s };
      }
    });
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
   * Recorded, not run: the next pick() (or readLogits, or a flush) runs it. One replay of the smallest bucket that
   * holds the entries (at most 128 rows a replay). The blocks of all entries are reserved first: a full pool throws
   * ERR_GLM4_KV_CACHE_FULL with nothing changed.
   */
  async step(entries: readonly { slot: number; token: number }[]): Promise<void> {
    this.live();
    if (entries.length === 0) return;
    if (entries.length > 1) {
      const seen = new Set<number>();
      for (const e of entries) {
        if (seen.has(e.slot)) throw new RangeError(`slot ${e.slot} appears twice in one step`);
        seen.add(e.slot);
      }
    }
    for (const e of entries) {
      this.slot(e.slot);
      this.checkRoom(e.slot, 1);
    }
    this.checkIds(entries.map((e) => e.token));
    this.kv.reserve(entries.map((e) => ({ slot: e.slot, len: this.slots[e.slot].length, to: this.slots[e.slot].length + 1 })));
    const most = STEP_BUCKETS[STEP_BUCKETS.length - 1];
    try {
      for (let g = 0; g < entries.length; g += most) {
        const group = entries.length <= most ? entries : entries.slice(g, g + most);
        const p = await this.ensurePlan(stepBucket(group.length));
        const pad = p.b - group.length;
        this.moveLogitsOut(p.logits, group.map((e) => e.slot));
        // Rows past the group: the dummy sequence (token 0 at position 0 of the pad block).
        const at = [...group.map((e) => ({ slot: e.slot, pos: this.slots[e.slot].length })), ...Array.from({ length: pad }, () => ({ slot: this.kv.padSlot, pos: 0 }))];
        const ids = [...group.map((e) => e.token), ...new Array<number>(pad).fill(0)];
        if (p.xin) {
          p.xin.write(this.w.embed.gatherRaw(ids));
          this.ctx.convert(p.scratch.x, p.xin); // exact: the same f32 rows as gather()
        } else p.scratch.x.write(this.w.embed.gather(ids));
        p.scratch.pos.write(Int32Array.from(at, (e) => e.pos));
        this.kv.sync();
        this.kv.writeAddress(p.addr, at);
        this.ctx.replay(p.plan);
        group.forEach((e, i) => {
          const st = this.slots[e.slot];
          st.length += 1;
          st.ids.push(e.token);
          this.kv.filled(e.slot, st.ids, st.length);
          this.where[e.slot] = { t: p.logits, row: i };
        });
      }
    } catch (e) {
      throw wrapNative(e);
    }
  }

  /** Where a slot's current logits are; throws when it has none yet. */
  private logitsAt(slot: number): LogitsAt {
    const w = this.where[slot];
    if (!w) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `slot ${slot} has no logits yet: prefill or step it first`);
    return w;
  }

  /** The [n, V] logits of `slots` in that order: a prefix of one buffer when they already are, else gathered. */
  private logitsOf(slots: readonly number[], views: NativeTensor[]): NativeTensor {
    const at = slots.map((s) => this.logitsAt(s));
    if (at.every((w, i) => w.t === at[0].t && w.row === i)) return prefix(at[0].t, slots.length, views);
    this.pickBuf ??= this.ctx.empty("f32", [this.slots.length, this.cfg.vocabSize]);
    at.forEach((w, i) => this.copyRow(this.pickBuf!, i, w));
    return prefix(this.pickBuf, slots.length, views);
  }

  /**
   * Picks the next token of each row from its slot's current logits, on the device, in one flush (which also
   * runs the steps recorded before): argmax for rows with temperature <= 0, the sample op for the others.
   */
  async pick(rows: readonly { slot: number; params: PickParams }[]): Promise<number[]> {
    this.live();
    const n = rows.length;
    if (n === 0) return [];
    const slots = rows.map((r) => (this.slot(r.slot), r.slot));
    if (n > 1 && new Set(slots).size !== n) throw new RangeError("a slot appears twice in one pick");
    const penalized = rows.map((r) => (r.params.repetitionPenalty ?? 1) !== 1 && (r.params.penaltyIds?.length ?? 0) > 0);
    // argmax rows: greedy without a penalty (a penalized greedy row is the sample op at temperature 0)
    const greedy = rows.map((r, i) => !(r.params.temperature > 0) && !penalized[i]);
    const views: NativeTensor[] = [];
    try {
      const L = this.logitsOf(slots, views);
      let arg: NativeTensor | null = null, smp: NativeTensor | null = null;
      if (greedy.some(Boolean)) {
        arg = prefix(this.tokArg, n, views);
        this.ctx.argmax(arg, L);
      }
      if (!greedy.every(Boolean)) {
        smp = prefix(this.tokSample, n, views);
        const pr = prefix(this.params, n, views), tk = prefix(this.topK, n, views);
        const pv = new Float32Array(5 * n), kv = new Int32Array(n);
        rows.forEach((r, i) => {
          const p = r.params;
          pv.set(greedy[i] ? [0, 1, 0, 0, 1] : [p.temperature, p.topP, p.minP, p.u, penalized[i] ? p.repetitionPenalty! : 1], 5 * i);
          kv[i] = greedy[i] ? 0 : p.topK;
        });
        pr.write(pv);
        tk.write(kv);
        let ids: NativeTensor | null = null, lens: NativeTensor | null = null;
        if (penalized.some(Boolean)) {
          // The penalized tokens of each row, padded to the longest list (entries past a row's length are ignored).
          const width = Math.max(...rows.map((r, i) => (penalized[i] ? r.params.penaltyIds!.length : 0)));
          const iv = new Int32Array(n * width), lv = new Int32Array(n);
          rows.forEach((r, i) => {
            if (!penalized[i]) return;
            iv.set(r.params.penaltyIds!, i * width);
            lv[i] = r.params.penaltyIds!.length;
          });
          ids = this.ctx.fromBuffer("i32", [n, width], iv);
          views.push(ids);
          lens = this.ctx.fromBuffer("i32", [n], lv);
          views.push(lens);
        }
        this.ctx.sample(smp, L, pr, tk, ids, lens);
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

  /**
   * k rounds of (pick, step) for every row, as one flush: round j picks each row's token from its slot's current
   * logits (params as pick's; a sampled row's uniform for round j is us[j], params.u when us is absent and k = 1)
   * and steps it into the slot's next position, so the cache grows by k and the logits of the last step are current
   * afterwards, exactly as k calls of pick() then step() in a loop. Returns tokens[row][round].
   *
   * On CUDA (a bf16 or f32 embedding table, no repetition penalty in any row, GLM4_DEVICE_FED not "0") the rounds
   * are queued back to back with no host round trip between them: the pick leaves its ids on the device, the next
   * step's embedding op gathers their rows from the table mapped from host memory (HostEmbedding.onDevice), the
   * positions and cache rows of all k rounds are uploaded once; the host reads the k x rows tokens at the end. The
   * device is never idle between steps (run7, H200: the host work between a pick and the next step was 0.5 / 0.6 /
   * 1.1 ms of a 4.5 / 5.4 / 6.6 ms step at B = 1 / 32 / 64). Elsewhere: the loop of pick() and step().
   * A row that would pass maxContext throws before anything runs; a full pool throws ERR_GLM4_KV_CACHE_FULL with
   * nothing changed. A caller that stops a row early (a stop token in round j < k - 1) truncates it afterwards.
   */
  async run(rows: readonly { slot: number; params: PickParams; us?: readonly number[] }[], k: number): Promise<number[][]> {
    this.live();
    if (!Number.isInteger(k) || k < 1 || k > kRoundsMax) throw new RangeError(`run: rounds must be an integer in 1..${kRoundsMax}, got ${String(k)}`);
    const n = rows.length;
    if (n === 0) return [];
    const slots = rows.map((r) => (this.slot(r.slot), r.slot));
    if (n > 1 && new Set(slots).size !== n) throw new RangeError("run: a slot appears twice");
    const sampled = rows.map((r) => r.params.temperature > 0);
    rows.forEach((r, i) => {
      if (sampled[i] && (r.us ? r.us.length < k : k > 1)) throw new RangeError(`run: row ${i} samples (temperature ${r.params.temperature}) and needs ${k} uniforms in us, got ${r.us?.length ?? 0}`);
    });
    for (const s of slots) {
      this.logitsAt(s);
      this.checkRoom(s, k);
    }
    const uOf = (i: number, j: number) => rows[i].us?.[j] ?? rows[i].params.u;
    const penalized = rows.some((r) => (r.params.repetitionPenalty ?? 1) !== 1 && (r.params.penaltyIds?.length ?? 0) > 0);
    const most = STEP_BUCKETS[STEP_BUCKETS.length - 1];
    // GLM4_DEVICE_FED: "0" always the loop; "1" the device-fed rounds on the CPU backend too (tests: the same ops
    // on the reference backend); unset: on CUDA.
    const fed = process.env.GLM4_DEVICE_FED === "1" || (process.env.GLM4_DEVICE_FED !== "0" && this.ctx.device.startsWith("cuda"));
    const table = !penalized && n <= most && fed && process.env.GLM4_EMBED_GATHER !== "host" ? this.w.embed.onDevice(this.ctx) : null;
    if (!table) {
      // The loop: the same rounds through pick() and step().
      const out: number[][] = rows.map(() => []);
      for (let j = 0; j < k; j++) {
        const t = await this.pick(rows.map((r, i) => ({ slot: r.slot, params: { ...r.params, u: uOf(i, j) } })));
        t.forEach((x, i) => out[i].push(x));
        await this.step(rows.map((r, i) => ({ slot: r.slot, token: t[i] })));
      }
      return out;
    }
    const { ctx } = this;
    const lens = slots.map((s) => this.slots[s].length);
    this.kv.reserve(slots.map((slot, i) => ({ slot, len: lens[i], to: lens[i] + k })));
    const views: NativeTensor[] = [];
    try {
      const p = await this.ensurePlan(stepBucket(n));
      const b = p.b;
      this.moveLogitsOut(p.logits, slots);
      // Positions and cache rows of every round (the pad rows: position 0 of the pad block), the slots once, into
      // the plan's round buffers (whole-buffer writes: no views to make a run).
      const R = roundBufs(ctx, p);
      const pos = new Int32Array(kRoundsMax * b), crow = new Int32Array(kRoundsMax * b);
      const padRow = this.kv.row(this.kv.padSlot, 0);
      for (let j = 0; j < k; j++) {
        for (let i = 0; i < b; i++) {
          pos[j * b + i] = i < n ? lens[i] + j : 0;
          crow[j * b + i] = i < n ? this.kv.row(slots[i], lens[i] + j) : padRow;
        }
      }
      R.pos.write(pos);
      R.rows.write(crow);
      p.addr.seq?.write(Int32Array.from({ length: b }, (_, i) => (i < n ? slots[i] : this.kv.padSlot)));
      const anySampled = sampled.some(Boolean);
      if (anySampled) {
        // One sample op for every row: a greedy row goes through it at temperature 0 (its argmax).
        // Rounds [0, k), rows [0, n): the sample op reads no others. No array a value: this runs every run.
        const pv = new Float32Array(kRoundsMax * b * 5);
        for (let j = 0; j < k; j++) {
          for (let i = 0; i < n; i++) {
            const o = (j * b + i) * 5, q = rows[i].params, on = sampled[i];
            pv[o] = on ? q.temperature : 0;
            pv[o + 1] = on ? q.topP : 1;
            pv[o + 2] = on ? q.minP : 0;
            pv[o + 3] = on ? uOf(i, j) : 0;
            pv[o + 4] = 1;
          }
        }
        R.params.write(pv);
        R.topK.write(Int32Array.from({ length: b }, (_, i) => (i < n && sampled[i] ? rows[i].params.topK : 0)));
      }
      this.kv.sync();
      // Round j: its ids are row j of R.ids (the pick writes the first n, the step's embedding op reads all b; the pad
      // columns hold 0 or an earlier run's ids: valid tokens for the pad rows, whose outputs nobody reads).
      const Ln = cachedPrefix(R, "logits", p.logits, n);
      let first: Promise<void> | null = null;
      for (let j = 0; j < k; j++) {
        const L = j === 0 ? this.logitsOf(slots, views) : Ln;
        const idsN = cachedPrefix(R, `ids${j}`, R.idsRow[j], n);
        if (anySampled) ctx.sample(idsN, L, cachedPrefix(R, `par${j}`, R.paramsRow[j], n), cachedPrefix(R, "topK", R.topK, n), null, null);
        else ctx.argmax(idsN, L);
        ctx.copy(p.scratch.pos, R.posRow[j]);
        ctx.copy(p.addr.rows, R.rowsRow[j]);
        ctx.embedding(p.scratch.x, table, R.idsRow[j]);
        ctx.replay(p.plan);
        // The device starts on round 0 while the rest is recorded.
        if (j === 0 && k > 1) {
          first = ctx.flushAsync();
          first.catch(() => undefined); // awaited below; this only keeps an early failure from counting as unhandled
        }
      }
      await Promise.all([first, ctx.flushAsync()]);
      const got = R.ids.read() as Int32Array;
      const out = rows.map((_, i) => Array.from({ length: k }, (_, j) => got[j * b + i]));
      slots.forEach((s, i) => {
        const st = this.slots[s];
        st.length += k;
        st.ids.push(...out[i]);
        this.kv.filled(s, st.ids, st.length);
        this.where[s] = { t: p.logits, row: i };
      });
      return out;
    } catch (e) {
      throw wrapNative(e);
    } finally {
      for (const v of views) v.dispose();
    }
  }

  /** A slot's current logits copied to the host (runs pending work). */
  readLogits(slot: number): Float32Array {
    this.slot(slot);
    const w = this.logitsAt(slot);
    if (w.row === 0 && w.t.shape[0] === 1) return w.t.read() as Float32Array;
    const v = w.t.slice0(w.row, w.row + 1);
    try {
      return v.read() as Float32Array;
    } finally {
      v.dispose();
    }
  }

  /** The captured step a batch of b rows replays (built on first use). For the bench's replay timing and profile. */
  async stepPlan(b: number): Promise<NativePlan> {
    this.live();
    return (await this.ensurePlan(stepBucket(b))).plan;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const p of this.plans.values()) {
      p.plan.dispose();
      p.scratch.dispose();
      p.addr.dispose();
      for (const t of [p.hLast, p.logits, p.xin, ...(p.rounds?.all ?? [])]) t?.dispose();
    }
    this.plans.clear();
    for (const t of [this.slotLogits, this.pickBuf, this.hOne, this.tokArg, this.tokSample, this.params, this.topK]) t?.dispose();
    this.kv.dispose();
  }
}

