/**
 * An OpenAI-compatible HTTP server for one model (fastify).
 * (Over 500 lines: the routes share one request lifecycle -- auth, limits, queueing, streaming, shutdown drain --
 * whose pieces read the same per-request state; the scheduler, metrics and chat formatting live apart.)
 *
 *   const app = createServer(model, { apiKey: "sk-local", maxConcurrent: 4 });
 *   await app.listen({ host: "127.0.0.1", port: 8000 });
 *
 * Routes: POST /v1/chat/completions, POST /v1/completions (both streamed as server-sent events when
 * `stream: true`, in OpenAI's chunk format, ending with `data: [DONE]`), GET /v1/models, GET /v1/models/:id,
 * GET /health (no key needed: the scheduler's state and the KV-cache pool), GET /metrics (no key needed: Prometheus text,
 * lib/serve/metrics.ts). Errors use OpenAI's shape `{error: {message, type, param, code}}`: 400 for a
 * bad request (also n > 1, a prompt over the limit, options this server lacks), 401 for a missing or wrong
 * key (when `apiKey` is set), 404, 429 when every slot is busy and the queue is full.
 *
 * Requests go through a Scheduler (lib/serve/scheduler.ts): `maxConcurrent` sequences, the slots of one engine
 * (continuous batching: one batched decode step a tick for all of them, prompts in chunks under a token budget),
 * over a paged KV cache sized from the device's free memory by default (gpuMemoryUtilization 0.9; on the CPU: room
 * for every slot at maxContext); others wait in a queue of at most `maxQueue`. A client that disconnects aborts
 * its generation, which frees its KV blocks at once.
 *
 * A model without a tokenizer (synthetic) serves /v1/completions with token-id prompts only; its replies have no
 * text (each token is a chunk with empty text; usage counts them): for load tests.
 *
 * Request options: max_tokens (or max_completion_tokens), temperature (0-2), top_p, seed, stop (string or up
 * to 4 strings), n (1 only), stream, stream_options.include_usage, tools and tool_choice (chat), echo
 * (completions), and the extensions top_k, min_p, repetition_penalty. presence/frequency penalties other than
 * 0, logprobs, best_of > 1, suffix and response_format other than text are refused with 400. The `model`
 * field is not checked: whatever the client names, this server's model answers (its id is in the response).
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import path from "node:path";
import Fastify, { type FastifyInstance, type FastifyReply } from "fastify";
import { chatStopIds, type ChatTokenizer } from "../text/chat-format.js";
import type { Glm4Tokenizer } from "../text/tokenizer.js";
import { Glm4Error } from "../errors.js";
import type { Glm4Model } from "../glm4.js";
import type { GenerateOptions, GenerateResult } from "../types.js";
import { QueueFullError, Scheduler } from "./scheduler.js";
import { ServerMetrics } from "./metrics.js";
import { buildToolPrompt, checkTools, parseReply, toolCallTurns, type Glm4Turn, type Tool, type ToolCall } from "../text/tools.js";

export interface ServerOptions {
  /** Require `Authorization: Bearer <apiKey>` on /v1/* (default: no key). */
  apiKey?: string;
  /** The model id reported by /v1/models and in responses (default: the checkpoint folder's name). */
  modelName?: string;
  /** Longest prompt accepted, in tokens (default and upper bound: a slot's context minus one). */
  maxPromptTokens?: number;
  /** Largest max_tokens a request may ask for, and the default of chat requests (default 2048). */
  maxTokens?: number;
  /** Sequences generating at once (default 4): the rows of the batched decode step. */
  maxConcurrent?: number;
  /**
   * Share of the GPU's memory the process may use in all; the KV-cache pool takes what the model leaves of it
   * (default 0.9 when neither kvBlocks nor kvCacheBytes is given; ignored on the CPU).
   */
  gpuMemoryUtilization?: number;
  /** The KV-cache pool in blocks of 64 tokens (instead of sizing it from free memory). */
  kvBlocks?: number;
  /** The KV-cache pool in bytes (instead of sizing it from free memory). */
  kvCacheBytes?: number;
  /** Tokens a scheduler tick feeds through the model: decode rows, then prompt chunks (default 512). */
  stepTokens?: number;
  /** Requests waiting for a slot at most; beyond that 429 (default 64). */
  maxQueue?: number;
  /** Longest sequence (prompt and reply) in tokens (default: the model's maxContext). */
  maxContext?: number;
  /**
   * Largest request body in bytes (fastify's bodyLimit; default 8 MiB, a few times the text of the longest prompt
   * a GLM-4 context holds); a larger one is refused with 413 before it is parsed.
   */
  bodyLimit?: number;
  /**
   * Milliseconds that running requests get to finish when the server closes (default 5000); then they are ended
   * with what they generated (a final chunk and `[DONE]` for streams).
   */
  shutdownTimeoutMs?: number;
  /** fastify's logger (default false). */
  logger?: boolean;
}

