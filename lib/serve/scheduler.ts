/**
 * The server's scheduler: many requests, one model.
 *
 * Continuous batching: `maxConcurrent` slots of one Engine (lib/engine/engine.ts: one KV cache per layer
 * shared by the slots). A request waits in a bounded FIFO until a slot is free, is prefilled there, and then
 * advances one token per tick together with the other active sequences. Each tick is one job on the model's
 * queue (so other users of the model interleave between ticks):
 *
 *   1. admit: free slots take waiting requests and prefill them (a slot whose cache shares the longest prefix
 *      with the prompt is preferred: only the rest is prefilled);
 *   2. sample: every active sequence's next token is picked from its logits, all in one device pick (each row
 *      with its own settings, repetition penalty included); a sequence ends on a stop, a limit, or an aborted signal,
 *      which frees its slot at once;
 *   3. feed: ONE batched decode step for every sequence that goes on (the weights are read once for all of
 *      them; at most 8 rows a replay, see kStepRows).
 *
 * Sequences join (1) and leave (2) between steps. Per-sequence state (sampling, stop strings, seeds) lives in
 * Generation. Each sequence's tokens are those it gets alone (the batch's rows are computed independently:
 * lib/engine/engine.ts says where that holds bit for bit). On the CPU it is as correct, just not faster.
 */
import { Glm4Error } from "../errors.js";
import { checkGenerateOptions, type Generation } from "../engine/generation.js";
import type { Engine, PickParams } from "../engine/engine.js";
import { Sequence } from "../engine/sequence.js";
import { checkMaxContext } from "../engine/kv-cache.js";
import type { Runtime } from "../engine/runtime.js";
import type { GenerateOptions, GenerateResult, TextChunk } from "../types.js";

export interface SchedulerOptions {
  /** Sequences generating at once: the slots of the batch, each with its own rows of the KV cache (default 4). */
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

interface Seq {
  gen: Generation;
  job: Pending;
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
  /** The sequence in each slot of the batch (null: free). */
  private readonly slots: (Seq | null)[];
  private batch: Engine | null = null;
  private readonly rt: Runtime;
  private readonly waiting: Pending[] = [];
  private readonly maxQueue: number;
  private readonly maxContext: number;
  private readonly shutdown = new AbortController();
  private loop: Promise<void> | null = null;
  private closed = false;
  private counts = { completed: 0, aborted: 0, rejected: 0 };

  constructor(
    /** The model (a Glm4Model: its runtime runs the batch). */
    model: { readonly runtime: Runtime },
    opts: SchedulerOptions = {},
  ) {
    this.rt = model.runtime;
    const maxConcurrent = opts.maxConcurrent ?? 4;
    if (!Number.isInteger(maxConcurrent) || maxConcurrent < 1 || maxConcurrent > 1024) throw new RangeError(`maxConcurrent must be an integer in [1, 1024], got ${String(maxConcurrent)}`);
    this.maxQueue = opts.maxQueue ?? 64;
    if (!Number.isInteger(this.maxQueue) || this.maxQueue < 0) throw new RangeError(`maxQueue must be a non-negative integer, got ${String(opts.maxQueue)}`);
    this.maxContext = checkMaxContext(opts.maxContext ?? this.rt.info.maxContext, this.rt.config.maxPositions);
    this.slots = Array.from({ length: maxConcurrent }, () => null);
  }

  /** KV-cache capacity of a slot: the longest prompt plus reply a request can have. */
  get contextSize(): number {
    return this.maxContext;
  }

  stats(): SchedulerStats {
    return { slots: this.slots.length, active: this.slots.filter((s) => s).length, waiting: this.waiting.length, maxQueue: this.maxQueue, ...this.counts };
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
    const free = this.slots.filter((s) => !s).length;
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
    if (this.batch) await this.rt.releaseEngine(this.batch);
    this.batch = null;
  }

  private kick(): void {
    if (this.loop) return;
    this.loop = (async () => {
      try {
        while (this.slots.some((s) => s) || (this.waiting.length && this.slots.some((s) => !s))) {
          await this.rt.exclusive(() => this.tick());
        }
      } finally {
        this.loop = null;
      }
      if (this.waiting.length) this.kick(); // arrived while the loop was ending
    })();
  }

  private async tick(): Promise<void> {
    // 1. admit
    while (this.waiting.length && this.slots.some((s) => !s)) {
      const job = this.waiting.shift()!;
      let slot = -1;
      try {
        this.batch ??= this.rt.newEngine({ maxBatch: this.slots.length, maxContext: this.maxContext });
        slot = this.batch.admit();
        const opts = checkGenerateOptions({ ...job.req.options, signal: job.signal });
        const gen = this.rt.generation(new Sequence(this.batch, slot), job.req.prompt, opts, job.req.onChunk);
        this.slots[slot] = { gen, job };
        await gen.prefill(true);
      } catch (e) {
        if (slot >= 0) {
          this.slots[slot] = null;
          this.batch!.release(slot);
        }
        this.counts.completed++;
        job.reject(e);
      }
    }
    const batch = this.batch;
    if (!batch) return;
    // 2. sample: one device pick for every sequence that picks on the device
    const device: { slot: number; params: PickParams }[] = [];
    this.slots.forEach((seq, slot) => {
      if (!seq) return;
      try {
        const r = seq.gen.beginSample();
        if (r === null) this.end(slot);
        else device.push({ slot, params: r });
      } catch (e) {
        this.fail(slot, e);
      }
    });
    const picked = new Map<number, number>();
    if (device.length) {
      try {
        const toks = await batch.pick(device);
        device.forEach((d, i) => picked.set(d.slot, toks[i]));
      } catch (e) {
        for (const d of device) this.fail(d.slot, e);
      }
    }
    const feeding: { slot: number; token: number }[] = [];
    for (const [slot, tok] of [...picked].sort((a, b) => a[0] - b[0])) {
      try {
        const t = this.slots[slot]!.gen.acceptSample(tok);
        if (t === null) this.end(slot);
        else feeding.push({ slot, token: t });
      } catch (e) {
        this.fail(slot, e);
      }
    }
    // 3. feed: one batched decode step for all of them
    if (feeding.length) {
      try {
        await batch.step(feeding);
      } catch (e) {
        for (const f of feeding) this.fail(f.slot, e);
      }
    }
  }

  private end(slot: number): void {
    const { gen, job } = this.slots[slot]!;
    this.slots[slot] = null;
    this.batch!.release(slot);
    this.counts.completed++;
    if (gen.finishReason === "abort") this.counts.aborted++;
    job.resolve(gen.result());
  }

  private fail(slot: number, e: unknown): void {
    const seq = this.slots[slot];
    if (!seq) return;
    this.slots[slot] = null;
    this.batch!.reset(slot);
    this.batch!.release(slot);
    this.counts.completed++;
    seq.job.reject(e);
  }
}
