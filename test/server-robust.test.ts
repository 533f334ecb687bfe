/**
 * The server under hostile and heavy requests (issue 16), in-process on the tiny checkpoint (CPU):
 * bodies over the limit get 413, prompts too long for the context are refused from their length before
 * tokenizing (15 MiB of text, 12 MiB of CJK: 400, never 500), a large and a slow request beside a streaming one
 * leave the stream's chunks flowing (ordering, not timings), long texts are tokenized in slices between other
 * work, 429 carries Retry-After and the right counts, "bearer" in any case, the model id is the checkpoint's name.
 */
import net from "node:net";
import path from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FastifyInstance } from "fastify";
import { loadGlm4, type Glm4Model } from "../lib/index.js";
import { createServer, servedModelName, type ServerOptions } from "../lib/serve/server.js";

const DIR = path.resolve(import.meta.dirname, "../fixtures/tiny-glm4/original");

let model: Glm4Model;
const apps: FastifyInstance[] = [];
beforeAll(async () => {
  model = await loadGlm4(DIR, { device: "cpu" });
});
afterAll(async () => {
  for (const a of apps) await a.close();
  await model?.dispose();
});

async function start(opts: ServerOptions = {}) {
  const app = createServer(model, { shutdownTimeoutMs: 0, ...opts });
  apps.push(app);
  await app.listen({ host: "127.0.0.1", port: 0 });
  const { port } = app.server.address() as { port: number };
  const base = `http://127.0.0.1:${port}`;
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: opts.apiKey ?? "unused", maxRetries: 0, timeout: 120_000 });
  return { app, base, port, client };
}