/** An error answered in OpenAI's shape. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = "invalid_request_error",
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Extra response headers (Retry-After on 429 and 503). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
  body() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** Default request body limit: 8 MiB. */
export const DEFAULT_BODY_LIMIT = 8 * 2 ** 20;

const bad = (message: string, param: string | null = null, code: string | null = null): never => {
  throw new ApiError(400, message, "invalid_request_error", param, code);
};

type Json = Record<string, unknown>;

const isObj = (v: unknown): v is Json => v !== null && typeof v === "object" && !Array.isArray(v);

function numberIn(body: Json, name: string, lo: number, hi: number, opts: { int?: boolean } = {}): number | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || v < lo || v > hi || (opts.int && !Number.isInteger(v))) {
    bad(`${name} must be ${opts.int ? "an integer" : "a number"} between ${lo} and ${hi}, got ${JSON.stringify(v)}`, name, "invalid_value");
  }
  return v as number;
}

/** The generation options common to both endpoints. */
function samplingOptions(body: Json, defaults: { temperature: number; topP: number; maxTokens: number }, cap: number): GenerateOptions {
  const n = numberIn(body, "n", 1, 128, { int: true });
  if (n !== undefined && n !== 1) bad("n must be 1: this server generates one choice per request", "n", "unsupported_value");
  for (const p of ["presence_penalty", "frequency_penalty"]) {
    const v = numberIn(body, p, -2, 2);
    if (v !== undefined && v !== 0) bad(`${p} is not supported; use repetition_penalty (1 = off, > 1 discourages repeats)`, p, "unsupported_parameter");
  }
  if (body.logprobs !== undefined && body.logprobs !== null && body.logprobs !== false) bad("logprobs are not supported", "logprobs", "unsupported_parameter");
  if (body.top_logprobs !== undefined && body.top_logprobs !== null) bad("top_logprobs are not supported", "top_logprobs", "unsupported_parameter");
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== "boolean") bad("stream must be a boolean", "stream");
  if (body.stream_options !== undefined && body.stream_options !== null && !isObj(body.stream_options)) bad("stream_options must be an object", "stream_options");

  const maxName = body.max_completion_tokens !== undefined && body.max_completion_tokens !== null ? "max_completion_tokens" : "max_tokens";
  const maxTokens = numberIn(body, maxName, 1, Number.MAX_SAFE_INTEGER, { int: true });
  if (maxTokens !== undefined && maxTokens > cap) bad(`${maxName} must be at most ${cap} on this server, got ${maxTokens}`, maxName, "invalid_value");
  let temperature = numberIn(body, "temperature", 0, 2) ?? defaults.temperature;
  let topP = numberIn(body, "top_p", 0, 1) ?? defaults.topP;
  if (topP === 0) (temperature = 0), (topP = 1); // nucleus of mass 0: only the best token
  const seed = numberIn(body, "seed", Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, { int: true });
  let stop: string[] = [];
  if (typeof body.stop === "string") stop = [body.stop];
  else if (Array.isArray(body.stop)) {
    if (body.stop.length > 4 || body.stop.some((s) => typeof s !== "string")) bad("stop must be a string or an array of at most 4 strings", "stop");
    stop = body.stop as string[];
  } else if (body.stop !== undefined && body.stop !== null) bad("stop must be a string or an array of at most 4 strings", "stop");
  return {
    maxNewTokens: maxTokens ?? defaults.maxTokens,
    temperature,
    topP,
    topK: numberIn(body, "top_k", 0, 1 << 20, { int: true }) ?? 0,
    minP: numberIn(body, "min_p", 0, 1) ?? 0,
    repetitionPenalty: numberIn(body, "repetition_penalty", 0.01, 100) ?? 1,
    seed: seed === undefined ? undefined : ((seed % 2 ** 32) + 2 ** 32) % 2 ** 32,
    stop: stop.filter((s) => s.length > 0),
  };
}

