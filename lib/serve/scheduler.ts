/**
 * The server's scheduler: many requests, one model.
 *
 * Continuous batching over one Engine (lib/engine/engine.ts) of `maxConcurrent` slots and a paged KV cache (blocks
 * from one pool, full prompt blocks shared between requests). Requests wait in a bounded FIFO; each tick is one job
 * on the model's queue (other users of the model interleave between ticks) and does, under a token budget
 * (`stepTokens`: the tokens one tick feeds through the model):
 *
 *   1. admit: waiting requests take free slots in arrival order while the pool has blocks for their prompt (a
 *      request that does not fit waits, and so do the ones behind it: first come, first served);
 *   2. sample: every decoding sequence's next token is picked from its logits, all in one device pick (each row
 *      with its own settings, repetition penalty included); a sequence ends on a stop, a limit, or an aborted
 *      signal, which frees its slot and blocks at once;
 *   3. prefill: sequences still taking in their prompt get chunks, in arrival order, of what the budget leaves
 *      after one token per decoding sequence (at least one block's worth, so that prompts always advance): a long
 *      prompt is spread over several ticks and never stalls the sequences that are streaming;
 *   4. decode: ONE batched decode step for every sequence that goes on (the weights are read once for all of them;
 *      the engine replays the captured step of the smallest bucket of 1..128 rows that holds them).
 *   When every running sequence is decoding and no request waits, 2-4 become one Engine.run of up to `rounds`
 *   (GLM4_RUN_ROUNDS, 8 on CUDA) rounds of pick + step queued back to back on the device, the tokens checked round
 *   by round afterwards exactly as tick by tick (stops, limits): no host round trip between the steps.
 *
 * When the pool runs out (a decode step or a prefill chunk needs blocks that are not free), the most recently
 * admitted sequence is preempted: its blocks go back to the pool (full prompt blocks stay cached), and it waits at
 * the head of the queue; when resumed it recomputes its prompt and the tokens it had generated (a prefill), and
 * goes on with the same sampler state, so it gives the same tokens as if never preempted. An aborted request
 * (a client that went away) is ended by a job queued at once, which frees its blocks before the next tick.
 *
 * Each sequence's tokens are those it gets alone (the batch's rows are computed independently: lib/engine/engine.ts
 * says where that holds bit for bit).
 */
import { Glm4Error } from "../errors.js";
import { checkGenerateOptions, runRounds, type Generation } from "../engine/generation.js";
import type { Engine, PickParams } from "../engine/engine.js";
import { Sequence } from "../engine/sequence.js";
import { KV_BLOCK, checkMaxContext, type KvPoolOptions } from "../engine/kv-cache.js";
import type { Runtime } from "../engine/runtime.js";
import type { GenerateOptions, GenerateResult, TextChunk } from "../types.js";

export interface SchedulerOptions extends KvPoolOptions {
  /** Sequences generating at once: the slots of the batch (default 4). */
  maxConcurrent?: number;
  /** Requests that may wait for a slot; one more is refused with QueueFullError (default 64; 0: never wait). */
  maxQueue?: number;
  /** Longest sequence (prompt and reply) in tokens (default: the model's maxContext). */
  maxContext?: number;
  /**
   * Tokens one tick feeds through the model: one per decoding sequence, the rest for prompt chunks (default 512;
   * prompt chunks get at least KV_BLOCK tokens a tick).
   */
  stepTokens?: number;
}

export interface SequenceRequest {
  prompt: readonly number[];
  /** Generation options; `signal` aborts (a waiting request leaves the queue, an active one ends at once). */
  options: GenerateOptions;
  onChunk?: (c: TextChunk) => void;
}

/** No slot is free and the queue is full. */
export class QueueFullError extends Error {
  constructor(
    /** Requests in the queue (waiting for a slot or for KV blocks) when this one was refused. */
    readonly waiting: number,
    readonly running: number,
    readonly slots: number,
    /** A hint for the client's Retry-After header. */
    readonly retryAfterSeconds = 1,
  ) {
    super(`the server is busy: ${running} of ${slots} slots are generating and ${waiting} requests are waiting already (the queue's limit); retry in ${retryAfterSeconds} s`);
    this.name = "QueueFullError";
  }
}

