/**
 * The server's scheduler (lib/serve/scheduler.ts) on the CPU backend (tiny checkpoint): chunked prefill under the
 * token budget keeps streams going while a long prompt goes in, preemption when the KV pool runs out gives the same
 * tokens, requests are served first come first served, a disconnect frees its blocks at once, a request that can
 * never fit is refused cleanly. Everything is counted or ordered, never timed.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadGlm4, type Glm4Model } from "../lib/index.js";
import { Scheduler } from "../lib/serve/scheduler.js";
import { makePrompts } from "./helpers/batch-check.js";

const DIR = path.resolve(import.meta.dirname, "../fixtures/tiny-glm4/original");

let model: Glm4Model;
beforeAll(async () => {
  model = await loadGlm4(DIR, { device: "cpu", maxContext: 512 });
});
afterAll(async () => {
  await model?.dispose();
});

/** Resolves when `cond` holds, checking after each job on the model's queue (no timers). */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000 && !cond(); i++) await model.runtime.exclusive(async () => undefined);
  expect(cond()).toBe(true);
}

describe("scheduler (cpu)", () => {
  /** Tokens a streaming request gets between the submit of a 400-token prompt and that prompt's first token. */
  async function streamedDuringPrefill(stepTokens: number): Promise<{ during: number; ticksOfPrefill: number }> {
    const V = model.config.vocabSize;
    const [short, long] = makePrompts(2, V, [5, 400], 61);
    const sched = new Scheduler(model, { maxConcurrent: 2, stepTokens });
    const events: string[] = [];
    try {
      const a = sched.submit({ prompt: short, options: { maxNewTokens: 40, temperature: 0, stop: [] }, onChunk: (c) => c.tokens.forEach(() => events.push("a")) });
      await until(() => events.length >= 2);
      events.push("submit");
      const b = sched.submit({ prompt: long, options: { maxNewTokens: 2, temperature: 0, stop: [] }, onChunk: (c) => c.tokens.forEach(() => events.push("b")) });
      await Promise.all([a, b]);
      const from = events.indexOf("submit"), first = events.indexOf("b");
      return { during: events.slice(from, first).filter((x) => x === "a").length, ticksOfPrefill: Math.ceil(400 / Math.max(stepTokens - 1, 64)) };
    } finally {
      await sched.close();
    }
  }

  it("a long prompt goes in by chunks under the token budget: the streaming request gets a token every tick meanwhile", async () => {
    const chunked = await streamedDuringPrefill(64); // 64 tokens of the prompt a tick: 7 ticks
    expect(chunked.during).toBeGreaterThanOrEqual(chunked.ticksOfPrefill - 1);
    const whole = await streamedDuringPrefill(4096); // the whole prompt in one tick
    expect(whole.during).toBeLessThanOrEqual(3); // the tick in flight, the prefill tick, the first pick's tick
    expect(chunked.during).toBeGreaterThan(whole.during + 3);
  });

  it("preemption when the pool runs out: every request still gives exactly its solo tokens (greedy and seeded sampling)", async () => {
    const V = model.config.vocabSize;
    const prompts = makePrompts(4, V, [60, 70, 50, 65], 71);
    const opts = [{ temperature: 0 }, { temperature: 0.9, topP: 0.9, seed: 5 }, { temperature: 0 }, { temperature: 1.1, topK: 30, seed: 6 }].map((o) => ({ ...o, maxNewTokens: 90, stop: [] }));
    const alone = [];
    for (const [i, p] of prompts.entries()) alone.push(await model.generate(p, opts[i]));
    // 4 sequences of up to 160 tokens need 12 blocks; the pool has 6 besides the pad block.
    const sched = new Scheduler(model, { maxConcurrent: 4, kvBlocks: 7 });
    try {
      const together = await Promise.all(prompts.map((p, i) => sched.submit({ prompt: p, options: opts[i] })));
      for (const [i, r] of together.entries()) {
        expect(r.tokens, `request ${i}`).toEqual(alone[i].tokens);
        expect(r.finishReason).toBe(alone[i].finishReason);
      }
      expect(sched.stats().preempted).toBeGreaterThan(0);
      expect(sched.stats().kv.inUse).toBe(1); // all blocks back (the pad block stays)
    } finally {
      await sched.close();
    }
  });

  it("first come, first served: with one slot, requests finish in the order they came", async () => {
    const V = model.config.vocabSize;
    const prompts = makePrompts(4, V, [9, 3, 12, 6], 81);
    const sched = new Scheduler(model, { maxConcurrent: 1 });
    const done: number[] = [];
    try {
      await Promise.all(prompts.map((p, i) => sched.submit({ prompt: p, options: { maxNewTokens: 4 + (3 - i), temperature: 0, stop: [] } }).then(() => done.push(i))));
      expect(done).toEqual([0, 1, 2, 3]);
    } finally {
      await sched.close();
    }
  });

  it("a disconnect frees the request's blocks at once, not at its next token", async () => {
    const V = model.config.vocabSize;
    const [p, q] = makePrompts(2, V, [150, 20], 91);
    const sched = new Scheduler(model, { maxConcurrent: 2 });
    const ac = new AbortController();
    let got = 0;
    try {
      const keep = sched.submit({ prompt: q, options: { maxNewTokens: 60, temperature: 0, stop: [] } });
      const r = sched.submit({ prompt: p, options: { maxNewTokens: 200, temperature: 0, stop: [], signal: ac.signal }, onChunk: (c) => (got += c.tokens.length) });
      await until(() => got >= 3);
      const held = sched.stats().kv.inUse;
      expect(held).toBeGreaterThanOrEqual(1 + 3 + 1); // the pad block, 150 + tokens (3 blocks), the other request
      ac.abort();
      await model.runtime.exclusive(async () => undefined); // the job the abort queued has run
      expect(sched.stats().kv.inUse).toBe(held - 3);
      expect(sched.stats().active).toBe(1);
      const res = await r;
      expect(res.finishReason).toBe("abort");
      await keep;
    } finally {
      await sched.close();
    }
  });

  it("an abort while the prompt is still going in by chunks frees its blocks at once; the request ends with no tokens", async () => {
    const V = model.config.vocabSize;
    const [p] = makePrompts(1, V, [400], 95);
    const sched = new Scheduler(model, { maxConcurrent: 2, stepTokens: 64 });
    const ac = new AbortController();
    try {
      const r = sched.submit({ prompt: p, options: { maxNewTokens: 5, temperature: 0, signal: ac.signal } });
      await until(() => sched.stats().prefilling === 1 && sched.stats().kv.inUse > 2); // some chunks in
      expect(sched.stats().kv.inUse).toBeLessThan(1 + Math.ceil(400 / 64)); // not all of them
      ac.abort();
      await model.runtime.exclusive(async () => undefined);
      expect(sched.stats()).toMatchObject({ active: 0, prefilling: 0, aborted: 1 });
      expect(sched.stats().kv.inUse).toBe(1);
      const res = await r;
      expect(res).toMatchObject({ finishReason: "abort", tokens: [] });
    } finally {
      await sched.close();
    }
  });

  it("a prompt that can never fit the pool is refused with ERR_GLM4_KV_CACHE_FULL; the others are served", async () => {
    const V = model.config.vocabSize;
    const [big, small] = makePrompts(2, V, [300, 10], 101);
    const sched = new Scheduler(model, { maxConcurrent: 2, kvBlocks: 4 }); // 3 blocks: 192 tokens
    try {
      const a = sched.submit({ prompt: big, options: { maxNewTokens: 4, temperature: 0 } });
      const b = sched.submit({ prompt: small, options: { maxNewTokens: 4, temperature: 0 } });
      await expect(a).rejects.toMatchObject({ code: "ERR_GLM4_KV_CACHE_FULL" });
      expect((await b).tokens.length).toBeGreaterThan(0);
      expect(sched.stats().kv.inUse).toBe(1);
    } finally {
      await sched.close();
    }
  });
});