/** The text of a message's content: a string, or an array of text parts (joined by "\n"). */
function contentText(v: unknown, param: string): string {
  if (v === undefined || v === null) return "";
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    return v
      .map((p, j) => {
        if (isObj(p) && p.type === "text" && typeof p.text === "string") return p.text;
        return bad(`${param}[${j}]: only text parts ({type: "text", text}) are supported`, param, "unsupported_content");
      })
      .join("\n");
  }
  return bad(`${param} must be a string or an array of text parts`, param);
}

/** OpenAI chat messages as GLM-4 turns (tool results become <|observation|>, tool calls assistant metadata). */
export function chatTurns(messages: unknown): Glm4Turn[] {
  if (!Array.isArray(messages) || messages.length === 0) bad("messages must be a non-empty array", "messages");
  const turns: Glm4Turn[] = [];
  (messages as unknown[]).forEach((m, i) => {
    const param = `messages[${i}]`;
    if (!isObj(m)) return bad(`${param} must be an object {role, content}`, param);
    const content = contentText(m.content, `${param}.content`);
    switch (m.role) {
      case "system":
      case "developer":
        turns.push({ role: "system", content });
        break;
      case "user":
        turns.push({ role: "user", content });
        break;
      case "tool":
      case "function":
        turns.push({ role: "observation", content });
        break;
      case "assistant": {
        if (content) turns.push({ role: "assistant", content });
        const calls = m.tool_calls;
        if (calls !== undefined && calls !== null) {
          if (!Array.isArray(calls)) bad(`${param}.tool_calls must be an array`, `${param}.tool_calls`);
          (calls as unknown[]).forEach((c, j) => {
            const fn = isObj(c) ? c.function : undefined;
            if (!isObj(fn) || typeof fn.name !== "string" || typeof fn.arguments !== "string") {
              bad(`${param}.tool_calls[${j}] must be {id, type: "function", function: {name, arguments}}`, `${param}.tool_calls`);
            }
          });
          turns.push(...toolCallTurns(calls as ToolCall[]));
        }
        break;
      }
      default:
        bad(`${param}.role must be one of system, developer, user, assistant, tool; got ${JSON.stringify(m.role)}`, `${param}.role`);
    }
  });
  return turns;
}

/** Which tools the prompt offers and whether a call is forced (tool_choice). */
function toolSetup(body: Json): { offered: Tool[]; force?: string } {
  let tools: Tool[] = [];
  if (body.tools !== undefined && body.tools !== null) {
    try {
      tools = checkTools(body.tools);
    } catch (e) {
      bad((e as Error).message, "tools");
    }
  }
  const choice = body.tool_choice ?? "auto";
  if (choice === "none") return { offered: [] };
  if (choice === "auto") return { offered: tools };
  if (!tools.length) bad("tool_choice needs tools", "tool_choice");
  // GLM-4 has no way to demand "some call": with one tool, "required" forces it; with several the model chooses.
  if (choice === "required") return { offered: tools, force: tools.length === 1 ? tools[0].function.name : undefined };
  if (isObj(choice) && choice.type === "function" && isObj(choice.function) && typeof choice.function.name === "string") {
    const t = tools.find((x) => x.function.name === (choice.function as Json).name);
    if (!t) bad(`tool_choice names ${JSON.stringify(choice.function.name)}, which is not in tools`, "tool_choice");
    return { offered: [t!], force: t!.function.name };
  }
  return bad('tool_choice must be "none", "auto", "required" or {type: "function", function: {name}}', "tool_choice");
}

const finishOf = (r: GenerateResult): "stop" | "length" => (r.finishReason === "length" ? "length" : "stop");

