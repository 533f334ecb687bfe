/**
 * The runtime: what a loaded model is under its public facade (Glm4Model, lib/glm4.ts). It owns the native
 * context, the weights, the work queue and the engines, and runs generations. Sessions (lib/session.ts), the
 * server's scheduler (lib/serve/scheduler.ts) and the bench (lib/cli/bench.ts) work on it; users see the facade.
 *
 *   rt.engine / rt.solo        the model's own engine (one slot) and its sequence: generate, stream, chat, logits
 *   rt.newSequence(maxContext) a sequence of its own (a session): a one-slot engine, freed by releaseEngine
 *   rt.newEngine({ maxBatch }) an engine of several slots (the scheduler, the bench's batched decode)
 *   rt.exclusive(fn)           runs fn with the model to itself: every use of the context goes through the queue
 */
import { Glm4Error } from "../errors.js";
import type { Glm4Config } from "../checkpoint/config.js";
import type { Glm4Tokenizer } from "../text/tokenizer.js";
import type { GenerateOptions, GenerateResult, ModelInfo, TextChunk } from "../types.js";
import type { DType, NativeContext } from "./native.js";
import { Engine, STEP_BUCKETS } from "./engine.js";
import { Sequence } from "./sequence.js";
import { Generation, checkGenerateOptions, type CheckedGenerateOptions, type SequenceEngine } from "./generation.js";
import { KV_BLOCK, checkMaxContext, kvBlocksFor, type KvPoolOptions } from "./kv-cache.js";
import { native } from "./native-binary.js";
import { disposeWeights, type ModelWeights } from "./weights.js";

/**
 * Device memory an engine needs besides its KV pool, kept out of a pool sized from free memory: the captured steps'
 * scratch and logits (every bucket up to maxBatch), the slots' logits, a prefill chunk's scratch, and 1 GiB for
 * the CUDA graphs, workspaces and the allocator's slack.
 */
function engineScratchBytes(cfg: Glm4Config, maxBatch: number, prefillChunk: number): number {
  const perRow = 4 * (3 * cfg.hiddenSize + 2 * (cfg.numHeads + cfg.numKvHeads) * cfg.headDim + 3 * cfg.ffnSize + cfg.vocabSize);
  let rows = 0;
  for (const b of STEP_BUCKETS) if (b <= Math.max(1, maxBatch) * 2) rows += b;
  return perRow * (rows + prefillChunk) + 2 * 4 * cfg.vocabSize * maxBatch + 2 ** 30;
}

/** Serializes work on one model: calls wait for the previous one (all engines of a model share one context and stream). */
class WorkQueue {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.tail.then(fn, fn);
    this.tail = p.catch(() => undefined);
    return p;
  }
}

export class Runtime {
  private readonly queue = new WorkQueue();
  private disposed = false;
  /** Engines of sessions, the server and the bench (freed with the model). */
  private readonly engines = new Set<Engine>();
  /** The model's own engine: one slot, for generate, stream, chat and logits. */
  readonly engine: Engine;
  /** Its one sequence. */
  readonly solo: Sequence;

  /** Takes ownership of ctx and weights (dispose frees them; when this constructor throws, the caller still owns them). */
  constructor(
    readonly ctx: NativeContext,
    readonly config: Glm4Config,
    readonly weights: ModelWeights,
    readonly tokenizer: Glm4Tokenizer | null,
    readonly info: ModelInfo,
    private readonly engineDefaults: { kvDtype: DType; prefillChunk: number },
  ) {
    this.engine = new Engine(ctx, config, weights, { ...engineDefaults, maxContext: checkMaxContext(info.maxContext, config.maxPositions) });
    this.solo = new Sequence(this.engine, this.engine.admit());
  }

  /** Throws ERR_GLM4_DISPOSED once the model was disposed. */
  check(): void {
    if (this.disposed) throw new Glm4Error("ERR_GLM4_DISPOSED", "this model was disposed; load it again");
  }

