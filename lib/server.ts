/** `glm4-int4-native/server` (package.json "exports"): the OpenAI-compatible server, lib/serve/server.ts. */
export * from "./serve/server.js";
