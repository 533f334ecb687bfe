/** `glm4-int4 serve --model DIR` — the OpenAI-compatible server (lib/serve/server.ts) on one model. */
import { parseArgs } from "node:util";
import { Glm4Error } from "../errors.js";
import { LOAD_OPTIONS } from "./options.js";
import type { Glm4Model } from "../glm4.js";

type Opts = Record<string, string | boolean | undefined>;

const HELP = `glm4-int4 serve --model DIR [options]

  --host H                 address to bind (default 127.0.0.1; 0.0.0.0 exposes the server to the network)
  --port N                 default 8000 (0: any free port)
  --api-key KEY            require "Authorization: Bearer KEY" on /v1/* (default: none; also GLM4_API_KEY)
  --model-name NAME        model id in /v1/models and responses (default: the folder's name)
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
    logger: o.log === true,
  };
  const synthetic = o.synthetic as string | undefined;
  if (synthetic !== undefined && synthetic !== "glm-4-9b") throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `--synthetic must be glm-4-9b, got ${synthetic}`);
  const { createServer, servedModelName } = await import("../serve/server.js");
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
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.removeListener("SIGINT", stop);
      process.removeListener("SIGTERM", stop);
      resolve();
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
  process.stderr.write("glm4-int4 serve: stopping\n");
  await app.close();
  await model.dispose();
}
