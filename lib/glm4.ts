/**
 * The user-facing model: `loadGlm4(dir, options)` and what it returns.
 *
 *   const model = await loadGlm4("/models/glm-4-9b-chat");
 *   const r = await model.generate("你好", { maxNewTokens: 64 });
 *   for await (const chunk of model.chat([{ role: "user", content: "你好" }])) process.stdout.write(chunk.text);
 *   await model.dispose();
 */
import { existsSync, statSync } from "node:fs";
import path from "node:path";
import { Glm4Error, wrapNative } from "./errors.js";
import { readConfig, type Glm4Config } from "./checkpoint/config.js";
import { native } from "./engine/native-binary.js";
import type { NativeContext } from "./engine/native.js";
import { Engine } from "./engine/engine.js";
import { disposeWeights, type ModelWeights, type Quantization } from "./engine/weights.js";
import { createContext, resolveDevice, type DeviceOption } from "./engine/device.js";
import { glm4_9bConfig, loadCheckpointWeights, syntheticWeights, type LoadProgress } from "./engine/loader.js";
import { Glm4Tokenizer } from "./text/tokenizer.js";
import { detectPrequantized } from "./checkpoint/prequantized.js";
import { buildChatPrompt, chatStopIds, type ChatMessage } from "./text/chat-format.js";
import { Generation, checkGenerateOptions, streamChunks, type CheckedGenerateOptions, type SequenceEngine } from "./engine/generation.js";
import { BatchEngine } from "./engine/batch-engine.js";
import { Session, type SessionOptions } from "./session.js";
import { estimateMemory } from "./engine/memory.js";

export { sampleHost } from "./engine/generation.js";
export { estimateMemory } from "./engine/memory.js";

export interface LoadOptions {
  /** "auto" (default): the first GPU where the addon has CUDA and one is present, else the CPU. */
  device?: DeviceOption;
  /** "int4" (default): linear layers quantized at load (group `groupSize`); "none": bf16 weights, the reference. */
  quantization?: Quantization;
  /** INT4 group size: 128 (default), 64 or 32. */
  groupSize?: 32 | 64 | 128;
  /** KV-cache capacity in tokens (default: min(8192, the model's context)). */
  maxContext?: number;
  /** Tokens per prefill chunk (default 512). */
  prefillChunk?: number;
  /** CPU worker threads (default: all cores). */
  threads?: number;
  /** Build GLM-4-9B's exact shapes with random weights on the device instead of reading `dir`. */
  synthetic?: "glm-4-9b";
  /** Seed of the synthetic weights (default 1234). */
  syntheticSeed?: number;
  onProgress?: (p: LoadProgress) => void;
  signal?: AbortSignal;
}

export interface GenerateOptions {
  /** Tokens to generate at most (default 256). */
  maxNewTokens?: number;
  /** 0 = greedy (default 0 for generate, 0.8 for chat). */
  temperature?: number;
  /** Keep the k most likely tokens (0 = off, default). */
  topK?: number;
  /** Nucleus sampling mass (1 = off, default). */
  topP?: number;
  /** Drop tokens below minP times the best token's probability (0 = off, default). */
  minP?: number;
  /** Penalize tokens already in the sequence (1 = off, default); > 1 discourages repeats. */
  repetitionPenalty?: number;
  /** Seed of the sampler: same seed, same prompt, same options → same output (default: random). */
  seed?: number;
  /** Stop strings (not included in the output) and extra stop token ids. */
  stop?: (string | number)[];
  /** Cancels generation; the result so far is returned with finishReason "abort". */
  signal?: AbortSignal;
  /** Called with each new piece of text as it is decoded. */
  onTextChunk?: (text: string) => void;
}

export type FinishReason = "stop" | "length" | "abort";

export interface GenerateResult {
  text: string;
  tokens: number[];
  finishReason: FinishReason;
  /** cachedTokens: prompt tokens that were already in the KV cache (a session's earlier turns), not prefilled again. */
  usage: { promptTokens: number; completionTokens: number; totalTokens: number; cachedTokens: number };
  timings: { prefillMs: number; decodeMs: number; prefillTokensPerSecond: number; decodeTokensPerSecond: number };
}

export interface TextChunk {
  text: string;
  tokens: number[];
}

/** Serializes work on one model: calls wait for the previous one (all engines of a model share one context and stream). */
class Queue {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.tail.then(fn, fn);
    this.tail = p.catch(() => undefined);
    return p;
  }
}

export class Glm4Model {
  private readonly queue = new Queue();
  private disposed = false;
  /** Engines of sessions and the server's batch engines (freed with the model). */
  private readonly engines = new Set<Engine | BatchEngine>();

  /** @internal use loadGlm4 */
  constructor(
    readonly config: Glm4Config,
    readonly tokenizer: Glm4Tokenizer | null,
    private readonly ctx: NativeContext,
    private readonly weights: ModelWeights,
    private readonly engine: Engine,
    readonly info: { dir: string | null; device: string; quantization: Quantization; groupSize: number; maxContext: number },
  ) {}

