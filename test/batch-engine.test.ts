/**
 * Continuous batching on the CPU backend (tiny checkpoint): sequences in slots of one shared KV cache, decoded one
 * batched step at a time, give bit for bit the logits and tokens they give alone on a one-slot engine;
 * and the server's scheduler runs concurrent requests as one batch per tick with the same outputs.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { loadGlm4, type Glm4Model } from "../lib/index.js";
import { Engine } from "../lib/engine/engine.js";
import { KV_BLOCK, KvCache, checkMaxContext } from "../lib/engine/kv-cache.js";
import { Scheduler } from "../lib/serve/scheduler.js";
import { makePrompts, runAlone, runBatched } from "./helpers/batch-check.js";

const DIR = path.resolve(import.meta.dirname, "../fixtures/tiny-glm4/original");

let model: Glm4Model;
beforeAll(async () => {
  // prefillChunk 7: prompts of 8..20 tokens go in several chunks, some ending with a 1-token chunk (the step path).
  model = await loadGlm4(DIR, { device: "cpu", prefillChunk: 7, maxContext: 64 });
});
afterAll(async () => {
  await model?.dispose();
});

describe("one engine, several slots (cpu)", () => {
  it("10 sequences joining and leaving 8 slots: every logit and token equals the sequence decoded alone", async () => {
    const V = model.config.vocabSize;
    const prompts = makePrompts(10, V, [8, 15, 3, 20, 1, 14, 9, 7, 2, 11]);
    const n = [14, 10, 9, 16, 9, 7, 11, 4, 8, 6];
    const joinAt = [0, 0, 1, 1, 2, 3, 3, 5, 6, 9];
    const alone = [];
    for (const [i, p] of prompts.entries()) alone.push(await runAlone(model, p, n[i]));
    const { traces, widest } = await runBatched(model, 8, prompts, n, joinAt);
    expect(widest).toBe(8); // some steps really ran the full batch
    for (const [i, t] of traces.entries()) {
      expect(t.tokens, `sequence ${i} tokens`).toEqual(alone[i].tokens);
      expect(t.logits, `sequence ${i} logits`).toEqual(alone[i].logits);
    }
  });

  it("up to 128 rows a step (buckets 1..128, padded rows ignored): 130 sequences equal their solo decode bit for bit", async () => {
    const V = model.config.vocabSize;
    const count = 130;
    const prompts = makePrompts(count, V, [1, 4, 9, 2, 13, 6], 3);
    const n = Array.from({ length: count }, (_, i) => 2 + (i % 5));
    const joinAt = Array.from({ length: count }, (_, i) => (i < 100 ? 0 : i - 99)); // widths climb through 100..128
    const alone = [];
    for (const [i, p] of prompts.entries()) alone.push(await runAlone(model, p, n[i]));
    const { traces, widest } = await runBatched(model, 128, prompts, n, joinAt);
    expect(widest).toBeGreaterThan(64); // the 128 bucket ran
    for (const [i, t] of traces.entries()) {
      expect(t.tokens, `sequence ${i} tokens`).toEqual(alone[i].tokens);
      expect(t.logits, `sequence ${i} logits`).toEqual(alone[i].logits);
    }
  });

  it("checks its arguments", async () => {
    const b = model.runtime.newEngine({ maxBatch: 2, maxContext: 16 });
    try {
      const s = b.admit();
      await expect(b.step([{ slot: 1, token: 1 }])).rejects.toThrow(/slot 1 is not admitted/);
      await expect(b.step([{ slot: s, token: 1 }, { slot: s, token: 2 }])).rejects.toThrow(/twice/);
      await expect(b.prefill(s, [1, model.config.vocabSize])).rejects.toThrow(RangeError);
      await expect(b.prefill(s, Array.from({ length: 17 }, () => 1))).rejects.toThrow(/holds 16/);
      await expect(b.pick([{ slot: s, params: { temperature: 0, topK: 0, topP: 1, minP: 0, u: 0 } }])).rejects.toThrow(/no logits yet/);
      b.admit();
      expect(() => b.admit()).toThrow(/all 2 slots/);
    } finally {
      await model.runtime.releaseEngine(b);
    }
  });
});

describe("one engine for one sequence and for a batch", () => {
  it("a one-slot engine's step is the single-sequence step: fused QKV launch; B = 2 reads q, k, v apart", async () => {
    const rt = model.runtime;
    const L = model.config.numLayers;
    const greedy = { temperature: 0, topK: 0, topP: 1, minP: 0, u: 0 };
    // One real step of `slots` (so that the plan's inputs hold valid positions and rows), then its ops by name.
    const opsOf = (e: Engine, slots: number[]) =>
      rt.exclusive(async () => {
        for (const s of slots) {
          e.reset(s);
          await e.prefill(s, [1, 2, 3]);
        }
        await e.step(slots.map((slot) => ({ slot, token: 4 })));
        await e.pick(slots.map((slot) => ({ slot, params: greedy })));
        return rt.ctx.profile(await e.stepPlan(slots.length), 1).map((p) => p.op);
      });
    const count = (ops: string[], op: string) => ops.filter((o) => o === op).length;
    expect(rt.engine.maxBatch).toBe(1);
    const one = await opsOf(rt.engine, [rt.solo.slot]);
    expect(count(one, "matmul_int4")).toBe(4 * L + 1); // qkv, attn_out, gate_up, down a layer; the output layer
    const e = rt.newEngine({ maxBatch: 2 });
    try {
      const slots = [e.admit(), e.admit()];
      const two = await opsOf(e, slots);
      expect(count(two, "matmul_int4")).toBe(6 * L + 1); // q, k, v as three row views for two rows
      expect(two.length).toBe(one.length + 2 * L);
      expect(await opsOf(e, [slots[1]])).toEqual(one); // one row of a shared cache: the same ops, with a KV address
    } finally {
      await rt.releaseEngine(e);
    }
  });

  it("KV addressing: row = table[slot][pos / block] * block + pos % block, blocks handed out as sequences grow; maxContext is checked in one function", () => {
    const ctx = model.runtime.ctx;
    const kv = new KvCache(ctx, model.config, 3, 100, "f32");
    try {
      expect(kv.width).toBe(2);
      expect(kv.stats()).toMatchObject({ blocks: 3 * 2 + 1, inUse: 1, blockSize: KV_BLOCK }); // the pad block
      expect(kv.k[0].shape).toEqual([7 * KV_BLOCK, model.config.numKvHeads, model.config.headDim]);
      kv.reserve([{ slot: 2, len: 0, to: 70 }]); // two blocks: 1, 2
      kv.reserve([{ slot: 0, len: 0, to: 16 }]); // one block: 3
      expect([kv.blocksOf(2), kv.blocksOf(0)]).toEqual([[1, 2], [3]]);
      kv.sync();
      // A step of several slots: the whole table and each token's table row (padSlot: the pad row).
      const a = kv.newAddress(ctx, 3);
      kv.writeAddress(a, [{ slot: 2, pos: 66 }, { slot: 0, pos: 15 }, { slot: kv.padSlot, pos: 0 }]);
      expect(Array.from(a.rows.read())).toEqual([2 * KV_BLOCK + 2, 3 * KV_BLOCK + 15, 0]);
      expect(Array.from(a.seq!.read())).toEqual([2, 0, 3]);
      expect(a.table.shape).toEqual([4, 2]);
      expect(Array.from(a.table.read())).toEqual([3, 0, 0, 0, 1, 2, 0, 0]);
      a.dispose();
      // A chunk of one slot: that slot's table row, no sequence ids.
      const c = kv.newAddress(ctx, 2, 2);
      kv.writeAddress(c, [{ slot: 2, pos: 0 }, { slot: 2, pos: 1 }]);
      expect(Array.from(c.rows.read())).toEqual([KV_BLOCK, KV_BLOCK + 1]);
      expect(c.seq).toBeNull();
      expect(Array.from(c.table.read())).toEqual([1, 2]);
      c.dispose();
      kv.free(2);
      expect(kv.stats()).toMatchObject({ inUse: 2, available: 5 });
    } finally {
      kv.dispose();
    }
    expect(() => checkMaxContext(0, 64)).toThrow(RangeError);
    expect(() => checkMaxContext(65, 64)).toThrow(/maxContext must be an integer in \[1, 64\], got 65/);
    expect(() => checkMaxContext(2.5, 64)).toThrow(RangeError);
    expect(checkMaxContext(64, 64)).toBe(64);
    expect(() => new KvCache(ctx, model.config, 1025, 1, "f32")).toThrow(/maxBatch/);
    expect(() => model.runtime.newEngine({ maxContext: model.config.maxPositions + 1 })).toThrow(/maxContext must be an integer/);
  });
});

describe("the server's scheduler batches concurrent requests", () => {
  it("8 concurrent greedy streams decode as one batch and each gives exactly the tokens it gives alone", async () => {
    const V = model.config.vocabSize;
    const prompts = makePrompts(8, V, [5, 12, 1, 9, 16, 3, 7, 10], 7);
    const alone = [];
    for (const [i, p] of prompts.entries()) alone.push(await model.generate(p, { maxNewTokens: 6 + 2 * i, temperature: 0 }));
    const step = vi.spyOn(Engine.prototype, "step");
    const sched = new Scheduler(model, { maxConcurrent: 8, maxContext: 64 });
    try {
      const together = await Promise.all(prompts.map((p, i) => sched.submit({ prompt: p, options: { maxNewTokens: 6 + 2 * i, temperature: 0 } })));
      for (const [i, r] of together.entries()) {
        expect(r.tokens, `request ${i}`).toEqual(alone[i].tokens);
        expect(r.finishReason).toBe(alone[i].finishReason);
      }
      expect(Math.max(...step.mock.calls.map((c) => c[0].length))).toBe(8);
    } finally {
      step.mockRestore();
      await sched.close();
    }
  });

  it("sampled (seeded), greedy and repetition-penalty requests share the batch with their solo outputs", async () => {
    const V = model.config.vocabSize;
    const prompts = makePrompts(6, V, [4, 9, 2, 13, 6, 8], 11);
    const opts = [
      { temperature: 0.9, topP: 0.9, seed: 1 },
      { temperature: 0 },
      { temperature: 1.2, topK: 20, seed: 2 },
      { temperature: 0.7, repetitionPenalty: 1.3, seed: 3 },
      { temperature: 1, minP: 0.05, seed: 4 },
      { temperature: 0, repetitionPenalty: 1.2 },
    ].map((o) => ({ ...o, maxNewTokens: 12 }));
    const alone = [];
    for (const [i, p] of prompts.entries()) alone.push(await model.generate(p, opts[i]));
    const sched = new Scheduler(model, { maxConcurrent: 4, maxContext: 64 });
    try {
      const together = await Promise.all(prompts.map((p, i) => sched.submit({ prompt: p, options: opts[i] })));
      for (const [i, r] of together.entries()) expect(r.tokens, `request ${i}`).toEqual(alone[i].tokens);
    } finally {
      await sched.close();
    }
  });
});
