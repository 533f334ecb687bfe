/**
 * glm4-int4 — command line: the dispatcher (one file per command beside it in lib/cli/; the bin entry is
 * lib/cli.ts).
 *   glm4-int4 generate --model DIR --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P]
 *                      [--min-p P] [--repetition-penalty R] [--seed S] [--device auto|cpu|cuda] [--quantization int4|none]
 *   glm4-int4 inspect --model DIR [--max-context N]
 *   glm4-int4 inspect gpu
 *   glm4-int4 quantize --model DIR --out DIR [--group-size 32|64|128] [--force] [--device D] [--max-shard-size 2GB]
 *   glm4-int4 eval --model DIR --text FILE [--context N] [--settings asym-g128,...] [--compare DIR] [--json FILE]
 *   glm4-int4 bench [--model DIR | --synthetic glm-4-9b] [--json] ...
 *   glm4-int4 chat --model DIR ...                 (lib/cli/chat.ts)
 *   glm4-int4 serve --model DIR [--port N] ...     (lib/cli/serve.ts)
 *   glm4-int4 bench-serve --base-url URL ...       (lib/cli/bench-serve.ts: load benchmark of a running server)
 *   glm4-int4 --version
 * `glm4-int4 <command> --help` prints the command's options. Errors print one line (`glm4-int4: CODE: the file and
 * the problem`) and exit with status 1.
 */
import { Glm4Error } from "../errors.js";
import { HELP } from "./help.js";
import { loadFromOpts, progressBar } from "./options.js";
import { packageVersion } from "../util.js";

async function main(): Promise<void> {
  const [cmd, ...rest] = process.argv.slice(2);
  switch (cmd) {
    case "generate": {
      const { cmdGenerate } = await import("./generate.js");
      return cmdGenerate(rest, loadFromOpts);
    }
    case "inspect": {
      const { cmdInspect } = await import("./inspect.js");
      return cmdInspect(rest);
    }
    case "quantize": {
      const { cmdQuantize } = await import("./quantize.js");
      return cmdQuantize(rest, progressBar);
    }
    case "eval": {
      const { cmdEval } = await import("./eval.js");
      return cmdEval(rest);
    }
    case "bench": {
      const { cmdBench } = await import("./bench.js");
      return cmdBench(rest);
    }
    case "bench-serve": {
      const { cmdBenchServe } = await import("./bench-serve.js");
      return cmdBenchServe(rest);
    }
    case "chat": {
      const { cmdChat } = await import("./chat.js");
      return cmdChat(rest, loadFromOpts);
    }
    case "serve": {
      const { cmdServe } = await import("./serve.js");
      return cmdServe(rest, loadFromOpts);
    }
    case "--version":
    case "-v":
    case "version":
      process.stdout.write(`glm4-int4 ${packageVersion()}\n`);
      return;
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

/**
 * The one line an error prints: `glm4-int4: CODE: message`, with exactly one code. Glm4Errors carry theirs; a
 * TypeError/RangeError from an argument check is ERR_GLM4_INVALID_ARGUMENT; node's own errors (ENOENT,
 * EADDRINUSE, ...) already start their message with the code, which is not repeated; parseArgs' complaints
 * (unknown option, missing value) are invalid arguments.
 */
export function errorLine(e: unknown): string {
  const err = e as { code?: unknown; message?: unknown };
  let message = typeof err?.message === "string" ? err.message : String(e);
  let code = typeof err?.code === "string" ? err.code : "";
  if (code.startsWith("ERR_PARSE_ARGS_")) code = "ERR_GLM4_INVALID_ARGUMENT";
  else if (!code && (e instanceof RangeError || e instanceof TypeError)) code = "ERR_GLM4_INVALID_ARGUMENT";
  else if (!code) code = "ERR_GLM4_INTERNAL";
  if (message.startsWith(`${code}: `) || message.startsWith(`${code}:`)) message = message.slice(code.length + 1).trimStart();
  return `glm4-int4: ${code}: ${message.split("\n")[0]}`;
}

main().catch((e: unknown) => {
  process.stderr.write(errorLine(e) + "\n");
  if (process.env.GLM4_DEBUG) console.error(e);
  process.exitCode = 1;
});