function usageOf(r: GenerateResult) {
  return {
    prompt_tokens: r.usage.promptTokens,
    completion_tokens: r.usage.completionTokens,
    total_tokens: r.usage.totalTokens,
    prompt_tokens_details: { cached_tokens: r.usage.cachedTokens },
  };
}

/**
 * Shapes a chat reply while it streams: drops the "\n" the model writes after <|assistant|>, and holds the
 * text back while it may still become a tool call ("name\n{json}" with a known name), which is only decided
 * at the end. The concatenated content equals parseReply's content for the whole text.
 */
class ChatReply {
  private raw: string;
  private mode: "start" | "text" | "tool";
  private readonly names: string[];
  constructor(tools: readonly Tool[], private readonly forced?: string) {
    this.names = tools.map((t) => t.function.name);
    this.raw = forced !== undefined ? `${forced}\n` : "";
    this.mode = forced !== undefined ? "tool" : "start";
  }
  /** Content to hand out now for the new piece. */
  push(t: string): string {
    this.raw += t;
    if (this.mode === "text") return t;
    if (this.mode === "tool") return "";
    const s = this.raw.trimStart();
    const nl = s.indexOf("\n");
    if (this.names.length) {
      const first = (nl < 0 ? s : s.slice(0, nl)).trim();
      const maybeTool = nl < 0 ? first === "" || this.names.some((n) => n.startsWith(first)) : this.names.includes(first);
      if (maybeTool) {
        if (nl >= 0) this.mode = "tool";
        return "";
      }
    } else if (this.raw === "\n" || this.raw === "") return "";
    this.mode = "text";
    return this.raw.replace(/^\n/, "");
  }
  /** What is left to hand out when the reply ends. */
  end(): { content: string; toolCalls: ToolCall[] } {
    if (this.mode === "text") return { content: "", toolCalls: [] };
    const p = parseReply(this.raw, this.names);
    return { content: p.content ?? "", toolCalls: p.toolCalls };
  }
  /** The whole reply (for a response that is not streamed). */
  static whole(text: string, tools: readonly Tool[], forced?: string): { content: string | null; toolCalls: ToolCall[] } {
    const raw = forced !== undefined ? `${forced}\n${text}` : text;
    return tools.length ? parseReply(raw, tools) : { content: raw.replace(/^\n/, ""), toolCalls: [] };
  }
}

/** `Authorization: Bearer <key>`; the scheme is case-insensitive (RFC 9110), as clients send "bearer" too. */
function keyMatches(given: string | undefined, want: string): boolean {
  const m = given === undefined ? null : /^bearer[ \t]+(.*)$/is.exec(given);
  if (!m) return false;
  const h = (s: string) => createHash("sha256").update(s).digest();
  return timingSafeEqual(h(m[1].trim()), h(want));
}

const newId = (prefix: string) => `${prefix}-${randomBytes(12).toString("hex")}`;

/** Server-sent events on a hijacked reply. */
function sse(reply: FastifyReply) {
  reply.hijack();
  const raw = reply.raw;
  raw.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", connection: "keep-alive", "x-accel-buffering": "no" });
  return {
    send: (o: unknown) => void (raw.writableEnded || raw.destroyed ? undefined : raw.write(`data: ${JSON.stringify(o)}\n\n`)),
    done: () => {
      if (raw.writableEnded || raw.destroyed) return;
      raw.write("data: [DONE]\n\n");
      raw.end();
    },
  };
}

/** An AbortSignal that fires when the client goes away before its response was sent. */
function disconnectSignal(reply: FastifyReply): AbortSignal {
  const ac = new AbortController();
  reply.raw.on("close", () => {
    if (!reply.raw.writableEnded) ac.abort();
  });
  return ac.signal;
}

/**
 * The model id the server reports: options.modelName; else config.json's `_name_or_path` when it is a model id
 * ("THUDM/glm-4-9b-chat"; a path gives its last folder); else the checkpoint folder's name, or the folder above
 * it when that is a generic "original", "hf" or a Hugging Face cache snapshot ("models--THUDM--glm-4-9b-chat"
 * gives "THUDM/glm-4-9b-chat"); "glm-4" for a synthetic model.
 */