interface Pending {
  req: SequenceRequest;
  resolve: (r: GenerateResult) => void;
  reject: (e: unknown) => void;
  /** Aborts this request: the client's signal, or the scheduler's shutdown (never a signal shared by requests). */
  signal: AbortSignal;
  abort: () => void;
  /** Removes the listener from the client's signal once the request is over. */
  detach: () => void;
  /** Set once admitted; kept across a preemption (the sampler state goes on). */
  gen: Generation | null;
  /** Arrival order (FCFS; preemption picks the latest). */
  order: number;
}

interface Seq {
  job: Pending;
  gen: Generation;
  slot: number;
  /** Ids still to feed before decoding (prompt chunks); empty once decoding. */
  toFeed: number[];
  /** Decoding: the token to feed in this tick's step (null: its logits are ready to be picked). */
  next: number | null;
}

export interface SchedulerStats {
  slots: number;
  active: number;
  /** Active sequences still taking in their prompt. */
  prefilling: number;
  waiting: number;
  maxQueue: number;
  /** Since start: sequences that ended (any reason), of which aborted; requests refused because the queue was full; preemptions. */
  completed: number;
  aborted: number;
  rejected: number;
  preempted: number;
  /** The KV-cache pool: blocks of `blockSize` tokens, held by sequences (the pad block included), cached prompt heads. */
  kv: { blocks: number; inUse: number; cached: number; available: number; blockSize: number };
  /** Tokens one tick feeds at most. */
  stepTokens: number;
}

export class Scheduler {
  /** The sequences in the batch, in admission order. */
  private readonly running: Seq[] = [];
  readonly engine: Engine;
  private readonly rt: Runtime;
  private readonly waiting: Pending[] = [];
  private readonly maxQueue: number;
  private readonly maxContext: number;
  private readonly stepTokens: number;
  /** Rounds of (pick, step) a tick may run at once (Engine.run) when every sequence is decoding and none waits. */
  private readonly rounds: number;
  private loop: Promise<void> | null = null;
  private closed = false;
  private released = false;
  /** Requests submitted and not yet answered (waiting, running or preempted). */
  private readonly live = new Set<Pending>();
  private arrivals = 0;
  private counts = { completed: 0, aborted: 0, rejected: 0, preempted: 0 };

  constructor(
    /** The model (a Glm4Model: its runtime runs the batch). */
    model: { readonly runtime: Runtime },
    opts: SchedulerOptions = {},
  ) {
    this.rt = model.runtime;
    // Default: 32 rows on a GPU (the paged pool holds only the tokens in use, and a 32-row step costs about what an
    // 8-row one does: bench/results, H200), 4 on the CPU (where every slot gets maxContext rows and a row costs its
    // full matmul time).
    const maxConcurrent = opts.maxConcurrent ?? (this.rt.info.device.startsWith("cuda") ? 32 : 4);
    if (!Number.isInteger(maxConcurrent) || maxConcurrent < 1 || maxConcurrent > 1024) throw new RangeError(`maxConcurrent must be an integer in [1, 1024], got ${String(maxConcurrent)}`);
    this.maxQueue = opts.maxQueue ?? 64;
    if (!Number.isInteger(this.maxQueue) || this.maxQueue < 0) throw new RangeError(`maxQueue must be a non-negative integer, got ${String(opts.maxQueue)}`);
    this.stepTokens = opts.stepTokens ?? 512;
    if (!Number.isInteger(this.stepTokens) || this.stepTokens < 1) throw new RangeError(`stepTokens must be a positive integer, got ${String(opts.stepTokens)}`);
    this.maxContext = checkMaxContext(opts.maxContext ?? this.rt.info.maxContext, this.rt.config.maxPositions);
    // The pool is claimed now (sized from free memory when asked), so that /health shows it and a load that
    // leaves no room fails at start, not at the first request.
    this.engine = this.rt.newEngine({ maxBatch: maxConcurrent, maxContext: this.maxContext, kvBlocks: opts.kvBlocks, kvCacheBytes: opts.kvCacheBytes, gpuMemoryUtilization: opts.gpuMemoryUtilization });
    this.rounds = runRounds(this.rt.info.device);
  }

  /** The longest prompt plus reply a request can have. */
  get contextSize(): number {
    return this.maxContext;
  }

