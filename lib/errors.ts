/**
 * Errors thrown by glm4-int4-native. Every error has a stable `code`; the message says what was wrong and
 * what to do. Native errors arrive as plain Errors with a `code` (from csrc/core/error.h) and are wrapped
 * into Glm4Error by `wrapNative`.
 */
export type Glm4ErrorCode =
  | "ERR_GLM4_INVALID_ARGUMENT"
  | "ERR_GLM4_SHAPE_MISMATCH"
  | "ERR_GLM4_DTYPE_MISMATCH"
  | "ERR_GLM4_DEVICE_MISMATCH"
  | "ERR_GLM4_OUT_OF_MEMORY"
  | "ERR_GLM4_CUDA"
  | "ERR_GLM4_NO_CUDA"
  | "ERR_GLM4_DISPOSED"
  | "ERR_GLM4_INTERNAL"
  | "ERR_GLM4_UNSUPPORTED"
  | "ERR_GLM4_NATIVE_LOAD"
  // files and checkpoints
  | "ERR_GLM4_FILE_NOT_FOUND"
  | "ERR_GLM4_BAD_SAFETENSORS"
  | "ERR_GLM4_BAD_INDEX"
  | "ERR_GLM4_MISSING_SHARD"
  | "ERR_GLM4_MISSING_TENSOR"
  | "ERR_GLM4_BAD_CONFIG"
  | "ERR_GLM4_BAD_TOKENIZER"
  | "ERR_GLM4_UNKNOWN_DTYPE"
  | "ERR_GLM4_DUPLICATE_TENSOR"
  | "ERR_GLM4_UNEXPECTED_TENSOR"
  | "ERR_GLM4_UNSAFE_PATH"
  | "ERR_GLM4_BAD_QUANTIZATION"
  | "ERR_GLM4_OUTPUT_EXISTS"
  | "ERR_GLM4_ABORTED"
  | "ERR_GLM4_CONTEXT_FULL"
  | "ERR_GLM4_KV_CACHE_FULL"
  // a model produced NaN or Inf logits (eval)
  | "ERR_GLM4_BAD_OUTPUT"
  // the server is shutting down: the request was not started
  | "ERR_GLM4_SHUTTING_DOWN";

export class Glm4Error extends Error {
  readonly code: Glm4ErrorCode;
  constructor(code: Glm4ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "Glm4Error";
    this.code = code;
  }
}

/** Turn an error thrown by the addon (an Error with a string `code`) into a Glm4Error; others pass through. */
export function wrapNative(e: unknown): unknown {
  if (e instanceof Glm4Error) return e;
  const code = e instanceof Error ? (e as unknown as { code?: unknown }).code : undefined;
  if (e instanceof Error && typeof code === "string" && code.startsWith("ERR_GLM4_")) {
    return new Glm4Error(code as Glm4ErrorCode, e.message, { cause: e });
  }
  return e;
}
