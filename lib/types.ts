/**
 * The public API's option and result types (re-exported by lib/index.ts). A leaf module: the facade, sessions,
 * the generation loop and the server all import these types from here, so none of them needs another's module.
 */
import type { Quantization } from "./engine/weights.js";
import type { DeviceOption } from "./engine/device.js";
import type { LoadProgress } from "./engine/loader.js";
import type { Int4Scheme, OutputLayer } from "./checkpoint/int4-format.js";

export interface LoadOptions {
  /** "auto" (default): the first GPU where the addon has CUDA and one is present, else the CPU. */
  device?: DeviceOption;
  /** "int4" (default): linear layers quantized at load (group `groupSize`); "none": bf16 weights, the reference. */
  quantization?: Quantization;
  /** INT4 group size: 128 (default), 64 or 32. */
  groupSize?: 32 | 64 | 128;
  /**
   * INT4 codes (load-time quantization): "asym" (default; scale and zero from each group's min and max), "sym"
   * (zero 8, scale from the absolute maximum), "nf4" (bitsandbytes' NormalFloat4 values times the absolute maximum).
   * An INT4 checkpoint keeps the scheme it was written with (asking for another one is an error).
   */
  scheme?: Int4Scheme;
  /** The output layer quantized like the others ("int4", default) or kept in bf16 ("bf16": +0.9 GiB on GLM-4-9B). */
  outputLayer?: OutputLayer;
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

/** What a loaded model is: where it came from, where it runs, and how it was loaded. */
export interface ModelInfo {
  /** The checkpoint directory (null for a synthetic model). */
  dir: string | null;
  device: string;
  quantization: Quantization;
  groupSize: number;
  /** INT4 models: the scheme and the output layer's precision. */
  scheme?: Int4Scheme;
  outputLayer?: OutputLayer;
  /** An INT4 checkpoint whose activation-aware scales were folded in (quantize --awq). */
  awq?: boolean;
  /** KV-cache capacity of the model's own sequence, and the default of sessions and the server's slots. */
  maxContext: number;
}