  stats(): SchedulerStats {
    return {
      slots: this.engine.maxBatch,
      active: this.running.length,
      prefilling: this.running.filter((s) => s.toFeed.length).length,
      waiting: this.waiting.length,
      maxQueue: this.maxQueue,
      ...this.counts,
      kv: this.engine.kvStats(),
      stepTokens: this.stepTokens,
    };
  }

  /**
   * Queues a request. Throws QueueFullError at once when every slot is busy and `maxQueue` requests wait
   * already; the promise rejects with an AbortError when the signal aborts before a slot was found.
   */
  submit(req: SequenceRequest): Promise<GenerateResult> {
    if (this.closed) throw new Glm4Error("ERR_GLM4_DISPOSED", "the scheduler is closed");
    checkGenerateOptions(req.options); // throws here, before queueing
    if (req.prompt.length === 0) throw new RangeError("the prompt is empty: give at least one token");
    if (req.prompt.length >= this.maxContext) throw new RangeError(`the prompt is ${req.prompt.length} tokens; a sequence holds at most ${this.maxContext}`);
    // Waiting requests first fill the free slots; past those, at most maxQueue wait.
    const free = this.engine.maxBatch - this.running.length;
    if (this.waiting.length >= free + this.maxQueue) {
      this.counts.rejected++;
      throw new QueueFullError(this.waiting.length, this.running.length, this.engine.maxBatch);
    }
    // One controller per request, linked to the client's signal by a listener removed when the request is over;
    // the shutdown aborts each request's controller. (AbortSignal.any over a long-lived shutdown signal kept every
    // request's composite signal alive: ~4 KB of heap a request, issue 16.)
    const ac = new AbortController();
    const user = req.options.signal;
    const onUserAbort = () => ac.abort(user?.reason);
    if (user?.aborted) ac.abort(user.reason);
    else user?.addEventListener("abort", onUserAbort, { once: true });
    const signal = ac.signal;
    return new Promise<GenerateResult>((res, rej) => {
      const detach = () => user?.removeEventListener("abort", onUserAbort);
      const resolve = (r: GenerateResult) => (detach(), this.live.delete(job), res(r));
      const reject = (e: unknown) => (detach(), this.live.delete(job), rej(e));
      const job: Pending = { req, resolve, reject, signal, abort: () => ac.abort(), detach, gen: null, order: this.arrivals++ };
      this.live.add(job);
      this.waiting.push(job);
      signal.addEventListener(
        "abort",
        () => {
          const i = this.waiting.indexOf(job);
          if (i >= 0) {
            this.waiting.splice(i, 1);
            this.counts.aborted++;
            if (job.gen) {
              // preempted, then aborted while waiting to resume: it ends with what it generated
              job.gen.finish("abort");
              this.counts.completed++;
              job.resolve(job.gen.result());
            } else reject(new DOMException("the request was aborted while it waited for a slot", "AbortError"));
            return;
          }
          // Admitted: end it (and free its blocks) in a job of its own, right after the tick in flight.
          void this.rt.exclusive(async () => {
            const k = this.running.findIndex((s) => s.job === job);
            if (k >= 0) this.end(this.running[k], "abort");
          });
        },
        { once: true },
      );
      this.kick();
    });
  }

  /** Whether drain() or close() has begun: new requests are refused. */
  get draining(): boolean {
    return this.closed;
  }

