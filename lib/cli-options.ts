/** Option specs and parsing shared by the glm4-int4 subcommands (node:util parseArgs). */
import { Glm4Error } from "./errors.js";

export type Opts = Record<string, string | boolean | undefined>;

/** How to load a model: every command that loads one takes these. */
export const LOAD_OPTIONS = {
  model: { type: "string" },
  device: { type: "string" },
  quantization: { type: "string" },
  "group-size": { type: "string" },
  "max-context": { type: "string" },
  threads: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** Generation options (names as in the API, kebab-cased). */
export const SAMPLING_OPTIONS = {
  "max-new-tokens": { type: "string" },
  temperature: { type: "string" },
  "top-k": { type: "string" },
  "top-p": { type: "string" },
  "min-p": { type: "string" },
  "repetition-penalty": { type: "string" },
  seed: { type: "string" },
} as const;

/** A numeric option, or undefined when absent; anything else is a one-line ERR_GLM4_INVALID_ARGUMENT. */
export function numOpt(o: Opts, name: string): number | undefined {
  const v = o[name];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== "string" || v.trim() === "" || !Number.isFinite(n)) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `--${name} must be a number, got ${String(v)}`);
  return n;
}

/** The generation options of SAMPLING_OPTIONS as GenerateOptions fields. */
export function samplingFromOpts(o: Opts) {
  return {
    maxNewTokens: numOpt(o, "max-new-tokens"),
    temperature: numOpt(o, "temperature"),
    topK: numOpt(o, "top-k"),
    topP: numOpt(o, "top-p"),
    minP: numOpt(o, "min-p"),
    repetitionPenalty: numOpt(o, "repetition-penalty"),
    seed: numOpt(o, "seed"),
  };
}