const post = (base: string, route: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${base}${route}`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: typeof body === "string" ? body : JSON.stringify(body) });

const user = (content: string) => [{ role: "user" as const, content }];

describe("server robustness", () => {
  it("a body over bodyLimit gets 413 in OpenAI's shape; the server goes on", async () => {
    const { base } = await start({ bodyLimit: 64 * 1024 });
    const res = await post(base, "/v1/chat/completions", { messages: user("x".repeat(100 * 1024)) });
    expect(res.status).toBe(413);
    expect(await res.json()).toEqual({ error: { message: expect.stringMatching(/larger than this server's limit of 65536 bytes/), type: "invalid_request_error", param: null, code: "body_too_large" } });
    expect((await fetch(`${base}/health`)).status).toBe(200);
    expect(() => createServer(model, { bodyLimit: 10 })).toThrow(/bodyLimit must be an integer number of bytes >= 1024/);
  });

  it("15 MiB of text and 12 MiB of CJK are refused from their length (400, not 500), without tokenizing", async () => {
    const { base } = await start({ bodyLimit: 64 * 2 ** 20 });
    for (const text of ["hello world ".repeat((15 * 2 ** 20) / 12), "你好世界".repeat(3 * 2 ** 20)]) {
      for (const [route, body] of [
        ["/v1/chat/completions", { messages: user(text) }],
        ["/v1/completions", { prompt: text }],
      ] as const) {
        const res = await post(base, route, body);
        expect(res.status).toBe(400);
        const e = ((await res.json()) as { error: { code: string; message: string } }).error;
        expect(e.code).toBe("context_length_exceeded");
        expect(e.message).toMatch(/the prompt is at least \d+ tokens \(from its length alone\); this server takes at most 1023/);
      }
    }
  });

  it("a large and a slow request beside a streaming one: the stream's chunks keep arriving", async () => {
    const { base, port, client } = await start({ maxConcurrent: 2 });
    const events: string[] = [];
    let ended = false;
    const waiters: (() => void)[] = [];
    const wake = () => waiters.splice(0).forEach((w) => w());
    const nextChunk = () => (ended ? Promise.resolve() : new Promise<void>((r) => waiters.push(r)));
    // Greedy, this prompt makes the tiny model write several hundred tokens.
    const stream = (async () => {
      const s = await client.chat.completions.create({ model: "glm", messages: user("tell me a story"), max_tokens: 1000, temperature: 0, stream: true });
      for await (const c of s) {
        if (c.choices[0]?.delta?.content) {
          events.push("chunk");
          wake();
        }
      }
      events.push("stream-end");
      ended = true;
      wake();
    })();
    await nextChunk();

    // The slow client: a request whose body arrives one piece after each chunk of the stream.
    const body = JSON.stringify({ prompt: "slow request", max_tokens: 1 });
    const pieces = [body.slice(0, 5), body.slice(5, 10), body.slice(10, 20), body.slice(20)];
    const sock = net.connect(port, "127.0.0.1");
    await new Promise<void>((r) => sock.once("connect", () => r()));
    let answer = "";
    sock.setEncoding("utf8").on("data", (d: string) => (answer += d));
    sock.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n`);
    events.push("slow-start");
    for (const p of pieces) {
      await nextChunk();
      sock.write(p);
      events.push("slow-piece");
    }
    // The large one: 6 MiB of text (under the default body limit), refused from its length.
    events.push("large-start");
    const large = await post(base, "/v1/completions", { prompt: "lorem ipsum ".repeat((6 * 2 ** 20) / 12) });
    events.push(`large-${large.status}`);
    await new Promise<void>((r) => sock.once("close", () => r()));
    events.push("slow-end");
    await nextChunk();
    events.push("after");
    await stream;

    expect(answer).toMatch(/^HTTP\/1\.1 200/);
    expect(events).toContain("large-400");
    // Ordering: the stream went on while the slow request was being sent and after the large one was answered.
    const slowStart = events.indexOf("slow-start"), slowEnd = events.indexOf("slow-end"), largeEnd = events.indexOf("large-400");
    expect(events.slice(slowStart, slowEnd).filter((e) => e === "chunk").length).toBeGreaterThanOrEqual(pieces.length);
    const after = events.indexOf("after");
    expect(events.slice(largeEnd, after + 1).includes("chunk") || events.includes("stream-end")).toBe(true);
    expect(events.filter((e) => e === "chunk").length).toBeGreaterThan(pieces.length);
  });

  it("a long text is tokenized in slices: other work runs in between, and the ids are encode()'s", async () => {
    const tok = model.tokenizer!;
    const text = "你好, GLM-4! tell me a story about 123 dragons.\n".repeat(20000); // ~1M characters
    let turns = 0;
    let running = true;
    const spin = () => {
      turns++;
      if (running) setImmediate(spin);
    };
    setImmediate(spin);
    const ids = await tok.encodeAsync(text, 1);
    running = false;
    expect(turns).toBeGreaterThan(10); // the event loop turned while the text was being encoded
    expect(ids).toEqual(tok.encode(text));
  });

  it("429 says how busy the server is and when to retry; Retry-After is set", async () => {
    const { base, client } = await start({ maxConcurrent: 1, maxQueue: 0 });
    const long = await client.chat.completions.create({ model: "glm", messages: user("tell me a story"), max_tokens: 1000, temperature: 0, stream: true });
    const it = long[Symbol.asyncIterator]();
    await it.next();
    const res = await post(base, "/v1/chat/completions", { messages: user("hi"), max_tokens: 2 });
    expect(res.status).toBe(429);
    expect(res.headers.get("retry-after")).toBe("1");
    const e = ((await res.json()) as { error: { message: string } }).error;
    expect(e).toMatchObject({ type: "rate_limit_error", code: "queue_full" });
    expect(e.message).toMatch(/1 of 1 slots are generating and 0 requests are waiting already/);
    long.controller.abort();
  });

  it('"Authorization: bearer <key>" is accepted in any case; a wrong scheme is not', async () => {
    const { base } = await start({ apiKey: "sk-case" });
    for (const h of ["Bearer sk-case", "bearer sk-case", "BEARER   sk-case"]) expect((await fetch(`${base}/v1/models`, { headers: { authorization: h } })).status).toBe(200);
    for (const h of ["Basic sk-case", "Bearersk-case", "bearer sk-other"]) expect((await fetch(`${base}/v1/models`, { headers: { authorization: h } })).status).toBe(401);
  });

  it("the model id is the checkpoint's name, not the folder 'original'", async () => {
    const { client } = await start();
    expect((await client.models.list()).data.map((m) => m.id)).toEqual(["tiny-glm4"]);
    const fake = (nameOrPath: string | undefined, dir: string | null) => ({ config: { ...model.config, nameOrPath }, info: { ...model.info, dir } }) as unknown as Glm4Model;
    expect(servedModelName(fake("THUDM/glm-4-9b-chat", "/m/x/original"))).toBe("THUDM/glm-4-9b-chat");
    expect(servedModelName(fake("/home/me/models/glm-4-9b-chat/", "/m/x"))).toBe("glm-4-9b-chat");
    expect(servedModelName(fake(undefined, "/m/glm-4-9b-chat/hf"))).toBe("glm-4-9b-chat");
    expect(servedModelName(fake(undefined, "/c/models--THUDM--glm-4-9b-chat/snapshots/0123456789abcdef0123456789abcdef01234567"))).toBe("THUDM/glm-4-9b-chat");
    expect(servedModelName(fake("THUDM/glm-4-9b-chat", "/m"), { modelName: "mine" })).toBe("mine");
  });
});
