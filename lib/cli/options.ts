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

/** Loads the model the LOAD_OPTIONS name (or a synthetic one), with a progress bar. */
export async function loadFromOpts(o: Opts, synthetic?: string) {
  const { loadGlm4 } = await import("../glm4.js");
  const model = o.model as string | undefined;
  if (!model && !synthetic) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", "--model DIR is required (the folder with config.json and the *.safetensors files)");
  const bar = await progressBar();
  try {
    return await loadGlm4(model ?? null, {
      device: (o.device as "auto") ?? "auto",
      quantization: (o.quantization as "int4") ?? "int4",
      groupSize: numOpt(o, "group-size") as 128 | undefined,
      scheme: o.scheme as "asym" | undefined,
      outputLayer: o["output-layer"] as "int4" | undefined,
      maxContext: numOpt(o, "max-context"),
      threads: numOpt(o, "threads"),
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