  /**
   * Graceful shutdown: refuses new requests (ERR_GLM4_SHUTTING_DOWN), refuses the waiting ones with that error
   * at once (a preempted one ends with what it generated), gives the running ones `graceMs` to finish, then
   * aborts them (each ends with what it generated, finish reason "abort"), and resolves when none runs. The KV
   * cache stays until close().
   */
  async drain(graceMs: number): Promise<void> {
    this.closed = true;
    for (const job of this.waiting.splice(0)) {
      this.counts.completed++;
      if (job.gen) {
        job.gen.finish("abort");
        this.counts.aborted++;
        job.resolve(job.gen.result());
      } else job.reject(new Glm4Error("ERR_GLM4_SHUTTING_DOWN", "the server is shutting down: the request was not started; retry later"));
    }
    if (this.loop && graceMs > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.loop, new Promise<void>((r) => (timer = setTimeout(r, graceMs)))]);
      clearTimeout(timer);
    }
    for (const job of [...this.live]) job.abort();
    while (this.loop) await this.loop;
  }

  /** Refuses new requests, aborts the waiting and active ones at once, and frees the KV cache. */
  async close(): Promise<void> {
    if (this.released) return;
    await this.drain(0);
    if (this.released) return;
    this.released = true;
    await this.rt.releaseEngine(this.engine);
  }

  private kick(): void {
    if (this.loop) return;
    this.loop = (async () => {
      let stalled = false;
      try {
        while (this.running.length || this.waiting.length) {
          const progressed = await this.rt.exclusive(() => this.tick());
          if (!progressed && !this.running.length) {
            stalled = true; // nothing admitted and nothing running: the next submit kicks again
            break;
          }
        }
      } finally {
        this.loop = null;
      }
      if (!stalled && this.waiting.length) this.kick(); // arrived while the loop was ending
    })();
  }

  /** Blocks a prompt of n tokens needs (and one more for its first generated token). */
  private static blocksFor(n: number): number {
    return Math.ceil((n + 1) / KV_BLOCK);
  }

  /** One tick; false when it could do nothing at all. */
  private async tick(): Promise<boolean> {
    const e = this.engine;
    let progressed = false;
    // 1. admit, first come first served
    while (this.waiting.length && this.running.length < e.maxBatch) {
      const job = this.waiting[0];
      const ids = job.gen ? job.gen.resumeIds() : job.req.prompt;
      const need = Scheduler.blocksFor(ids.length);
      const kv = e.kvStats();
      if (need > kv.blocks - 1) {
        // can never fit, whatever finishes
        this.waiting.shift();
        this.counts.completed++;
        job.reject(new Glm4Error("ERR_GLM4_KV_CACHE_FULL", `the sequence needs ${need} KV blocks of ${KV_BLOCK} tokens but the whole cache has ${kv.blocks - 1}; give the server more KV-cache memory or send a shorter prompt`));
        continue;
      }
      if (need > kv.available) break; // waits for blocks; so does everyone behind it
      this.waiting.shift();
      let slot = -1;
      try {
        slot = e.admit();
        if (!job.gen) job.gen = this.rt.generation(new Sequence(e, slot), job.req.prompt, checkGenerateOptions({ ...job.req.options, signal: job.signal }), job.req.onChunk);
        else job.gen.engine = new Sequence(e, slot); // resumed after a preemption: a new slot, the same sampler
        const toFeed = job.gen.startPrefill(ids);
        this.running.push({ job, gen: job.gen, slot, toFeed, next: null });
        progressed = true;
      } catch (err) {
        if (slot >= 0) e.release(slot);
        this.counts.completed++;
        job.reject(err);
      }
    }
    if (!this.running.length) return progressed;
    progressed = true;

    // 2. sample: one device pick for every decoding sequence whose logits are ready
    const device: { seq: Seq; params: PickParams }[] = [];
    for (const seq of [...this.running]) {
      if (seq.toFeed.length || seq.next !== null) continue;
      try {
        const r = seq.gen.beginSample();
        if (r === null) this.end(seq);
        else device.push({ seq, params: r });
      } catch (err) {
        this.fail(seq, err);
      }
    }
    // 2b. all decoding, nobody waiting: up to `rounds` rounds of (pick, step) in one device-fed run (no host round
    //     trip between the steps); the rounds of each sequence are checked as the token-by-token ticks would
    if (device.length && (await this.runRounds(device))) return progressed;
    if (device.length) {
      let toks: number[] = [];
      try {
        toks = await e.pick(device.map((d) => ({ slot: d.seq.slot, params: d.params })));
      } catch (err) {
        for (const d of device) this.fail(d.seq, err);
      }
      device.forEach((d, i) => {
        if (!this.running.includes(d.seq) || toks[i] === undefined) return;
        try {
          const t = d.seq.gen.acceptSample(toks[i]);
          if (t === null) this.end(d.seq);
          else d.seq.next = t;
        } catch (err) {
          this.fail(d.seq, err);
        }
      });
    }

    // 3. prefill chunks under what the budget leaves
    const decoding = this.running.filter((s) => s.next !== null).length;
    let budget = Math.max(this.stepTokens - decoding, KV_BLOCK);
    for (const seq of [...this.running]) {
      if (!seq.toFeed.length || budget <= 0 || !this.running.includes(seq)) continue;
      const n = Math.min(seq.toFeed.length, budget);
      if (!this.makeRoom(seq, e.blocksFor(seq.slot, n))) continue; // seq itself was preempted
      try {
        await e.prefill(seq.slot, seq.toFeed.slice(0, n));
        seq.toFeed = seq.toFeed.slice(n);
        budget -= n;
        if (!seq.toFeed.length) seq.gen.endPrefill();
      } catch (err) {
        this.fail(seq, err);
      }
    }

    // 4. one batched decode step for every sequence that goes on
    const feeding = this.running.filter((s) => s.next !== null);
    if (feeding.length) {
      const need = () => feeding.reduce((a, s) => a + (this.running.includes(s) ? e.blocksFor(s.slot, 1) : 0), 0);
      while (need() > e.kvStats().available && this.preemptLatest()) {
        /* preempted one; try again */
      }
      const go = feeding.filter((s) => this.running.includes(s));
      if (go.length) {
        try {
          await e.step(go.map((s) => ({ slot: s.slot, token: s.next! })));
          for (const s of go) s.next = null;
        } catch (err) {
          for (const s of go) this.fail(s, err);
        }
      }
    }
    return progressed;
  }

  /**
   * Runs k >= 2 rounds for the rows of `device` when every running sequence is among them (none prefilling), no
   * request waits, no row has a repetition penalty, and the pool has the blocks of all k rounds; false (nothing
   * done) otherwise. A sequence that stops in round j < k ends there (its slot and the rounds past j are freed).
   */
  private async runRounds(device: { seq: Seq; params: PickParams }[]): Promise<boolean> {
    const e = this.engine;
    if (this.rounds < 2 || this.waiting.length || device.length !== this.running.length) return false;
    if (device.some((d) => d.params.repetitionPenalty !== undefined)) return false;
    const k = Math.min(this.rounds, ...device.map((d) => e.maxContext - e.length(d.seq.slot)));
    if (k < 2) return false;
    if (device.reduce((a, d) => a + e.blocksFor(d.seq.slot, k), 0) > e.kvStats().available) return false;
    const us = device.map((d) => [d.params.u, ...d.seq.gen.drawUniforms(k - 1)]);
    const len0 = device.map((d) => e.length(d.seq.slot));
    let toks: number[][];
    try {
      toks = await e.run(device.map((d, i) => ({ slot: d.seq.slot, params: d.params, us: us[i] })), k);
    } catch (err) {
      for (const d of device) this.fail(d.seq, err);
      return true;
    }
    device.forEach((d, i) => {
      if (!this.running.includes(d.seq)) return;
      try {
        if (!d.seq.gen.acceptRun(toks[i], us[i], len0[i]).goesOn) this.end(d.seq);
      } catch (err) {
        this.fail(d.seq, err);
      }
    });
    return true;
  }

  /** Preempts the latest admitted sequences until `need` blocks are free; false when `seq` itself had to go. */
  private makeRoom(seq: Seq, need: number): boolean {
    while (need > this.engine.kvStats().available) {
      const last = this.running[this.running.length - 1];
      this.preemptLatest();
      if (last === seq) return false;
    }
    return true;
  }

  /** Preempts the most recently admitted sequence (recompute later); false when none runs. */
  private preemptLatest(): boolean {
    const seq = this.running.pop();
    if (!seq) return false;
    this.engine.release(seq.slot);
    this.counts.preempted++;
    // back to the head of the queue, before the requests that arrived after it
    let i = 0;
    while (i < this.waiting.length && this.waiting[i].order < seq.job.order) i++;
    this.waiting.splice(i, 0, seq.job);
    return true;
  }

  private end(seq: Seq, reason?: "abort"): void {
    const k = this.running.indexOf(seq);
    if (k < 0) return;
    this.running.splice(k, 1);
    this.engine.release(seq.slot);
    if (reason) seq.gen.finish(reason);
    this.counts.completed++;
    if (seq.gen.finishReason === "abort") this.counts.aborted++;
    seq.job.resolve(seq.gen.result());
  }

  private fail(seq: Seq, err: unknown): void {
    const k = this.running.indexOf(seq);
    if (k < 0) return;
    this.running.splice(k, 1);
    this.engine.release(seq.slot);
    this.counts.completed++;
    seq.job.reject(err);
  }
}
