/**
 * `glm4-int4 eval --model DIR --text FILE [--context N] [--settings asym-g128,nf4-g64,...] [--compare DIR ...]
 * [--max-windows N] [--json FILE] [--device D] [--threads N]`: the BF16 checkpoint in DIR against INT4 versions of
 * itself and other checkpoints (lib/quant/eval.ts); a table on stdout, the report as JSON with --json, a progress bar
 * on stderr when it is a terminal.
 */
import { readFile, writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { Glm4Error } from "../errors.js";
import { evaluate, formatEvalReport, parseSettings, type EvalProgress } from "../quant/eval.js";
import type { DeviceOption } from "../engine/device.js";
import { numOpt } from "./options.js";

export const EVAL_HELP = `glm4-int4 eval --model DIR --text FILE [options]
  Scores the BF16 checkpoint in DIR against INT4 versions of itself (quantized at load) and other checkpoints, on
  the text in FILE cut into windows of --context tokens: perplexity and its ratio to BF16, KL divergence of the
  next-token distributions (mean, median, 99th percentile, max), same top token share, RMS change of the right
  token's probability.
  --settings LIST      comma-separated <scheme>[-g<group>][-out-<int4|bf16>], scheme asym|sym|nf4, group 32|64|128
                       (default asym-g128 when no --compare is given)
  --compare DIR        another checkpoint to score against BF16 (an INT4 checkpoint of quantize, a GPTQ export);
                       may be repeated
  --context N          tokens per window (default 512)
  --max-windows N      score only the first N windows
  --json FILE          also write the report as JSON
  --device, --threads  as for the other commands
  --synthetic glm-4-9b [--tokens N]   GLM-4-9B's shapes with random weights and N random tokens (default 1024):
                       a GPU check of the machinery and its speed, no checkpoint needed
`;

async function evalBar(): Promise<{ update: (p: EvalProgress) => void; stop: () => void }> {
  if (!process.stderr.isTTY) return { update: () => undefined, stop: () => undefined };
  const { default: cliProgress } = await import("cli-progress");
  const bar = new cliProgress.SingleBar(
    { stream: process.stderr, format: "eval [{bar}] {value}/{total} windows | {eta_formatted}", hideCursor: true, clearOnComplete: true },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update: (p) => {
      if (p.stage === "loading") {
        process.stderr.write(`loaded ${p.model}\n`);
        return;
      }
      if (!started) {
        bar.start(p.total, 0);
        started = true;
      }
      bar.update(p.done);
    },
    stop: () => started && bar.stop(),
  };
}

export async function cmdEval(argv: string[]): Promise<void> {
  const { values: o } = parseArgs({
    args: argv,
    options: {
      model: { type: "string" },
      text: { type: "string" },
      synthetic: { type: "string" },
      tokens: { type: "string" },
      context: { type: "string" },
      settings: { type: "string" },
      compare: { type: "string", multiple: true },
      "max-windows": { type: "string" },
      json: { type: "string" },
      device: { type: "string" },
      threads: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (o.help) return void process.stdout.write(EVAL_HELP);
  const int = (name: string) => {
    const v = numOpt(o as Record<string, string | undefined>, name);
    if (v !== undefined && !(Number.isInteger(v) && v > 0)) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `--${name} must be a positive integer, got ${String(o[name as keyof typeof o])}`);
    return v;
  };
  const context = int("context");
  if (context !== undefined && context < 2) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `--context must be at least 2, got ${context}`);
  let text: string | undefined;
  let tokens: number[] | undefined;
  if (o.synthetic !== undefined) {
    // GLM-4-9B's shapes with random weights (a GPU speed and machinery check): --tokens N random token ids
    if (o.synthetic !== "glm-4-9b") throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `--synthetic must be glm-4-9b, got ${o.synthetic}`);
    if (o.model !== undefined || o.text !== undefined) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", "--synthetic takes no --model or --text (give --tokens N)");
    const n = int("tokens") ?? 1024;
    let seed = 12345;
    tokens = Array.from({ length: n }, () => ((seed = (seed * 1103515245 + 12345) % 2147483648), seed % 151329));
  } else {
    if (typeof o.model !== "string") throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", "eval needs --model DIR (the BF16 checkpoint, the reference)");
    if (typeof o.text !== "string") throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", "eval needs --text FILE (the text to score, UTF-8)");
    try {
      text = await readFile(o.text, "utf8");
    } catch (e) {
      throw new Glm4Error("ERR_GLM4_FILE_NOT_FOUND", `${o.text}: cannot be read (${(e as Error).message}); pass a UTF-8 text file`);
    }
  }
  const settings = o.settings === undefined ? undefined : o.settings.split(",").filter((s) => s.trim() !== "").map(parseSettings);
  const bar = await evalBar();
  let report;
  try {
    report = await evaluate(o.synthetic ? null : (o.model as string), {
      ...(tokens ? { tokens, synthetic: "glm-4-9b" as const } : { text }),
      context,
      maxWindows: int("max-windows"),
      settings,
      compare: o.compare,
      device: (o.device as DeviceOption | undefined) ?? "auto",
      threads: int("threads"),
      onProgress: bar.update,
    });
  } finally {
    bar.stop();
  }
  process.stdout.write(formatEvalReport(report) + "\n");
  if (o.json) await writeFile(o.json, JSON.stringify(report, null, 2) + "\n");
}