  /** Runs fn with exclusive use of the model (nothing else on its context interleaves). */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.run(fn);
  }

  /** Device memory this model holds (bytes now and at the peak) and freed blocks its allocator keeps for reuse. */
  memory(): { inUse: number; peak: number; cached: number } {
    this.check();
    const m = this.ctx.memory();
    return { inUse: m.inUse, peak: m.peak, cached: m.cached };
  }

  needTokenizer(): Glm4Tokenizer {
    if (!this.tokenizer) throw new Glm4Error("ERR_GLM4_BAD_TOKENIZER", "this model has no tokenizer (synthetic model); pass token ids instead of text");
    return this.tokenizer;
  }

  /**
   * A new engine on this model's context and weights: `maxBatch` slots (default 1), each sequence up to
   * `maxContext` tokens (default the model's), a paged KV cache sized by `kv` (lib/engine/kv-cache.ts KvPoolOptions:
   * default, room for every slot at maxContext; gpuMemoryUtilization sizes it from the device's memory now, keeping
   * room for the engine's scratch); freed by `releaseEngine` or with the model.
   */
  newEngine(o: { maxBatch?: number; maxContext?: number } & KvPoolOptions = {}): Engine {
    this.check();
    const maxContext = checkMaxContext(o.maxContext ?? this.info.maxContext, this.config.maxPositions);
    const maxBatch = o.maxBatch ?? 1;
    const dflt = maxBatch * Math.ceil(maxContext / KV_BLOCK) + 1;
    const dev = this.info.device.startsWith("cuda") ? native().devices()[Number(this.info.device.slice(5))] : undefined;
    const kvBlocks = kvBlocksFor(o, this.config, this.engineDefaults.kvDtype, dflt, dev && { totalMemory: dev.totalMemory, freeMemory: dev.freeMemory, reserveBytes: engineScratchBytes(this.config, maxBatch, this.engineDefaults.prefillChunk) });
    const e = new Engine(this.ctx, this.config, this.weights, { ...this.engineDefaults, maxContext, maxBatch, kvBlocks });
    this.engines.add(e);
    return e;
  }

  /** A sequence with a KV cache of its own (a one-slot engine; free it with releaseEngine(seq.engine)). */
  newSequence(maxContext?: number): Sequence {
    const e = this.newEngine({ maxContext });
    return new Sequence(e, e.admit());
  }

  /** Frees an engine from `newEngine` or `newSequence` once the work queued before has finished. */
  async releaseEngine(e: Engine): Promise<void> {
    if (!this.engines.delete(e)) return;
    await this.queue.run(async () => e.dispose());
  }

  /** A Generation of `ids` on `seq` with this model's tokenizer and eos ids (not started). */
  generation(seq: SequenceEngine, ids: readonly number[], opts: CheckedGenerateOptions, onChunk?: (c: TextChunk) => void): Generation {
    return new Generation(seq, this.tokenizer, this.config.eosTokenIds, ids, opts, { onText: opts.onTextChunk, onChunk });
  }

  /**
   * Runs one generation on `seq` through the queue. With `reuse`, the prompt's longest prefix already in the
   * sequence's cache is kept (usage.cachedTokens) instead of clearing the cache.
   */
  run(seq: Sequence, prompt: string | readonly number[], options: GenerateOptions, how: { reuse?: boolean; onChunk?: (c: TextChunk) => void } = {}): Promise<GenerateResult> {
    const opts = checkGenerateOptions(options);
    this.check();
    const ids = typeof prompt === "string" ? this.needTokenizer().encode(prompt) : Array.from(prompt);
    if (ids.length === 0) throw new RangeError("the prompt is empty: give at least one token");
    return this.queue.run(() => {
      this.check();
      return this.generation(seq, ids, opts, how.onChunk).run(how.reuse ?? false);
    });
  }

  /** Logits of every position of `tokens` as a fresh sequence: Float32Array of tokens.length × vocabSize. */
  async logits(tokens: readonly number[]): Promise<Float32Array> {
    this.check();
    return this.queue.run(async () => {
      const seq = this.solo;
      seq.reset();
      const t = await seq.prefillAll(tokens);
      try {
        return t.read() as Float32Array;
      } finally {
        t.dispose();
        seq.reset();
      }
    });
  }

  /** Frees the device memory; later calls throw ERR_GLM4_DISPOSED. Other models are unaffected. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    await this.queue.run(async () => {
      this.disposed = true;
      for (const e of this.engines) e.dispose();
      this.engines.clear();
      this.engine.dispose();
      disposeWeights(this.weights);
      this.ctx.dispose();
    });
  }
}
