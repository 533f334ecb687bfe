/**
 * The server's /metrics (Prometheus text through prom-client) and /health (the scheduler and the KV-cache pool),
 * and serving a model without a tokenizer (token-id prompts only), through createServer + fetch on the CPU backend.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FastifyInstance } from "fastify";
import { loadGlm4, type Glm4Model } from "../lib/index.js";
import { createServer, type ServerOptions } from "../lib/serve/server.js";

const DIR = path.resolve(import.meta.dirname, "../fixtures/tiny-glm4/original");

let model: Glm4Model;
const apps: FastifyInstance[] = [];
beforeAll(async () => {
  model = await loadGlm4(DIR, { device: "cpu", maxContext: 256 });
});
afterAll(async () => {
  for (const a of apps) await a.close();
  await model?.dispose();
});

async function start(opts: ServerOptions = {}, m: Glm4Model = model) {
  const app = createServer(m, opts);
  apps.push(app);
  await app.listen({ host: "127.0.0.1", port: 0 });
  const { port } = app.server.address() as { port: number };
  return `http://127.0.0.1:${port}`;
}

const post = (base: string, route: string, body: unknown) => fetch(`${base}${route}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

/** The value of one sample line `name{labels} value` of a Prometheus text page. */
function sample(page: string, name: string): number {
  const line = page.split("\n").find((l) => l.split(" ")[0] === name);
  if (!line) throw new Error(`no sample ${name} in\n${page}`);
  return Number(line.split(" ")[1]);
}

/** Streams a completion of token ids; returns the chunks' texts and the usage. */
async function streamIds(base: string, prompt: number[], max: number) {
  const r = await post(base, "/v1/completions", { prompt, max_tokens: max, temperature: 0, stream: true, stream_options: { include_usage: true } });
  expect(r.status).toBe(200);
  const texts: string[] = [];
  let usage: { prompt_tokens: number; completion_tokens: number } | null = null;
  for (const ev of (await r.text()).split("\n\n")) {
    const d = ev.replace(/^data: /, "").trim();
    if (!d || d === "[DONE]") continue;
    const o = JSON.parse(d);
    if (o.usage) usage = o.usage;
    if (o.choices?.[0] && o.choices[0].finish_reason === null) texts.push(o.choices[0].text);
  }
  return { texts, usage: usage! };
}

describe("server metrics and health", () => {
  it("/metrics counts requests and tokens, and the TTFT and inter-token histograms; /health shows the pool", async () => {
    const base = await start({ maxConcurrent: 2, kvBlocks: 20 });
    const h0 = (await (await fetch(`${base}/health`)).json()) as { kv: Record<string, number> };
    expect(h0.kv).toEqual({ blocks: 20, inUse: 1, cached: 0, available: 19, blockSize: 64 });
    const a = await streamIds(base, [5, 6, 7, 8, 9, 10], 6);
    const b = (await (await post(base, "/v1/completions", { prompt: [11, 12, 13], max_tokens: 5, temperature: 0 })).json()) as { usage: { prompt_tokens: number; completion_tokens: number } };
    const r = await fetch(`${base}/metrics`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const page = await r.text();
    expect(sample(page, 'glm4_requests_total{outcome="completed"}')).toBe(2);
    expect(sample(page, "glm4_prompt_tokens_total")).toBe(a.usage.prompt_tokens + b.usage.prompt_tokens);
    const out = a.usage.completion_tokens + b.usage.completion_tokens;
    expect(sample(page, "glm4_generation_tokens_total")).toBe(out);
    expect(sample(page, "glm4_time_to_first_token_seconds_count")).toBe(2);
    expect(sample(page, "glm4_inter_token_latency_seconds_count")).toBe(out - 2);
    expect(sample(page, "glm4_request_duration_seconds_count")).toBe(2);
    expect(sample(page, 'glm4_kv_cache_blocks{state="total"}')).toBe(20);
    expect(sample(page, 'glm4_kv_cache_blocks{state="in_use"}')).toBe(1);
    expect(sample(page, "glm4_requests_running")).toBe(0);
    expect(sample(page, "glm4_requests_waiting")).toBe(0);
    expect(sample(page, "glm4_preemptions_total")).toBe(0);
    expect(sample(page, "glm4_kv_cache_block_tokens")).toBe(64);
  });

  it("a request refused with 429 is counted as rejected", async () => {
    const base = await start({ maxConcurrent: 1, maxQueue: 0 });
    const first = post(base, "/v1/completions", { prompt: [5, 6], max_tokens: 40, temperature: 0, stop: [] });
    // the first request holds the slot once /health says so
    for (let i = 0; i < 1000; i++) {
      const h = (await (await fetch(`${base}/health`)).json()) as { active: number };
      if (h.active === 1) break;
    }
    expect((await post(base, "/v1/completions", { prompt: [7], max_tokens: 2 })).status).toBe(429);
    await (await first).json();
    expect(sample(await (await fetch(`${base}/metrics`)).text(), 'glm4_requests_total{outcome="rejected"}')).toBe(1);
  });

  it("a model without a tokenizer: token-id completions stream one chunk a token (no text); chat and text prompts are refused", async () => {
    // the tiny model seen without its tokenizer (as a synthetic model is)
    const rt = Object.create(model.runtime, { tokenizer: { value: null } });
    const bare = Object.create(model, { tokenizer: { value: null }, runtime: { value: rt } }) as Glm4Model;
    const base = await start({ maxConcurrent: 2 }, bare);
    const s = await streamIds(base, [5, 6, 7], 5);
    expect(s.usage.completion_tokens).toBeGreaterThan(0);
    expect(s.texts.length).toBe(s.usage.completion_tokens);
    expect(s.texts.every((t) => t === "")).toBe(true);
    const c = await post(base, "/v1/chat/completions", { messages: [{ role: "user", content: "hi" }] });
    expect(c.status).toBe(400);
    expect(((await c.json()) as { error: { code: string } }).error.code).toBe("no_tokenizer");
    const t = await post(base, "/v1/completions", { prompt: "hello" });
    expect(t.status).toBe(400);
    expect(((await t.json()) as { error: { code: string } }).error.code).toBe("no_tokenizer");
  });
});
