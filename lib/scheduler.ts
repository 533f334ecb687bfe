/**
 * The server's scheduler: many requests, one model.
 *
 * `maxConcurrent` slots each own an Engine (a KV cache). A request waits in a bounded FIFO until a slot is
 * free, is prefilled there, and then advances one token per tick together with the other active sequences.
 * Each tick is one job on the model's queue (so other users of the model interleave between ticks):
 *
 *   1. admit: free slots take waiting requests and prefill them (a slot whose cache shares the longest prefix
 *      with the prompt is preferred: only the rest is prefilled);
 *   2. sample: every active sequence picks its next token from its logits (and ends on a stop, a limit, or
 *      an aborted signal, which frees its slot at once);
 *   3. feed: every sequence that goes on runs one decode step with its token.
 *
 * Today step 3 is one decode step per sequence, one after another (the Engine decodes one sequence). It is
 * the seam for continuous batching: an engine with a batched decode step (B sequences, B KV caches, one pass
 * over the weights) replaces the loop in `feed` with one call, and sequences keep joining (step 1) and leaving
 * (step 2) between steps. Per-sequence state (sampling, stop strings, seeds) lives in Generation and does not
 * change. On the CPU the slots simply take turns token by token.
 */
import { Glm4Error } from "./errors.js";
import { checkGenerateOptions, type Generation } from "./generation.js";
import type { Engine } from "./model.js";
import type { GenerateOptions, GenerateResult, Glm4Model, TextChunk } from "./glm4.js";

export interface SchedulerOptions {
  /** Sequences generating at once, each with its own KV cache (default 4). */
  maxConcurrent?: number;
  /** Requests that may wait for a slot; one more is refused with QueueFullError (default 64; 0: never wait). */
  maxQueue?: number;
  /** KV-cache capacity of each slot in tokens (default: the model's maxContext). */
  maxContext?: number;
}

export interface SequenceRequest {
  prompt: readonly number[];
  /** Generation options; `signal` aborts (a waiting request leaves the queue, an active one ends at the next tick). */
  options: GenerateOptions;
  onChunk?: (c: TextChunk) => void;
}

/** No slot is free and the queue is full. */
export class QueueFullError extends Error {
  constructor(readonly waiting: number) {
    super(`the server is busy: ${waiting} requests are already waiting; retry later`);
    this.name = "QueueFullError";
  }
}

interface Pending {
  req: SequenceRequest;
  resolve: (r: GenerateResult) => void;
  reject: (e: unknown) => void;
  signal: AbortSignal;
}

interface Slot {
  engine: Engine | null;
  seq: { gen: Generation; job: Pending } | null;
}

export interface SchedulerStats {
  slots: number;
  active: number;
  waiting: number;
  maxQueue: number;
  /** Since start: sequences that ended (any reason), of which aborted; requests refused because the queue was full. */
  completed: number;
  aborted: number;
  rejected: number;
}

export class Scheduler {
  private readonly slots: Slot[];
  private readonly waiting: Pending[] = [];
  private readonly maxQueue: number;
  private readonly maxContext: number;
  private readonly shutdown = new AbortController();
  private loop: Promise<void> | null = null;
  private closed = false;
  private counts = { completed: 0, aborted: 0, rejected: 0 };

  constructor(
    private readonly model: Glm4Model,
    opts: SchedulerOptions = {},
  ) {
    const maxConcurrent = opts.maxConcurrent ?? 4;
    if (!Number.isInteger(maxConcurrent) || maxConcurrent < 1 || maxConcurrent > 1024) throw new RangeError(`maxConcurrent must be an integer in [1, 1024], got ${String(maxConcurrent)}`);
    this.maxQueue = opts.maxQueue ?? 64;
    if (!Number.isInteger(this.maxQueue) || this.maxQueue < 0) throw new RangeError(`maxQueue must be a non-negative integer, got ${String(opts.maxQueue)}`);
    this.maxContext = opts.maxContext ?? model.info.maxContext;
    if (!Number.isInteger(this.maxContext) || this.maxContext < 1 || this.maxContext > model.config.maxPositions) {
      throw new RangeError(`maxContext must be an integer in [1, ${model.config.maxPositions}], got ${String(opts.maxContext)}`);
    }
    this.slots = Array.from({ length: maxConcurrent }, () => ({ engine: null, seq: null }));
  }

  /** KV-cache capacity of a slot: the longest prompt plus reply a request can have. */
  get contextSize(): number {
    return this.maxContext;
  }

