/**
 * The user-facing model: `loadGlm4(dir, options)` and what it returns. A thin facade over the runtime
 * (lib/engine/runtime.ts), which owns the context, weights, work queue and engines.
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
import { detectPrequantized } from "./checkpoint/prequantized.js";
import { int4Settings, recordSettings } from "./checkpoint/int4-format.js";
import { native } from "./engine/native-binary.js";
import { disposeWeights, repackForKernels, type ModelWeights } from "./engine/weights.js";
import { checkDevice, checkThreads, createContext, resolveDevice } from "./engine/device.js";
import { glm4_9bConfig, loadCheckpointWeights, syntheticWeights } from "./engine/loader.js";
import { streamChunks } from "./engine/generation.js";
import { checkMaxContext } from "./engine/kv-cache.js";
import { estimateMemory } from "./engine/memory.js";
import { Runtime } from "./engine/runtime.js";
import { Glm4Tokenizer } from "./text/tokenizer.js";
import { buildChatPrompt, chatStopIds, type ChatMessage } from "./text/chat-format.js";
import { Session, type SessionOptions } from "./session.js";
import type { GenerateOptions, GenerateResult, LoadOptions, ModelInfo, TextChunk } from "./types.js";

export { sampleHost } from "./engine/generation.js";
export { estimateMemory } from "./engine/memory.js";
export type { LoadOptions, GenerateOptions, GenerateResult, TextChunk, FinishReason, ModelInfo } from "./types.js";

export class Glm4Model {
  /** @internal use loadGlm4 */
  constructor(
    /** @internal the layer under this facade (the server's scheduler, the bench and tests work on it). */
    readonly runtime: Runtime,
  ) {}

  get config(): Glm4Config {
    return this.runtime.config;
  }

  get tokenizer(): Glm4Tokenizer | null {
    return this.runtime.tokenizer;
  }

  get info(): ModelInfo {
    return this.runtime.info;
  }

  get device(): string {
    return this.runtime.info.device;
  }

  /**
   * Device memory this model holds: bytes in use now and at the peak, and freed GPU blocks its allocator keeps for
   * reuse (a prefill chunk's scratch; counted as free memory by the devices() listing).
   */
  memory(): { inUse: number; peak: number; cached: number } {
    return this.runtime.memory();
  }

  /** Logits of every position of `tokens` as a fresh sequence: Float32Array of tokens.length × vocabSize. */
  async logits(tokens: readonly number[]): Promise<Float32Array> {
    return this.runtime.logits(tokens);
  }

  /** Generates a continuation of `prompt` (text, or token ids used as they are). */
  async generate(prompt: string | readonly number[], options: GenerateOptions = {}): Promise<GenerateResult> {
    return this.runtime.run(this.runtime.solo, prompt, options);
  }

  /** Streams the continuation as text chunks (each with its token ids). */
  stream(prompt: string | readonly number[], options: GenerateOptions = {}): AsyncGenerator<TextChunk, GenerateResult, undefined> {
    return streamChunks((onChunk) => this.runtime.run(this.runtime.solo, prompt, options, { onChunk }));
  }

  /** Chat in GLM-4's format; streams the reply. Stops on <|user|>, <|observation|> and <|endoftext|>. */
  chat(messages: ChatMessage[], options: GenerateOptions = {}): AsyncGenerator<TextChunk, GenerateResult, undefined> {
    const tok = this.runtime.needTokenizer();
    const ids = buildChatPrompt(tok, messages);
    const stop = [...(options.stop ?? []), ...chatStopIds(tok)];
    return this.stream(ids, { temperature: 0.8, topP: 0.8, ...options, stop });
  }

  /**
   * A conversation with its own KV cache (sharing this model's weights): each turn prefills only the tokens
   * that are not in the cache yet. Sessions run through the model's queue like every other call.
   */
  createSession(options: SessionOptions = {}): Session {
    this.runtime.check();
    return new Session(this.runtime, options);
  }

  /** Frees the device memory; later calls throw ERR_GLM4_DISPOSED. Other models are unaffected. */
  async dispose(): Promise<void> {
    await this.runtime.dispose();
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
  const { groupSize, scheme, outputLayer } = int4Settings(options);
  checkDevice(options.device ?? "auto");
  checkThreads(options.threads);
  const prefillChunk = options.prefillChunk ?? 512;
  if (!Number.isInteger(prefillChunk) || prefillChunk < 1) throw new RangeError(`prefillChunk must be a positive integer, got ${String(prefillChunk)}`);

  const cfg = synthetic ? glm4_9bConfig() : await readConfig(dir!);
  const pre = synthetic ? null : await detectPrequantized(dir!, { quantization, groupSize: options.groupSize, scheme: options.scheme, outputLayer: options.outputLayer }); // glm4_int4.json or GPTQ: loaded as INT4 directly
  const maxContext = checkMaxContext(options.maxContext ?? Math.min(8192, cfg.maxPositions), cfg.maxPositions);
  const tokenizer = synthetic ? null : await Glm4Tokenizer.fromDir(dir!);
  tokenizer?.checkFitsModel(cfg.vocabSize, path.join(dir!, "config.json"));
  const device = resolveDevice(options.device ?? "auto");
  const onGpu = device.startsWith("cuda");

  if (onGpu) {
    const need = estimateMemory(cfg, { quantization, groupSize, maxContext, prefillChunk, kvBytes: 2, outputLayer: pre?.kind === "glm4-int4" ? recordSettings(pre.record).outputLayer : outputLayer });
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
    const wopts = { quantization, groupSize: pre?.groupSize ?? groupSize, scheme, outputLayer, onProgress: options.onProgress, signal: options.signal };
    weights = synthetic ? await syntheticWeights(cfg, ctx, { ...wopts, seed: options.syntheticSeed }) : pre ? await pre.load(cfg, ctx, wopts) : await loadCheckpointWeights(dir!, cfg, ctx, wopts);
    // INT4 linears into the CUDA kernel layout (layout 1). GLM4_INT4_LAYOUT=0 keeps the canonical layout on CUDA, so
    // the CUDA-core kernels that ran before the tensor-core GEMV/GEMMs serve it (the bench's comparison point and a
    // fallback; integer codes only: NF4 needs layout 1).
    if (onGpu && process.env.GLM4_INT4_LAYOUT !== "0") await repackForKernels(ctx, weights);
    // Load-time transients (BF16 tensors being quantized, repack sources) sized like no later allocation: give the
    // blocks the allocator kept back to the driver, so that the KV pool and other processes can have them.
    ctx.flush();
    ctx.trimCache();
    // The embedding table's copy in page-locked host memory that the device gathers rows from (prompts, decode
    // rounds), made here so the first request does not pay for it (GLM4_EMBED_GATHER=host: never made).
    if (onGpu && process.env.GLM4_EMBED_GATHER !== "host") weights.embed.onDevice(ctx);
    const settings = pre?.kind === "glm4-int4" ? recordSettings(pre.record) : { groupSize: wopts.groupSize, scheme, outputLayer };
    const info = {
      dir: synthetic ? null : path.resolve(dir!),
      device,
      quantization,
      groupSize: wopts.groupSize,
      ...(quantization === "int4" ? { scheme: settings.scheme, outputLayer: settings.outputLayer } : {}),
      ...(pre?.kind === "glm4-int4" && pre.record.awq ? { awq: true } : {}),
      maxContext,
    };
    const rt = new Runtime(ctx, cfg, weights, tokenizer, info, { kvDtype: onGpu ? "bf16" : "f32", prefillChunk });
    await ctx.flushAsync();
    return new Glm4Model(rt);
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
