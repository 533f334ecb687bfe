/** Option specs and parsing shared by the glm4-int4 subcommands (node:util parseArgs), and the load they drive. */
import { Glm4Error } from "../errors.js";

export type Opts = Record<string, string | boolean | undefined>;

/** How to load a model: every command that loads one takes these. */
export const LOAD_OPTIONS = {
  model: { type: "string" },
  device: { type: "string" },
  quantization: { type: "string" },
  "group-size": { type: "string" },
  scheme: { type: "string" },
  "output-layer": { type: "string" },
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

export interface NumSpec {
  /** Whole numbers only. */
  int?: boolean;
  min?: number;
  max?: number;
  /** Allowed values (e.g. group sizes). */
  oneOf?: readonly number[];
}

/**
 * A numeric option, or undefined when absent; text that is not a number in range is a one-line
 * ERR_GLM4_INVALID_ARGUMENT naming the option (before anything is loaded or printed).
 */
export function numOpt(o: Opts, name: string, spec: NumSpec = {}): number | undefined {
  const v = o[name];
  if (v === undefined) return undefined;
  const n = typeof v === "string" && v.trim() !== "" ? Number(v) : NaN;
  const what = spec.oneOf ? `one of ${spec.oneOf.join(", ")}` : `${spec.int ? "an integer" : "a number"}${spec.min !== undefined && spec.max !== undefined ? ` in [${spec.min}, ${spec.max}]` : spec.min !== undefined ? ` >= ${spec.min}` : spec.max !== undefined ? ` <= ${spec.max}` : ""}`;
  const ok = Number.isFinite(n) && (!spec.int || Number.isSafeInteger(n)) && (spec.min === undefined || n >= spec.min) && (spec.max === undefined || n <= spec.max) && (!spec.oneOf || spec.oneOf.includes(n));
  if (!ok) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `--${name} must be ${what}, got ${JSON.stringify(String(v))}`);
  return n;
}

/** A list option ("128,2048") of integers in [min, max], or undefined when absent. */
export function listOpt(o: Opts, name: string, min: number, max: number): number[] | undefined {
  const v = o[name];
  if (v === undefined) return undefined;
  const parts = String(v).split(",");
  return parts.map((p) => numOpt({ [name]: p }, name, { int: true, min, max })!);
}

/** The load options of LOAD_OPTIONS, checked (device name, numbers in range) before anything is loaded. */
export function loadFromOptsChecked(o: Opts) {
  const device = (o.device as string | undefined) ?? "auto";
  if (!/^(auto|cpu|cuda|cuda:\d{1,4})$/.test(device)) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `--device must be auto, cpu, cuda or cuda:N, got ${JSON.stringify(device)}`);
  const quantization = (o.quantization as string | undefined) ?? "int4";
  if (quantization !== "int4" && quantization !== "none") throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `--quantization must be int4 or none, got ${JSON.stringify(quantization)}`);
  return {
    device: device as "auto" | "cpu" | "cuda" | `cuda:${number}`,
    quantization: quantization as "int4" | "none",
    groupSize: numOpt(o, "group-size", { oneOf: [32, 64, 128] }) as 32 | 64 | 128 | undefined,
    maxContext: numOpt(o, "max-context", { int: true, min: 1, max: 1 << 24 }),
    threads: numOpt(o, "threads", { int: true, min: 1, max: 1024 }),
  };
}

/** The generation options of SAMPLING_OPTIONS as GenerateOptions fields (each checked against its range). */
export function samplingFromOpts(o: Opts) {
  return {
    maxNewTokens: numOpt(o, "max-new-tokens", { int: true, min: 0, max: 1 << 20 }),
    temperature: numOpt(o, "temperature", { min: 0, max: 100 }),
    topK: numOpt(o, "top-k", { int: true, min: 0, max: 1 << 20 }),
    topP: numOpt(o, "top-p", { min: 0, max: 1 }),
    minP: numOpt(o, "min-p", { min: 0, max: 1 }),
    repetitionPenalty: numOpt(o, "repetition-penalty", { min: 0.01, max: 100 }),
    seed: numOpt(o, "seed", { int: true, min: 0 }),
  };
}

/** Loads the model the LOAD_OPTIONS name (or a synthetic one), with a progress bar. */
export async function loadFromOpts(o: Opts, synthetic?: string) {
  const { loadGlm4 } = await import("../glm4.js");
  const model = o.model as string | undefined;
  if (!model && !synthetic) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", "--model DIR is required (the folder with config.json and the *.safetensors files)");
  const lo = loadFromOptsChecked(o);
  const bar = await progressBar();
  try {
    return await loadGlm4(model ?? null, {
      ...lo,
      scheme: o.scheme as "asym" | undefined,
      outputLayer: o["output-layer"] as "int4" | undefined,
      synthetic: synthetic as "glm-4-9b" | undefined,
      onProgress: bar.update,
    });
  } finally {
    bar.stop();
  }
}

/** A progress bar on stderr when it is a terminal (cli-progress), silent otherwise. */
export async function progressBar(label = "loading"): Promise<{ update: (p: { loaded: number; total: number; stage: string }) => void; stop: () => void }> {
  if (!process.stderr.isTTY) return { update: () => undefined, stop: () => undefined };
  const { default: cliProgress } = await import("cli-progress");
  const bar = new cliProgress.SingleBar(
    { stream: process.stderr, format: `${label} [{bar}] {percentage}% | {value}/{total} MiB | {eta_formatted}`, hideCursor: true, clearOnComplete: true },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update: (p) => {
      const mib = (b: number) => Math.round(b / 2 ** 20);
      if (!started) {
        bar.start(mib(p.total), 0);
        started = true;
      }
      bar.update(mib(p.loaded));
    },
    stop: () => started && bar.stop(),
  };
}
