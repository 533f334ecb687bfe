/** glm4-int4-native: GLM-4-9B(-chat) at 4 bits from Node.js. */
export { loadGlm4, Glm4Model, estimateMemory, sampleHost } from "./glm4.js";
export type { LoadOptions, GenerateOptions, GenerateResult, TextChunk, FinishReason } from "./glm4.js";
export { Session } from "./session.js";
export type { SessionOptions } from "./session.js";
export type { LoadProgress, DeviceOption } from "./loader.js";
export { quantizeCheckpoint } from "./quantize.js";
export type { QuantizeOptions, QuantizeResult, QuantizeProgress } from "./quantize.js";
export { Glm4Error } from "./errors.js";
export type { Glm4ErrorCode } from "./errors.js";
export { buildInfo, devices } from "./native.js";
export type { BuildInfo, DeviceInfo } from "./native.js";
export { Glm4Tokenizer } from "./tokenizer.js";
export { buildChatPrompt, chatStopIds } from "./chat-format.js";
export type { ChatMessage, ChatRole } from "./chat-format.js";
export { buildToolPrompt, parseReply, toolsSystemText, toolCallTurns, checkTools } from "./tools.js";
export type { Tool, ToolCall, Glm4Turn, ParsedReply, ToolPromptOptions } from "./tools.js";
export { readConfig, normalizeConfig } from "./config.js";
export type { Glm4Config } from "./config.js";