export function servedModelName(model: Glm4Model, options: Pick<ServerOptions, "modelName"> = {}): string {
  if (options.modelName !== undefined) return options.modelName;
  const named = model.config.nameOrPath;
  if (named !== undefined) {
    const id = /^[\\/~.]/.test(named) ? path.basename(named.replace(/[\\/]+$/, "")) : named;
    if (/^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9._-]+)?$/.test(id)) return id;
  }
  const dir = model.info.dir;
  if (!dir) return "glm-4";
  const parts = path.resolve(dir).split(path.sep).filter(Boolean);
  const cache = parts.findIndex((p) => p.startsWith("models--"));
  if (cache >= 0 && parts[cache + 1] === "snapshots") return parts[cache].slice(8).replace("--", "/");
  let i = parts.length - 1;
  while (i > 0 && /^(original|hf|int4|gptq|snapshots|[0-9a-f]{40})$/i.test(parts[i])) i--;
  return parts[i] ?? "glm-4";
}

/**
 * A fastify instance serving `model` (not listening yet: call `listen`).
 *
 * Closing it (`app.close()`, which `glm4-int4 serve` does on SIGTERM/SIGINT) shuts down as operators expect: new
 * connections and new requests are refused at once (503), requests waiting in the queue are answered 503 with
 * Retry-After, running requests get `shutdownTimeoutMs` (default 5 s) to finish and are then ended with what they
 * generated (a stream gets its final chunk and `data: [DONE]`), idle keep-alive connections are closed at once,
 * and the KV cache is freed; the model itself stays loaded. Bodies over `bodyLimit` get 413 before they are read
 * whole; a prompt whose text is too long for the context is refused before it is tokenized, and long texts are
 * tokenized in slices between other requests' tokens.
 */
const schedulers = new WeakMap<FastifyInstance, Scheduler>();

/** During a graceful close: ends the running requests now instead of after the grace period (a second signal). */
export async function forceShutdown(app: FastifyInstance): Promise<void> {
  await schedulers.get(app)?.drain(0);
}