  stats(): SchedulerStats {
    return { slots: this.slots.length, active: this.slots.filter((s) => s.seq).length, waiting: this.waiting.length, maxQueue: this.maxQueue, ...this.counts };
  }

  /**
   * Queues a request. Throws QueueFullError at once when every slot is busy and `maxQueue` requests wait
   * already; the promise rejects with an AbortError when the signal aborts before a slot was found.
   */
  submit(req: SequenceRequest): Promise<GenerateResult> {
    if (this.closed) throw new Glm4Error("ERR_GLM4_DISPOSED", "the scheduler is closed");
    checkGenerateOptions(req.options); // throws here, before queueing
    if (req.prompt.length === 0) throw new RangeError("the prompt is empty: give at least one token");
    // Waiting requests first fill the free slots (at the next tick); past those, at most maxQueue wait.
    const free = this.slots.filter((s) => !s.seq).length;
    if (this.waiting.length >= free + this.maxQueue) {
      this.counts.rejected++;
      throw new QueueFullError(this.waiting.length);
    }
    const signal = req.options.signal ? AbortSignal.any([req.options.signal, this.shutdown.signal]) : this.shutdown.signal;
    return new Promise<GenerateResult>((resolve, reject) => {
      const job: Pending = { req, resolve, reject, signal };
      this.waiting.push(job);
      signal.addEventListener(
        "abort",
        () => {
          const i = this.waiting.indexOf(job);
          if (i < 0) return; // already admitted: the tick ends it
          this.waiting.splice(i, 1);
          this.counts.aborted++;
          reject(new DOMException("the request was aborted while it waited for a slot", "AbortError"));
        },
        { once: true },
      );
      this.kick();
    });
  }

  /** Refuses new requests, aborts the waiting and active ones, and frees the slots' KV caches. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.shutdown.abort();
    await this.loop;
    for (const s of this.slots) {
      if (s.engine) await this.model._releaseEngine(s.engine);
      s.engine = null;
    }
  }

  private kick(): void {
    if (this.loop) return;
    this.loop = (async () => {
      try {
        while (this.slots.some((s) => s.seq) || (this.waiting.length && this.slots.some((s) => !s.seq))) {
          await this.model._exclusive(() => this.tick());
        }
      } finally {
        this.loop = null;
      }
      if (this.waiting.length) this.kick(); // arrived while the loop was ending
    })();
  }

  private async tick(): Promise<void> {
    // 1. admit
    for (;;) {
      const free = this.slots.filter((s) => !s.seq);
      if (!free.length || !this.waiting.length) break;
      const job = this.waiting.shift()!;
      const slot = this.bestSlot(free, job.req.prompt);
      try {
        slot.engine ??= this.model._newEngine(this.maxContext);
        const opts = checkGenerateOptions({ ...job.req.options, signal: job.signal });
        const gen = this.model._generation(slot.engine, job.req.prompt, opts, job.req.onChunk);
        slot.seq = { gen, job };
        await gen.prefill(true);
      } catch (e) {
        slot.seq = null;
        this.counts.completed++;
        job.reject(e);
      }
    }
    // 2. sample
    const feeding: [Slot, number][] = [];
    for (const slot of this.slots) {
      if (!slot.seq) continue;
      try {
        const t = await slot.seq.gen.sample();
        if (t === null) this.end(slot);
        else feeding.push([slot, t]);
      } catch (e) {
        this.fail(slot, e);
      }
    }
    // 3. feed: one decode step per sequence (a batched engine makes this one call for all of them)
    for (const [slot, t] of feeding) {
      try {
        await slot.seq!.gen.feed(t);
      } catch (e) {
        this.fail(slot, e);
      }
    }
  }

  /** The free slot whose cache shares the longest prefix with `prompt` (an empty slot otherwise). */
  private bestSlot(free: Slot[], prompt: readonly number[]): Slot {
    let best = free[0], bestLen = -1;
    for (const s of free) {
      const have = s.engine?.tokens ?? [];
      let n = 0;
      while (n < have.length && n < prompt.length && have[n] === prompt[n]) n++;
      if (n > bestLen || (n === bestLen && !s.engine && best.engine)) (best = s), (bestLen = n);
    }
    return best;
  }

  private end(slot: Slot): void {
    const { gen, job } = slot.seq!;
    slot.seq = null;
    this.counts.completed++;
    if (gen.finishReason === "abort") this.counts.aborted++;
    job.resolve(gen.result());
  }

  private fail(slot: Slot, e: unknown): void {
    const { job } = slot.seq!;
    slot.seq = null;
    slot.engine?.reset();
    this.counts.completed++;
    job.reject(e);
  }
}