  get device(): string {
    return this.info.device;
  }

  /** @internal for the bench and tests: the context, the engine and the weights. */
  _internals(): { ctx: NativeContext; engine: Engine; weights: ModelWeights } {
    this.check();
    return { ctx: this.ctx, engine: this.engine, weights: this.weights };
  }

  /** Runs fn with exclusive use of the model (no generate interleaves). @internal */
  _exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.run(fn);
  }

  /** Device memory this model holds (bytes now and at the peak). */
  memory(): { inUse: number; peak: number } {
    this.check();
    const m = this.ctx.memory();
    return { inUse: m.inUse, peak: m.peak };
  }

  private check(): void {
    if (this.disposed) throw new Glm4Error("ERR_GLM4_DISPOSED", "this model was disposed; load it again");
  }

  private needTokenizer(): Glm4Tokenizer {
    if (!this.tokenizer) throw new Glm4Error("ERR_GLM4_BAD_TOKENIZER", "this model has no tokenizer (synthetic model); pass token ids instead of text");
    return this.tokenizer;
  }

  /** Logits of every position of `tokens` as a fresh sequence: Float32Array of tokens.length × vocabSize. */
  async logits(tokens: readonly number[]): Promise<Float32Array> {
    this.check();
    return this.queue.run(async () => {
      this.engine.reset();
      const t = await this.engine.prefill(tokens, true);
      try {
        return t.read() as Float32Array;
      } finally {
        t.dispose();
        this.engine.reset();
      }
    });
  }

  /** Generates a continuation of `prompt` (text, or token ids used as they are). */
  async generate(prompt: string | readonly number[], options: GenerateOptions = {}): Promise<GenerateResult> {
    return this._run(this.engine, prompt, options);
  }

  /** Streams the continuation as text chunks (each with its token ids). */
  stream(prompt: string | readonly number[], options: GenerateOptions = {}): AsyncGenerator<TextChunk, GenerateResult, undefined> {
    return streamChunks((onChunk) => this._run(this.engine, prompt, options, { onChunk }));
  }

  /** Chat in GLM-4's format; streams the reply. Stops on <|user|>, <|observation|> and <|endoftext|>. */
  chat(messages: ChatMessage[], options: GenerateOptions = {}): AsyncGenerator<TextChunk, GenerateResult, undefined> {
    const tok = this.needTokenizer();
    const ids = buildChatPrompt(tok, messages);
    const stop = [...(options.stop ?? []), ...chatStopIds(tok)];
    return this.stream(ids, { temperature: 0.8, topP: 0.8, ...options, stop });
  }

  /**
   * A conversation with its own KV cache (sharing this model's weights): each turn prefills only the tokens
   * that are not in the cache yet. Sessions run through the model's queue like every other call.
   */
  createSession(options: SessionOptions = {}): Session {
    this.check();
    return new Session(this, options);
  }

  /**
   * A new engine (its own KV cache of `maxContext` tokens, default the model's) on this model's context and
   * weights; freed by `_releaseEngine` or with the model. @internal for sessions and the server.
   */
  _newEngine(maxContext = this.info.maxContext): Engine {
    this.check();
    if (!Number.isInteger(maxContext) || maxContext < 1 || maxContext > this.config.maxPositions) {
      throw new RangeError(`maxContext must be an integer in [1, ${this.config.maxPositions}], got ${String(maxContext)}`);
    }
    const e = new Engine(this.ctx, this.config, this.weights, { ...this.engine.opts, maxContext });
    this.engines.add(e);
    return e;
  }

  /**
   * A batch engine: `maxBatch` sequences in slots of one shared KV cache (each slot `maxContext` tokens), decoded
   * together one step at a time; freed by `_releaseEngine` or with the model. @internal for the server.
   */
  _newBatchEngine(maxBatch: number, maxContext = this.info.maxContext): BatchEngine {
    this.check();
    if (!Number.isInteger(maxContext) || maxContext < 1 || maxContext > this.config.maxPositions) {
      throw new RangeError(`maxContext must be an integer in [1, ${this.config.maxPositions}], got ${String(maxContext)}`);
    }
    const e = new BatchEngine(this.ctx, this.config, this.weights, { ...this.engine.opts, maxContext, maxBatch });
    this.engines.add(e);
    return e;
  }

  /** Frees an engine from `_newEngine` or `_newBatchEngine` once the work queued before has finished. @internal */
  async _releaseEngine(e: Engine | BatchEngine): Promise<void> {
    if (!this.engines.delete(e)) return;
    await this.queue.run(async () => e.dispose());
  }

  /**
   * Runs one generation on `engine` through the queue. With `reuse`, the prompt's longest prefix already in
   * the engine's cache is kept (usage.cachedTokens) instead of clearing the cache. @internal
   */
  _run(engine: Engine, prompt: string | readonly number[], options: GenerateOptions, how: { reuse?: boolean; onChunk?: (c: TextChunk) => void } = {}): Promise<GenerateResult> {
    const opts = checkGenerateOptions(options);
    this.check();
    const ids = typeof prompt === "string" ? this.needTokenizer().encode(prompt) : Array.from(prompt);
    if (ids.length === 0) throw new RangeError("the prompt is empty: give at least one token");
    return this.queue.run(() => {
      this.check();
      return this._generation(engine, ids, opts, how.onChunk).run(how.reuse ?? false);
    });
  }

  /** A Generation of `ids` on `engine` with this model's tokenizer and eos ids (not started). @internal */
  _generation(engine: SequenceEngine, ids: readonly number[], opts: CheckedGenerateOptions, onChunk?: (c: TextChunk) => void): Generation {
    return new Generation(engine, this.tokenizer, this.config.eosTokenIds, ids, opts, { onText: opts.onTextChunk, onChunk });
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

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

function gib(b: number): string {
  return `${(b / 2 ** 30).toFixed(2)} GiB`;
}

/**
 * Loads GLM-4 from a directory (original THUDM or HF naming; sharded safetensors), quantizing linear layers
 * to INT4 on the way unless `quantization: "none"`.
 */
export async function loadGlm4(dir: string | null, options: LoadOptions = {}): Promise<Glm4Model> {
  const synthetic = options.synthetic;
  if (synthetic !== undefined && synthetic !== "glm-4-9b") throw new TypeError(`synthetic must be "glm-4-9b", got ${String(synthetic)}`);
  if (!synthetic) {
    if (typeof dir !== "string" || dir.length === 0) throw new TypeError("loadGlm4(dir): dir must be the path of a checkpoint directory");
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Glm4Error("ERR_GLM4_FILE_NOT_FOUND", `${dir}: no such directory; pass the folder that holds config.json and the *.safetensors files`);
  }
  const quantization = options.quantization ?? "int4";
  if (quantization !== "int4" && quantization !== "none") throw new TypeError(`quantization must be "int4" or "none", got ${String(quantization)}`);
  const groupSize = options.groupSize ?? 128;
  if (![32, 64, 128].includes(groupSize)) throw new RangeError(`groupSize must be 32, 64 or 128, got ${String(groupSize)}`);
  const prefillChunk = options.prefillChunk ?? 512;
  if (!Number.isInteger(prefillChunk) || prefillChunk < 1) throw new RangeError(`prefillChunk must be a positive integer, got ${String(prefillChunk)}`);

  const cfg = synthetic ? glm4_9bConfig() : await readConfig(dir!);
  const pre = synthetic ? null : await detectPrequantized(dir!, { quantization, groupSize: options.groupSize }); // glm4_int4.json or GPTQ: loaded as INT4 directly
  const maxContext = options.maxContext ?? Math.min(8192, cfg.maxPositions);
  if (!Number.isInteger(maxContext) || maxContext < 1 || maxContext > cfg.maxPositions) throw new RangeError(`maxContext must be an integer in [1, ${cfg.maxPositions}], got ${String(maxContext)}`);
  const tokenizer = synthetic ? null : await Glm4Tokenizer.fromDir(dir!);
  const device = resolveDevice(options.device ?? "auto");
  const onGpu = device.startsWith("cuda");

  if (onGpu) {
    const need = estimateMemory(cfg, { quantization, groupSize, maxContext, prefillChunk, kvBytes: 2 });
    const idx = Number(device.slice(5));
    const free = native().devices()[idx]?.freeMemory ?? 0;
    if (need.total > free) {
      throw new Glm4Error(
        "ERR_GLM4_OUT_OF_MEMORY",
        `loading needs about ${gib(need.total)} on ${device} (weights ${gib(need.weights)}, KV cache ${gib(need.kvCache)} for maxContext ${maxContext}, scratch ${gib(need.scratch)}, largest tensor in flight ${gib(need.transient)}) but ${gib(free)} is free. Lower maxContext, free GPU memory, or use device "cpu".`,
      );
    }
  }

  const ctx = createContext(device, options.threads);
  let weights: ModelWeights | undefined;
  try {
    const wopts = { quantization, groupSize: pre?.groupSize ?? (groupSize as 32 | 64 | 128), onProgress: options.onProgress, signal: options.signal };
    weights = synthetic ? await syntheticWeights(cfg, ctx, { ...wopts, seed: options.syntheticSeed }) : pre ? await pre.load(cfg, ctx, wopts) : await loadCheckpointWeights(dir!, cfg, ctx, wopts);
    const engine = new Engine(ctx, cfg, weights, { maxContext, kvDtype: onGpu ? "bf16" : "f32", prefillChunk });
    ctx.flush();
    return new Glm4Model(cfg, tokenizer, ctx, weights, engine, { dir: synthetic ? null : path.resolve(dir!), device, quantization, groupSize: wopts.groupSize, maxContext });
  } catch (e) {
    if (weights) disposeWeights(weights);
    try {
      ctx.dispose();
    } catch {
      /* the original error matters more */
    }
    throw wrapNative(e);
  }
}