export function createServer(model: Glm4Model, options: ServerOptions = {}): FastifyInstance {
  const tokenizer = model.tokenizer;
  if (options.apiKey !== undefined && (typeof options.apiKey !== "string" || options.apiKey === "")) throw new TypeError("apiKey must be a non-empty string");
  const sized = options.kvBlocks !== undefined || options.kvCacheBytes !== undefined || options.gpuMemoryUtilization !== undefined;
  const scheduler = new Scheduler(model, {
    maxConcurrent: options.maxConcurrent,
    maxQueue: options.maxQueue,
    maxContext: options.maxContext,
    stepTokens: options.stepTokens,
    kvBlocks: options.kvBlocks,
    kvCacheBytes: options.kvCacheBytes,
    gpuMemoryUtilization: sized ? options.gpuMemoryUtilization : 0.9,
  });
  const metrics = new ServerMetrics(() => scheduler.stats());
  /** The tokenizer, or a 400 for what a model without one cannot do. */
  const needTok = (what: string) => tokenizer ?? bad(`${what} needs a tokenizer and this model has none (synthetic): send token ids to /v1/completions`, null, "no_tokenizer");
  const maxPrompt = Math.min(options.maxPromptTokens ?? Infinity, scheduler.contextSize - 1);
  if (!(maxPrompt >= 1) || !Number.isInteger(options.maxPromptTokens ?? 1)) throw new RangeError(`maxPromptTokens must be a positive integer, got ${String(options.maxPromptTokens)}`);
  const maxTokens = options.maxTokens ?? 2048;
  if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new RangeError(`maxTokens must be a positive integer, got ${String(options.maxTokens)}`);
  const name = servedModelName(model, options);
  const created = Math.floor(Date.now() / 1000);
  const chatStops = tokenizer ? chatStopIds(tokenizer) : [];

  const bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
  if (!Number.isSafeInteger(bodyLimit) || bodyLimit < 1024) throw new RangeError(`bodyLimit must be an integer number of bytes >= 1024, got ${String(options.bodyLimit)}`);
  const shutdownMs = options.shutdownTimeoutMs ?? 5000;
  if (!Number.isFinite(shutdownMs) || shutdownMs < 0) throw new RangeError(`shutdownTimeoutMs must be a number >= 0, got ${String(options.shutdownTimeoutMs)}`);

  const app = Fastify({ logger: options.logger ?? false, bodyLimit });
  schedulers.set(app, scheduler);

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req, reply) => {
    if (err instanceof ApiError) return reply.code(err.status).headers(err.headers).send(err.body());
    if (err instanceof Glm4Error && (err.code === "ERR_GLM4_SHUTTING_DOWN" || err.code === "ERR_GLM4_DISPOSED")) {
      return reply.code(503).header("retry-after", "5").send(new ApiError(503, "the server is shutting down; retry on another replica or later", "server_error", null, "server_shutting_down").body());
    }
    if (err.code === "FST_ERR_CTP_BODY_TOO_LARGE") {
      return reply.code(413).send(new ApiError(413, `the request body is larger than this server's limit of ${bodyLimit} bytes (--body-limit)`, "invalid_request_error", null, "body_too_large").body());
    }
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    const e = new ApiError(status, status === 500 ? `internal error: ${err.message}` : err.message, status === 500 ? "server_error" : "invalid_request_error", null, err.code ?? null);
    if (status === 500) reply.log.error(err);
    return reply.code(status).send(e.body());
  });
  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send(new ApiError(404, `no route ${req.method} ${req.url}`, "invalid_request_error", null, "not_found").body());
  });
  app.addHook("onRequest", async (req, reply) => {
    if (options.apiKey === undefined || !req.url.startsWith("/v1/")) return;
    if (!keyMatches(req.headers.authorization, options.apiKey)) {
      return reply.code(401).send(new ApiError(401, "missing or wrong API key: send Authorization: Bearer <key>", "invalid_request_error", null, "invalid_api_key").body());
    }
  });
  // Shutdown: fastify refuses new requests (503) once closing starts; before it closes the listening socket (and
  // waits for the open connections), the queue is refused and the running requests get their grace period.
  app.addHook("preClose", async () => {
    await scheduler.drain(shutdownMs);
    app.server.closeIdleConnections(); // keep-alive sockets whose streams just ended: no 72 s wait
  });
  app.addHook("onClose", async () => scheduler.close());

  app.get("/health", async () => ({ status: scheduler.draining ? "draining" : "ok", model: name, device: model.device, ...scheduler.stats() }));
  app.get("/metrics", async (_req, reply) => {
    reply.header("content-type", metrics.registry.contentType);
    return metrics.registry.metrics();
  });

  const modelCard = () => ({ id: name, object: "model", created, owned_by: "glm4-int4-native" });
  app.get("/v1/models", async () => ({ object: "list", data: [modelCard()] }));
  app.get<{ Params: { id: string } }>("/v1/models/:id", async (req) => {
    if (req.params.id !== name) throw new ApiError(404, `the model ${JSON.stringify(req.params.id)} does not exist; this server has ${JSON.stringify(name)}`, "invalid_request_error", "model", "model_not_found");
    return modelCard();
  });

  /**
   * Submits to the scheduler; queue full → 429. onText gets each piece of text (a model without a tokenizer: an
   * empty piece a token, so that streams still carry one chunk a token).
   */
  const submit = (prompt: number[], gen: GenerateOptions, onText?: (t: string) => void): Promise<GenerateResult> => {
    const m = metrics.track();
    let job: Promise<GenerateResult>;
    try {
      job = scheduler.submit({
        prompt,
        options: gen,
        onChunk: (c) => {
          m.chunk(c);
          if (onText && (c.text || (!tokenizer && c.tokens.length))) onText(c.text);
        },
      });
    } catch (e) {
      if (e instanceof QueueFullError) {
        metrics.rejected();
        throw new ApiError(429, e.message, "rate_limit_error", null, "queue_full", { "retry-after": String(e.retryAfterSeconds) });
      }
      throw e;
    }
    job.then(
      (r) => m.end(r, r.finishReason === "abort" ? "aborted" : "completed"),
      (e) => m.end(null, (e as Error)?.name === "AbortError" ? "aborted" : "failed"),
    );
    return job;
  };

  /**
   * The prompt's token ids from what the chat template or the completion encodes (`build` calls tok.encode on
   * each text): refused before any tokenizing when the texts' bytes alone prove it too long (a token is at most
   * maxTokenBytes bytes); long texts tokenized in slices that yield to the event loop, so that other streams and
   * /health go on.
   */
  const encodePrompt = async (tok: Glm4Tokenizer, build: (t: ChatTokenizer) => number[], param: string): Promise<number[]> => {
    const texts: string[] = [];
    build({ encode: (t: string) => (texts.push(t), []), specialTokenId: (n: string) => tok.specialTokenId(n) });
    let atLeast = 0;
    for (const t of texts) atLeast += Math.ceil(Buffer.byteLength(t) / tok.maxTokenBytes);
    if (atLeast > maxPrompt) bad(`the prompt is at least ${atLeast} tokens (from its length alone); this server takes at most ${maxPrompt}`, param, "context_length_exceeded");
    const encoded: number[][] = [];
    for (const t of texts) encoded.push(t.length < 4096 ? tok.encode(t) : await tok.encodeAsync(t));
    let i = 0;
    return build({ encode: () => encoded[i++], specialTokenId: (n: string) => tok.specialTokenId(n) });
  };

  const checkLength = (ids: number[], param: string) => {
    if (ids.length > maxPrompt) {
      bad(`the prompt is ${ids.length} tokens; this server takes at most ${maxPrompt}`, param, "context_length_exceeded");
    }
  };

  app.post("/v1/chat/completions", async (req, reply) => {
    const body = req.body;
    if (!isObj(body)) return bad("the body must be a JSON object");
    if (body.model !== undefined && typeof body.model !== "string") bad("model must be a string", "model");
    const rf = body.response_format;
    if (rf !== undefined && rf !== null && !(isObj(rf) && rf.type === "text")) bad("response_format other than text is not supported", "response_format", "unsupported_parameter");
    const turns = chatTurns(body.messages);
    const { offered, force } = toolSetup(body);
    const gen = samplingOptions(body, { temperature: 0.8, topP: 0.8, maxTokens }, maxTokens);
    const ids = await encodePrompt(needTok("chat"), (t) => buildToolPrompt(t, turns, { tools: offered, forceTool: force }), "messages");
    checkLength(ids, "messages");
    gen.stop = [...(gen.stop ?? []), ...chatStops];
    const signal = disconnectSignal(reply);
    const id = newId("chatcmpl");
    const base = { id, object: "chat.completion.chunk", created: Math.floor(Date.now() / 1000), model: name };

    if (body.stream !== true) {
      let r: GenerateResult;
      try {
        r = await submit(ids, { ...gen, signal });
      } catch (e) {
        if (signal.aborted) return reply.hijack(); // the client is gone
        throw e;
      }
      const { content, toolCalls } = ChatReply.whole(r.text, offered, force);
      const message: Json = { role: "assistant", content: toolCalls.length ? null : content };
      if (toolCalls.length) message.tool_calls = toolCalls;
      return {
        id,
        object: "chat.completion",
        created: base.created,
        model: name,
        choices: [{ index: 0, message, logprobs: null, finish_reason: toolCalls.length ? "tool_calls" : finishOf(r) }],
        usage: usageOf(r),
      };
    }

    const shaper = new ChatReply(offered, force);
    const chunk = (delta: Json, finish: string | null = null) => ({ ...base, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] });
    // The 200 and the event stream start with the first text (or the end): a request refused before that (a full
    // queue: 429; the server shutting down while it waits: 503) gets a plain error response.
    let out: ReturnType<typeof sse> | null = null;
    const open = () => {
      if (!out) {
        out = sse(reply);
        out.send(chunk({ role: "assistant", content: "" }));
      }
      return out;
    };
    const job = submit(ids, { ...gen, signal }, (t) => {
      const c = shaper.push(t);
      if (c) open().send(chunk({ content: c }));
    });
    let r: GenerateResult;
    try {
      r = await job;
    } catch (e) {
      if (out === null) {
        if (signal.aborted) return reply.hijack(); // the client is gone
        throw e;
      }
      if (!signal.aborted) open().send(new ApiError(500, `generation failed: ${(e as Error).message}`, "server_error").body());
      return open().done();
    }
    const o = open();
    const rest = shaper.end();
    if (rest.toolCalls.length) {
      o.send(chunk({ tool_calls: rest.toolCalls.map((tc, index) => ({ index, ...tc })) }));
      o.send(chunk({}, "tool_calls"));
    } else {
      if (rest.content) o.send(chunk({ content: rest.content }));
      o.send(chunk({}, finishOf(r)));
    }
    if (isObj(body.stream_options) && body.stream_options.include_usage === true) o.send({ ...base, choices: [], usage: usageOf(r) });
    o.done();
  });

  app.post("/v1/completions", async (req, reply) => {
    const body = req.body;
    if (!isObj(body)) return bad("the body must be a JSON object");
    if (body.model !== undefined && typeof body.model !== "string") bad("model must be a string", "model");
    if (body.suffix !== undefined && body.suffix !== null) bad("suffix is not supported", "suffix", "unsupported_parameter");
    if (body.best_of !== undefined && body.best_of !== null && body.best_of !== 1) bad("best_of must be 1", "best_of", "unsupported_value");
    let prompt = body.prompt;
    if (Array.isArray(prompt) && (prompt.length === 0 || typeof prompt[0] !== "number")) {
      if (prompt.length !== 1) bad("prompt must be one string or one array of token ids (batches are not supported)", "prompt");
      prompt = prompt[0];
    }
    let ids: number[];
    let promptText: string;
    if (typeof prompt === "string") {
      const text = prompt;
      ids = await encodePrompt(needTok("a text prompt"), (t) => t.encode(text), "prompt");
      promptText = prompt;
    } else if (Array.isArray(prompt) && prompt.every((x) => Number.isInteger(x) && x >= 0 && x < model.config.vocabSize)) {
      ids = prompt as number[];
      promptText = tokenizer ? tokenizer.decode(ids) : "";
    } else return bad(`prompt must be a string or an array of token ids in [0, ${model.config.vocabSize})`, "prompt");
    if (ids.length === 0) bad("the prompt is empty", "prompt");
    checkLength(ids, "prompt");
    if (body.echo !== undefined && body.echo !== null && typeof body.echo !== "boolean") bad("echo must be a boolean", "echo");
    const echo = body.echo === true ? promptText : "";
    const gen = samplingOptions(body, { temperature: 1, topP: 1, maxTokens: Math.min(16, maxTokens) }, maxTokens);
    const signal = disconnectSignal(reply);
    const id = newId("cmpl");
    const base = { id, object: "text_completion", created: Math.floor(Date.now() / 1000), model: name };

    if (body.stream !== true) {
      let r: GenerateResult;
      try {
        r = await submit(ids, { ...gen, signal });
      } catch (e) {
        if (signal.aborted) return reply.hijack();
        throw e;
      }
      return { ...base, choices: [{ text: echo + r.text, index: 0, logprobs: null, finish_reason: finishOf(r) }], usage: usageOf(r) };
    }

    const chunk = (text: string, finish: string | null = null) => ({ ...base, choices: [{ text, index: 0, logprobs: null, finish_reason: finish }] });
    // As for chat: the event stream starts with the first text, so that a refusal before it is a plain error.
    let out: ReturnType<typeof sse> | null = null;
    const open = () => {
      if (!out) {
        out = sse(reply);
        if (echo) out.send(chunk(echo));
      }
      return out;
    };
    const job = submit(ids, { ...gen, signal }, (t) => open().send(chunk(t)));
    let r: GenerateResult;
    try {
      r = await job;
    } catch (e) {
      if (out === null) {
        if (signal.aborted) return reply.hijack();
        throw e;
      }
      if (!signal.aborted) open().send(new ApiError(500, `generation failed: ${(e as Error).message}`, "server_error").body());
      return open().done();
    }
    const o = open();
    o.send(chunk("", finishOf(r)));
    if (isObj(body.stream_options) && body.stream_options.include_usage === true) o.send({ ...base, choices: [], usage: usageOf(r) });
    o.done();
  });

  return app;
}
