/**
 * Sessions: each owns a KV cache; a turn prefills only the tokens that are not in the cache already, and
 * what it generates is exactly what a fresh generation over the whole prompt gives (greedy).
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildChatPrompt, chatStopIds, loadGlm4, type GenerateResult, type Glm4Model, type TextChunk } from "../lib/index.js";

const DIR = path.resolve(import.meta.dirname, "../fixtures/tiny-glm4/original");
const greedy = { temperature: 0, maxNewTokens: 6 };

async function drain(it: AsyncGenerator<TextChunk, GenerateResult>): Promise<GenerateResult & { streamed: string }> {
  let streamed = "";
  for (;;) {
    const r = await it.next();
    if (r.done) return { ...r.value, streamed };
    streamed += r.value.text;
  }
}

let model: Glm4Model;
beforeAll(async () => {
  model = await loadGlm4(DIR, { device: "cpu", maxContext: 256 });
});
afterAll(async () => {
  await model?.dispose();
});

/** A fresh generation (cleared cache) of `ids` with the chat stop ids: the reference for a session turn. */
function fresh(ids: number[], n = greedy.maxNewTokens) {
  return model.generate(ids, { temperature: 0, maxNewTokens: n, stop: chatStopIds(model.tokenizer!) });
}

describe("Session", () => {
  it("the second turn prefills only its new tokens and gives what a full prefill gives", async () => {
    const tok = model.tokenizer!;
    const s = model.createSession();
    const r1 = await drain(s.chat("hello there", greedy));
    const p1 = buildChatPrompt(tok, [{ role: "user", content: "hello there" }]);
    expect(r1.usage.promptTokens).toBe(p1.length);
    expect(r1.usage.cachedTokens).toBe(0);
    expect(r1.streamed).toBe(r1.text);
    expect(r1.tokens).toEqual((await fresh(p1)).tokens);

    const r2 = await drain(s.chat("and again", greedy));
    const turn = buildChatPrompt(tok, [{ role: "user", content: "and again" }]).slice(2); // <|user|> ... <|assistant|>
    const full = [...p1, ...r1.tokens, ...turn];
    expect(r2.usage.promptTokens).toBe(full.length);
    // The cache holds turn 1's prompt and every generated token that was fed back (the last one is not
    // fed when the turn ended on maxNewTokens).
    const unfed = r1.finishReason === "length" ? 1 : 0;
    expect(r2.usage.cachedTokens).toBe(p1.length + r1.tokens.length - unfed);
    expect(r2.usage.promptTokens - r2.usage.cachedTokens).toBe(turn.length + unfed);
    expect(r2.tokens).toEqual((await fresh(full)).tokens);

    expect(s.messages.map((m) => m.role)).toEqual(["user", "assistant", "user", "assistant"]);
    expect(s.messages[1].content).toBe(r1.text.replace(/^\n/, ""));
    await s.dispose();
  });

  it("a whole conversation keeps the common prefix and re-prefills from where it diverges", async () => {
    const tok = model.tokenizer!;
    const s = model.createSession();
    const a = [{ role: "user" as const, content: "one two three" }];
    const r1 = await drain(s.chat(a, greedy));
    expect(r1.usage.cachedTokens).toBe(0);
    // Same conversation again: everything but the last prompt token comes from the cache.
    const r1b = await drain(s.chat(a, greedy));
    expect(r1b.usage.cachedTokens).toBe(r1b.usage.promptTokens - 1);
    expect(r1b.tokens).toEqual(r1.tokens);
    // A different first message: only [gMASK] <sop> <|user|> (and any equal leading text tokens) is kept.
    const b = [{ role: "user" as const, content: "zzz different" }];
    const pb = buildChatPrompt(tok, b);
    const pa = buildChatPrompt(tok, a);
    let common = 0;
    while (pa[common] === pb[common]) common++;
    const r2 = await drain(s.chat(b, greedy));
    expect(r2.usage.cachedTokens).toBe(common);
    expect(common).toBeGreaterThanOrEqual(3);
    expect(r2.tokens).toEqual((await fresh(pb)).tokens);
    await s.dispose();
  });

  it("system option, reset() and dispose()", async () => {
    const s = model.createSession({ system: "be brief" });
    expect(s.messages).toEqual([{ role: "system", content: "be brief" }]);
    const r = await drain(s.chat({ role: "user", content: "hi" }, greedy));
    expect(r.usage.promptTokens).toBe(buildChatPrompt(model.tokenizer!, [{ role: "system", content: "be brief" }, { role: "user", content: "hi" }]).length);
    expect(s.cachedTokens).toBeGreaterThan(0);
    await s.reset();
    expect(s.cachedTokens).toBe(0);
    expect(s.messages).toEqual([{ role: "system", content: "be brief" }]);
    const r2 = await drain(s.chat("hi", greedy));
    expect(r2.usage.cachedTokens).toBe(0);
    expect(r2.tokens).toEqual(r.tokens);
    await s.dispose();
    await expect(drain(s.chat("hi", greedy))).rejects.toMatchObject({ code: "ERR_GLM4_DISPOSED" });
    await s.dispose(); // twice is fine
  });

  it("generate() on a session reuses the cache; sessions running at once do not disturb each other", async () => {
    const s1 = model.createSession(), s2 = model.createSession();
    const ids = model.tokenizer!.encode("a long enough prompt for the cache");
    const alone = await model.generate(ids, { temperature: 0, maxNewTokens: 8 });
    const g1 = await s1.generate(ids, { temperature: 0, maxNewTokens: 8 });
    expect(g1.usage.cachedTokens).toBe(0);
    const [x, y] = await Promise.all([s1.generate(ids, { temperature: 0, maxNewTokens: 8 }), s2.generate(ids, { temperature: 0, maxNewTokens: 8 })]);
    expect(x.usage.cachedTokens).toBe(ids.length - 1);
    expect(y.usage.cachedTokens).toBe(0);
    for (const r of [g1, x, y]) expect(r.tokens).toEqual(alone.tokens);
    await Promise.all([s1.dispose(), s2.dispose()]);
  });

  it("a turn that does not fit the session's cache fails with ERR_GLM4_CONTEXT_FULL and leaves the conversation as it was", async () => {
    const s = model.createSession({ maxContext: 16 });
    await expect(drain(s.chat("x ".repeat(40), greedy))).rejects.toMatchObject({ code: "ERR_GLM4_CONTEXT_FULL" });
    expect(s.messages).toEqual([]);
    const r = await drain(s.chat("hi", { ...greedy, maxNewTokens: 3 }));
    expect(r.usage.cachedTokens).toBe(0);
    await s.dispose();
  });
});
