/** `glm4-int4 serve --model DIR` — the OpenAI-compatible server (lib/serve/server.ts) on one model. */
import { parseArgs } from "node:util";
import { Glm4Error } from "../errors.js";
import { LOAD_OPTIONS, loadFromOptsChecked, numOpt } from "./options.js";
import type { Glm4Model } from "../glm4.js";

type Opts = Record<string, string | boolean | undefined>;

const HELP = `glm4-int4 serve --model DIR [options]

  --host H                 address to bind (default 127.0.0.1; 0.0.0.0 exposes the server to the network)
  --port N                 default 8000 (0: any free port)
  --api-key KEY            require "Authorization: Bearer KEY" on /v1/* (default: none; also GLM4_API_KEY)
  --model-name NAME        model id in /v1/models and responses (default: config.json's _name_or_path when it is
                           a model id, else the checkpoint folder's name; "original"/"hf" give the folder above)
  --max-prompt-tokens N    longest prompt accepted (default: the context minus one)
  --max-tokens N           largest max_tokens a request may ask (default 2048; the default of chat requests)
  --max-concurrent N       sequences generating at once: rows of one batched decode step (default 32 on a GPU, 4 on the CPU)
  --max-queue N            requests waiting for a slot; more get 429 (default 64)
  --gpu-memory-utilization F  share of the GPU's memory the process may use; the paged KV cache takes what the
                           model leaves of it (default 0.9)
  --kv-blocks N            the KV cache in blocks of 64 tokens instead (every sequence takes blocks as it grows)
  --step-tokens N          tokens one scheduler tick feeds: a token per stream, the rest prompt chunks (default 512)
  --synthetic glm-4-9b     serve GLM-4-9B's shapes with random weights instead of --model (load tests: token-id
                           prompts on /v1/completions only)
  --body-limit SIZE        largest request body, e.g. 8MB (default), 512KB, or bytes; larger ones get 413
  --shutdown-timeout S     on SIGTERM/SIGINT: seconds running requests get to finish (default 5); the queue gets
                           503 at once, idle connections close; then the rest end with a final chunk and [DONE].
                           A second signal ends them at once. The server also stops when its parent process dies
                           (npx, a supervisor killed with SIGKILL): it is never left orphaned.
  --log                    log requests (JSON lines on stdout)
  --device, --quantization, --group-size, --max-context, --threads   as for generate
`;

function int(o: Opts, name: string): number | undefined {
  const v = o[name];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== "string" || !/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n)) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `--${name} must be a non-negative integer, got ${String(v)}`);
  return n;
}

/** A size like 8MB, 512KB, 1GiB or a number of bytes (at least 1 KiB). */
function sizeOpt(v: string, name: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|kib|mib|gib)?$/i.exec(v.trim());
  const mult: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30 };
  const n = m ? Math.floor(Number(m[1]) * mult[(m[2] ?? "b").toLowerCase()]) : NaN;
  if (!(n >= 1024 && Number.isSafeInteger(n))) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `--${name} must be a size of at least 1KiB like 8MB, 512KB or a number of bytes, got ${JSON.stringify(v)}`);
  return n;
}

export async function cmdServe(argv: string[], load: (o: Opts, synthetic?: string) => Promise<Glm4Model>): Promise<void> {
  const { values: o } = parseArgs({
    args: argv,
    options: {
      ...LOAD_OPTIONS,
      host: { type: "string" },
      port: { type: "string" },
      "api-key": { type: "string" },
      "model-name": { type: "string" },
      "max-prompt-tokens": { type: "string" },
      "max-tokens": { type: "string" },
      "max-concurrent": { type: "string" },
      "max-queue": { type: "string" },
      "gpu-memory-utilization": { type: "string" },
      "kv-blocks": { type: "string" },
      "step-tokens": { type: "string" },
      synthetic: { type: "string" },
      "body-limit": { type: "string" },
      "shutdown-timeout": { type: "string" },
      log: { type: "boolean" },
    },
  });
  if (o.help) return void process.stdout.write(HELP);
  const port = int(o, "port") ?? 8000;
  if (port > 65535) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `--port must be at most 65535, got ${port}`);
  const opts = {
    apiKey: (o["api-key"] as string | undefined) ?? (process.env.GLM4_API_KEY || undefined),
    modelName: o["model-name"] as string | undefined,
    maxPromptTokens: int(o, "max-prompt-tokens"),
    maxTokens: int(o, "max-tokens"),
    maxConcurrent: int(o, "max-concurrent"),
    maxQueue: int(o, "max-queue"),
    kvBlocks: int(o, "kv-blocks"),
    stepTokens: int(o, "step-tokens"),
    gpuMemoryUtilization: o["gpu-memory-utilization"] === undefined ? undefined : Number(o["gpu-memory-utilization"]),
    bodyLimit: o["body-limit"] === undefined ? undefined : sizeOpt(String(o["body-limit"]), "body-limit"),
    shutdownTimeoutMs: 1000 * (numOpt(o, "shutdown-timeout", { min: 0, max: 86400 }) ?? 5),
    logger: o.log === true,
  };
  loadFromOptsChecked(o);
  const synthetic = o.synthetic as string | undefined;
  if (synthetic !== undefined && synthetic !== "glm-4-9b") throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `--synthetic must be glm-4-9b, got ${synthetic}`);
  const { createServer, servedModelName, forceShutdown } = await import("../serve/server.js");
  const model = await load(o, synthetic);
  let app;
  try {
    app = createServer(model, opts);
  } catch (e) {
    await model.dispose();
    throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", (e as Error).message);
  }
  const host = (o.host as string | undefined) ?? "127.0.0.1";
  await app.listen({ host, port });
  const addr = app.server.address();
  const where = typeof addr === "object" && addr ? `http://${addr.family === "IPv6" ? `[${addr.address}]` : addr.address}:${addr.port}` : String(addr);
  process.stderr.write(`glm4-int4 serve: ${where}/v1 (model ${JSON.stringify(servedModelName(model, opts))}${opts.apiKey ? ", API key required" : ""}) [${model.device}, ${model.info.quantization}]\n`);
  // Shutdown: the first SIGTERM/SIGINT closes the server gracefully (createServer's doc comment says how); a
  // second one ends the running requests at once. If the parent process dies (npx or a supervisor that does not
  // pass the signal on), the server stops as on SIGTERM instead of living on as an orphan.
  const parent = process.ppid;
  let signals = 0;
  const why = await new Promise<string>((resolve) => {
    const onSignal = (sig: string) => {
      if (++signals === 1) resolve(sig);
      else {
        process.stderr.write(`glm4-int4 serve: ${sig} again: ending the running requests now\n`);
        void forceShutdown(app);
      }
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    const watch = setInterval(() => {
      if (process.ppid !== parent) onSignal("parent process gone");
    }, 500);
    watch.unref();
  });
  process.stderr.write(`glm4-int4 serve: stopping (${why}): the queue gets 503, running requests get ${opts.shutdownTimeoutMs / 1000} s; send the signal again to end them now\n`);
  await app.close();
  await model.dispose();
  process.stderr.write("glm4-int4 serve: stopped\n");
  process.exit(0);
}