#!/usr/bin/env node
/**
 * glm4-int4 — command line.
 *   glm4-int4 generate --model DIR --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P]
 *                      [--min-p P] [--repetition-penalty R] [--seed S] [--device auto|cpu|cuda] [--quantization int4|none]
 *   glm4-int4 inspect --model DIR [--max-context N]
 *   glm4-int4 inspect gpu
 *   glm4-int4 quantize --model DIR --out DIR [--group-size 32|64|128] [--force] [--device D] [--max-shard-size 2GB]
 *   glm4-int4 bench [--model DIR | --synthetic glm-4-9b] [--json] ...
 *   glm4-int4 chat --model DIR ...                 (lib/chat-cli.ts)
 *   glm4-int4 serve --model DIR [--port N] ...     (lib/serve-cli.ts)
 * Errors print one line (the file and the problem) and exit with status 1.
 */
import { parseArgs } from "node:util";
import { Glm4Error } from "./errors.js";
import { LOAD_OPTIONS, SAMPLING_OPTIONS, numOpt, samplingFromOpts, type Opts } from "./cli-options.js";

const HELP = `glm4-int4 <command> [options]

Commands:
  generate   --model DIR --prompt TEXT   generate a continuation and print tokens per second
  chat       --model DIR                 interactive chat (/reset, /exit; Ctrl-C stops the reply)
  serve      --model DIR [--port 8000]   OpenAI-compatible server (/v1/chat/completions, /v1/completions)
  inspect    --model DIR | gpu           what a checkpoint holds, or what the GPU setup is
  quantize   --model DIR --out DIR       write an INT4 checkpoint (--group-size, --force to replace --out)
  bench      [--model DIR]               prefill/decode speed, memory and share of the hardware limit

Common options:
  --device auto|cpu|cuda|cuda:N   (default auto)
  --quantization int4|none        (default int4)
  --group-size 32|64|128          (default 128)
  --max-context N                 (default min(8192, model context))
`;

const intOpt = numOpt;

async function loadFromOpts(o: Opts, synthetic?: string) {
  const { loadGlm4 } = await import("./glm4.js");
  const model = o.model as string | undefined;
  if (!model && !synthetic) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", "--model DIR is required (the folder with config.json and the *.safetensors files)");
  const bar = await progressBar();
  try {
    return await loadGlm4(model ?? null, {
      device: (o.device as "auto") ?? "auto",
      quantization: (o.quantization as "int4") ?? "int4",
      groupSize: intOpt(o, "group-size") as 128 | undefined,
      maxContext: intOpt(o, "max-context"),
      threads: intOpt(o, "threads"),
      synthetic: synthetic as "glm-4-9b" | undefined,
      onProgress: bar.update,
    });
  } finally {
    bar.stop();
  }
}

/** A progress bar on stderr when it is a terminal (cli-progress), silent otherwise. */
async function progressBar(label = "loading"): Promise<{ update: (p: { loaded: number; total: number; stage: string }) => void; stop: () => void }> {
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

async function cmdGenerate(argv: string[]): Promise<void> {
  const { values: o } = parseArgs({
    args: argv,
    options: {
      ...LOAD_OPTIONS,
      ...SAMPLING_OPTIONS,
      prompt: { type: "string", short: "p" },
      synthetic: { type: "string" },
      chat: { type: "boolean" },
    },
  });
  if (o.help) return void process.stdout.write(HELP);
  if (typeof o.prompt !== "string") throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", "--prompt TEXT is required");
  const model = await loadFromOpts(o, o.synthetic as string | undefined);
  try {
    const ac = new AbortController();
    const onSig = () => ac.abort();
    process.once("SIGINT", onSig);
    const gen = {
      ...samplingFromOpts(o),
      maxNewTokens: intOpt(o, "max-new-tokens") ?? 64,
      signal: ac.signal,
    };
    let result;
    if (o.chat) {
      const it = model.chat([{ role: "user", content: o.prompt }], gen);
      let r = await it.next();
      while (!r.done) {
        process.stdout.write(r.value.text);
        r = await it.next();
      }
      result = r.value;
    } else {
      process.stdout.write(o.prompt);
      result = await model.generate(o.prompt, { ...gen, onTextChunk: (t) => process.stdout.write(t) });
    }
    process.removeListener("SIGINT", onSig);
    process.stdout.write("\n");
    const t = result.timings;
    process.stderr.write(
      `[${model.device}, ${model.info.quantization}] prompt ${result.usage.promptTokens} tokens, prefill ${t.prefillTokensPerSecond.toFixed(1)} tok/s; ` +
        `generated ${result.usage.completionTokens} tokens at ${t.decodeTokensPerSecond.toFixed(1)} tok/s (${result.finishReason})\n`,
    );
  } finally {
    await model.dispose();
  }
}

async function main(): Promise<void> {
  const [cmd, ...rest] = process.argv.slice(2);
  switch (cmd) {
    case "generate":
      return cmdGenerate(rest);
    case "inspect": {
      const { cmdInspect } = await import("./inspect.js");
      return cmdInspect(rest);
    }
    case "quantize": {
      const { cmdQuantize } = await import("./quantize.js");
      return cmdQuantize(rest, progressBar);
    }
    case "bench": {
      const { cmdBench } = await import("./bench.js");
      return cmdBench(rest);
    }
    case "chat": {
      const { cmdChat } = await import("./chat-cli.js");
      return cmdChat(rest, loadFromOpts);
    }
    case "serve": {
      const { cmdServe } = await import("./serve-cli.js");
      return cmdServe(rest, loadFromOpts);
    }
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(HELP);
      return;
    default:
      throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `unknown command "${cmd}"; run glm4-int4 --help`);
  }
}

main().catch((e: unknown) => {
  const err = e as { code?: string; message?: string };
  process.stderr.write(`glm4-int4: ${err.code ? `${err.code}: ` : ""}${err.message ?? String(e)}\n`);
  if (process.env.GLM4_DEBUG) console.error(e);
  process.exitCode = 1;
});
