/**
 * The OpenAI-compatible server, driven by the official `openai` client (and plain fetch where the exact
 * wire format matters), on the tiny checkpoint on the CPU, on ephemeral ports of 127.0.0.1.
 */
import path from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FastifyInstance } from "fastify";
import { loadGlm4, type Glm4Model } from "../lib/index.js";
import { createServer, type ServerOptions } from "../lib/serve/server.js";
import { buildToolPrompt, toolsSystemText, type Tool } from "../lib/text/tools.js";
import { KV_BLOCK } from "../lib/engine/kv-cache.js";

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
  const app = createServer(model, opts);
  apps.push(app);
  await app.listen({ host: "127.0.0.1", port: 0 });
  const { port } = app.server.address() as { port: number };
  const base = `http://127.0.0.1:${port}`;
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: opts.apiKey ?? "unused", maxRetries: 0, timeout: 20_000 });
  const health = async () => (await (await fetch(`${base}/health`)).json()) as Record<string, number | string>;
  return { app, base, client, health };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const json = async (r: Response) => (await r.json()) as any;

const post = (base: string, route: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${base}${route}`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: typeof body === "string" ? body : JSON.stringify(body) });

/** Streams a chat completion; returns the content, finish reason, usage and the number of chunks. */
async function streamChat(client: OpenAI, body: Omit<OpenAI.Chat.ChatCompletionCreateParamsStreaming, "model" | "stream">) {
  const stream = await client.chat.completions.create({ model: "glm", stream: true, stream_options: { include_usage: true }, ...body });
  let content = "", finish: string | null = null, chunks = 0;
  let usage: OpenAI.CompletionUsage | undefined;
  for await (const c of stream) {
    chunks++;
    if (c.usage) usage = c.usage;
    const ch = c.choices[0];
    if (!ch) continue;
    content += ch.delta.content ?? "";
    finish = ch.finish_reason ?? finish;
  }
  return { content, finish, usage, chunks };
}

const user = (content: string) => [{ role: "user" as const, content }];

describe("OpenAI-compatible server", () => {
  it("chat completions, streamed and not, agree; models and health", async () => {
    const { client, health } = await start();
    const r = await client.chat.completions.create({ model: "whatever", messages: user("hello"), max_tokens: 8, temperature: 0 });
    expect(r.object).toBe("chat.completion");
    expect(r.id).toMatch(/^chatcmpl-/);
    expect(r.model).toBe("tiny-glm4");
    expect(r.choices).toHaveLength(1);
    expect(r.choices[0].message.role).toBe("assistant");
    expect(typeof r.choices[0].message.content).toBe("string");
    expect(["stop", "length"]).toContain(r.choices[0].finish_reason);
    const tok = model.tokenizer!;
    expect(r.usage!.prompt_tokens).toBe(buildToolPrompt(tok, user("hello")).length);
    expect(r.usage!.completion_tokens).toBeGreaterThan(0);
    expect(r.usage!.total_tokens).toBe(r.usage!.prompt_tokens + r.usage!.completion_tokens);

    const s = await streamChat(client, { messages: user("hello"), max_tokens: 8, temperature: 0 });
    expect(s.content).toBe(r.choices[0].message.content);
    expect(s.finish).toBe(r.choices[0].finish_reason);
    expect(s.usage!.completion_tokens).toBe(r.usage!.completion_tokens);
    // The same prompt again: the full KV blocks of its head (all but the last token) come from the prefix cache.
    expect(s.usage!.prompt_tokens_details!.cached_tokens).toBe(Math.floor((r.usage!.prompt_tokens - 1) / KV_BLOCK) * KV_BLOCK);

    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(["tiny-glm4"]);
    expect((await client.models.retrieve("tiny-glm4")).object).toBe("model");
    await expect(client.models.retrieve("gpt-4")).rejects.toMatchObject({ status: 404 });
    expect(await health()).toMatchObject({ status: "ok", model: "tiny-glm4", device: "cpu", slots: 4, active: 0, waiting: 0 });
  });

  it("completions: text and token-id prompts, echo, streamed and not", async () => {
    const { client } = await start();
    const tok = model.tokenizer!;
    const r = await client.completions.create({ model: "glm", prompt: "The capital of", max_tokens: 6, temperature: 0 });
    expect(r.object).toBe("text_completion");
    expect(r.choices[0].index).toBe(0);
    expect(r.usage!.prompt_tokens).toBe(tok.encode("The capital of").length);
    const direct = await model.generate("The capital of", { maxNewTokens: 6, temperature: 0 });
    expect(r.choices[0].text).toBe(direct.text);
    expect(r.choices[0].finish_reason).toBe(direct.finishReason);

    const ids = await client.completions.create({ model: "glm", prompt: tok.encode("The capital of"), max_tokens: 6, temperature: 0, echo: true });
    expect(ids.choices[0].text).toBe("The capital of" + direct.text);

    const stream = await client.completions.create({ model: "glm", prompt: "The capital of", max_tokens: 6, temperature: 0, stream: true });
    let text = "", finish: string | null = null;
    for await (const c of stream) {
      text += c.choices[0]?.text ?? "";
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    expect(text).toBe(direct.text);
    expect(finish).toBe(direct.finishReason);
  });

  it("tools: the conversation (tools, calls, results) becomes GLM-4's prompt; replies are answers or tool_calls", async () => {
    const { client } = await start();
    const tok = model.tokenizer!;
    const weather: Tool = { type: "function", function: { name: "get_weather", description: "weather", parameters: { type: "object", properties: { city: { type: "string" } } } } };
    const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [
      { role: "system", content: "Be brief." },
      { role: "user", content: "Weather in Paris?" },
      { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city": "Paris"}' } }] },
      { role: "tool", tool_call_id: "call_1", content: '{"temp": 21}' },
    ];
    const turns = [
      { role: "system" as const, content: "Be brief." },
      { role: "user" as const, content: "Weather in Paris?" },
      { role: "assistant" as const, metadata: "get_weather", content: '{"city": "Paris"}' },
      { role: "observation" as const, content: '{"temp": 21}' },
    ];
    const r = await client.chat.completions.create({ model: "glm", messages, tools: [weather], max_tokens: 6, temperature: 0 });
    expect(r.usage!.prompt_tokens).toBe(buildToolPrompt(tok, turns, { tools: [weather] }).length);
    expect(toolsSystemText([weather])).toContain("## get_weather");
    const m = r.choices[0].message;
    if (m.tool_calls?.length) expect(r.choices[0].finish_reason).toBe("tool_calls");
    else expect(typeof m.content).toBe("string");

    // tool_choice "none" leaves the tools out; a named tool_choice forces "<|assistant|>get_weather\n".
    const none = await client.chat.completions.create({ model: "glm", messages, tools: [weather], tool_choice: "none", max_tokens: 2, temperature: 0 });
    expect(none.usage!.prompt_tokens).toBe(buildToolPrompt(tok, turns).length);
    const forced = await client.chat.completions.create({
      model: "glm",
      messages: user("Weather in Paris?"),
      tools: [weather],
      tool_choice: { type: "function", function: { name: "get_weather" } },
      max_tokens: 6,
      temperature: 0,
    });
    expect(forced.usage!.prompt_tokens).toBe(buildToolPrompt(tok, user("Weather in Paris?"), { tools: [weather], forceTool: "get_weather" }).length);
    // Random weights write no valid JSON: the reply comes back as text that starts with the forced name.
    const fm = forced.choices[0].message;
    if (!fm.tool_calls?.length) expect(fm.content!.startsWith("get_weather\n")).toBe(true);
    // The streamed form of the same request gives the same content.
    const fs = await streamChat(client, { messages: user("Weather in Paris?"), tools: [weather], tool_choice: { type: "function", function: { name: "get_weather" } }, max_tokens: 6, temperature: 0 });
    if (!fm.tool_calls?.length) expect(fs.content).toBe(fm.content);

    await expect(client.chat.completions.create({ model: "glm", messages, tools: [weather], tool_choice: { type: "function", function: { name: "nope" } } })).rejects.toMatchObject({
      status: 400,
      error: { param: "tool_choice" },
    });
  });

  it("errors: OpenAI's shape, 400 for bad requests (n=2, long prompts, bad values), 401 without the key", async () => {
    const { base, client } = await start({ apiKey: "sk-test", maxPromptTokens: 20, maxTokens: 50 });
    const auth = { authorization: "Bearer sk-test" };
    // 400 shape, exactly
    let res = await post(base, "/v1/chat/completions", { model: "glm" }, auth);
    expect(res.status).toBe(400);
    expect(await json(res)).toEqual({ error: { message: "messages must be a non-empty array", type: "invalid_request_error", param: "messages", code: null } });
    res = await post(base, "/v1/chat/completions", "{not json", auth);
    expect(res.status).toBe(400);
    expect((await json(res)).error).toMatchObject({ type: "invalid_request_error" });
    res = await post(base, "/v1/chat/completions", { messages: [{ role: "wizard", content: "x" }] }, auth);
    expect((await json(res)).error).toMatchObject({ param: "messages[0].role" });

    const c = client;
    await expect(c.chat.completions.create({ model: "glm", messages: user("hi"), n: 2 })).rejects.toMatchObject({ status: 400, error: { param: "n" } });
    await expect(c.chat.completions.create({ model: "glm", messages: user("hi"), temperature: 3 })).rejects.toMatchObject({ status: 400, error: { param: "temperature" } });
    await expect(c.chat.completions.create({ model: "glm", messages: user("hi"), max_tokens: 51 })).rejects.toMatchObject({ status: 400, error: { param: "max_tokens" } });
    await expect(c.chat.completions.create({ model: "glm", messages: user("word ".repeat(40)) })).rejects.toMatchObject({
      status: 400,
      error: { code: "context_length_exceeded", param: "messages" },
    });
    await expect(c.completions.create({ model: "glm", prompt: ["a", "b"] })).rejects.toMatchObject({ status: 400, error: { param: "prompt" } });
    await expect(c.chat.completions.create({ model: "glm", messages: user("hi"), presence_penalty: 1 })).rejects.toMatchObject({ status: 400 });
    const ok = await c.chat.completions.create({ model: "glm", messages: user("hi"), max_tokens: 2 });
    expect(ok.choices).toHaveLength(1);

    // 401: no key, a wrong key; /health needs none
    res = await post(base, "/v1/chat/completions", { messages: user("hi") });
    expect(res.status).toBe(401);
    expect(await json(res)).toEqual({ error: { message: expect.any(String), type: "invalid_request_error", param: null, code: "invalid_api_key" } });
    const wrong = new OpenAI({ baseURL: `${base}/v1`, apiKey: "sk-wrong", maxRetries: 0 });
    await expect(wrong.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
    expect((await fetch(`${base}/health`)).status).toBe(200);
    res = await fetch(`${base}/v1/nothing`, { headers: auth });
    expect(res.status).toBe(404);
    expect((await json(res)).error.code).toBe("not_found");
  });

  it("a full queue answers 429; a client that goes away mid-stream frees its slot", async () => {
    const { client, health } = await start({ maxConcurrent: 1, maxQueue: 0 });
    // Greedy, this prompt makes the tiny model write ~580 tokens: it holds the only slot for a while.
    const long = await client.chat.completions.create({ model: "glm", messages: user("tell me a story"), max_tokens: 1000, temperature: 0, stream: true });
    const it = long[Symbol.asyncIterator]();
    await it.next();
    await it.next();
    expect(await health()).toMatchObject({ active: 1 });
    const busy = client.chat.completions.create({ model: "glm", messages: user("hi"), max_tokens: 2 });
    await expect(busy).rejects.toBeInstanceOf(OpenAI.RateLimitError);
    await expect(busy).rejects.toMatchObject({ status: 429, error: { type: "rate_limit_error", code: "queue_full" } });

    long.controller.abort(); // the client goes away
    const t0 = Date.now();
    for (;;) {
      const h = await health();
      if (h.active === 0) {
        expect(h).toMatchObject({ aborted: 1, rejected: 1 });
        break;
      }
      if (Date.now() - t0 > 60_000) throw new Error(`the slot was not freed: ${JSON.stringify(h)}`); // a deadline, not a speed claim
      await new Promise((r) => setTimeout(r, 20));
    }
    const next = await client.chat.completions.create({ model: "glm", messages: user("hi"), max_tokens: 3, temperature: 0 });
    expect(next.choices[0].finish_reason).toMatch(/stop|length/);
  });

  it("8 concurrent greedy streams each give exactly what they give alone; requests over the slots wait their turn", async () => {
    const { client, health } = await start({ maxConcurrent: 8 });
    const prompts = ["hello", "tell me a story", "1 2 3", "你好", "why", "count to ten", "abc abc", "a"];
    const run = (p: string, i: number) => streamChat(client, { messages: user(p), max_tokens: 10 + i, temperature: 0 });
    const alone = [];
    for (const [i, p] of prompts.entries()) alone.push(await run(p, i));
    const together = await Promise.all(prompts.map(run));
    for (const [i, r] of together.entries()) {
      expect(r.content, prompts[i]).toBe(alone[i].content);
      expect(r.finish).toBe(alone[i].finish);
      expect(r.usage!.completion_tokens).toBe(alone[i].usage!.completion_tokens);
    }
    expect(alone.some((r) => r.usage!.completion_tokens >= 10)).toBe(true);
    expect(await health()).toMatchObject({ active: 0, waiting: 0 });

    // Two slots, six requests: four wait in the queue, all complete with the same outputs.
    const { client: c2 } = await start({ maxConcurrent: 2, maxQueue: 8 });
    const queued = await Promise.all(prompts.slice(0, 6).map((p, i) => streamChat(c2, { messages: user(p), max_tokens: 10 + i, temperature: 0 })));
    for (const [i, r] of queued.entries()) expect(r.content).toBe(alone[i].content);
  });

  it("the same seed gives the same sampled output, alone or next to other requests", async () => {
    const { client } = await start();
    const ask = (seed: number) => client.chat.completions.create({ model: "glm", messages: user("hello"), max_tokens: 16, temperature: 1, top_p: 1, seed });
    const a = await ask(7);
    const [b, , c] = await Promise.all([ask(7), ask(8), ask(7)]);
    expect(b.choices[0].message.content).toBe(a.choices[0].message.content);
    expect(c.choices[0].message.content).toBe(a.choices[0].message.content);
    const others = await Promise.all([8, 9, 10].map(ask));
    expect(others.some((o) => o.choices[0].message.content !== a.choices[0].message.content)).toBe(true);
    // Extensions: top_k 1 is greedy whatever the temperature.
    const k1 = await client.chat.completions.create({ model: "glm", messages: user("hello"), max_tokens: 8, temperature: 1, seed: 3, top_k: 1 } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);
    const greedy = await client.chat.completions.create({ model: "glm", messages: user("hello"), max_tokens: 8, temperature: 0 });
    expect(k1.choices[0].message.content).toBe(greedy.choices[0].message.content);
  });
});
