/**
 * The paged KV cache (lib/engine/block-pool.ts, lib/engine/kv-cache.ts) on the CPU backend (tiny checkpoint):
 * the allocator against a simple model under random sequences of operations, paged decode equal bit for bit to a
 * contiguous cache, prefix sharing giving the same tokens as no sharing, a full pool refusing cleanly.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadGlm4, type Glm4Model } from "../lib/index.js";
import { BlockPool, blockHash } from "../lib/engine/block-pool.js";
import { KV_BLOCK, KvCache, kvBlocksFor, blockBytes } from "../lib/engine/kv-cache.js";
import { Scratch, recordLayers, recordLinear } from "../lib/engine/forward.js";
import type { NativeTensor } from "../lib/engine/native.js";
import { makePrompts, runAlone } from "./helpers/batch-check.js";

const DIR = path.resolve(import.meta.dirname, "../fixtures/tiny-glm4/original");
const GREEDY = { temperature: 0, topK: 0, topP: 1, minP: 0, u: 0 };

/** A small seeded generator for the random operation sequences. */
function rnd(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => {
    a = (Math.imul(a ^ (a >>> 15), 2654435761) + 0x6d2b79f5) >>> 0;
    return Math.floor((a / 2 ** 32) * n);
  };
}

describe("BlockPool against a simple model", () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    it(`2,000 random allocate / retain / release / register / lookup operations (seed ${seed})`, () => {
      const N = 12;
      const pool = new BlockPool(N, KV_BLOCK);
      const r = rnd(seed);
      // The model: holders per block, the hash of each registered block, the cached blocks in the order they were freed.
      const ref = new Array<number>(N).fill(0);
      const hash = new Map<number, string>();
      let lru: number[] = [];
      const held = () => ref.flatMap((c, b) => Array.from({ length: c }, () => b));
      for (let step = 0; step < 2000; step++) {
        const op = r(5);
        if (op === 0) {
          const avail = ref.filter((c) => c === 0).length;
          if (avail === 0) {
            expect(() => pool.allocate()).toThrow(expect.objectContaining({ code: "ERR_GLM4_KV_CACHE_FULL" }));
            continue;
          }
          const b = pool.allocate();
          expect(ref[b]).toBe(0);
          if (hash.has(b)) {
            // a cached block is taken only when no free one is left, and the least recently freed first
            expect(ref.filter((c, i) => c === 0 && !hash.has(i)).length).toBe(0);
            expect(b).toBe(lru[0]);
            hash.delete(b);
          }
          lru = lru.filter((x) => x !== b);
          ref[b] = 1;
        } else if (op === 1 && held().length) {
          const hs = held();
          const b = hs[r(hs.length)];
          pool.retain(b);
          ref[b]++;
        } else if (op === 2 && held().length) {
          const hs = held();
          const b = hs[r(hs.length)];
          pool.release(b);
          if (--ref[b] === 0 && hash.has(b)) lru.push(b);
        } else if (op === 3 && held().length) {
          const hs = held();
          const b = hs[r(hs.length)];
          const h = `h${r(20)}`;
          const ok = pool.register(b, h);
          expect(ok).toBe(!hash.has(b) && ![...hash.values()].includes(h));
          if (ok) hash.set(b, h);
        } else if (op === 4) {
          const h = `h${r(20)}`;
          const b = pool.lookup(h);
          const want = [...hash].find(([, x]) => x === h)?.[0];
          expect(b).toBe(want);
          if (b !== undefined) {
            if (ref[b] === 0) lru = lru.filter((x) => x !== b);
            ref[b]++;
          }
        }
        pool.check();
        expect(pool.inUse).toBe(ref.filter((c) => c > 0).length);
        expect(pool.cachedCount).toBe(lru.length);
        for (let b = 0; b < N; b++) expect(pool.refCount(b)).toBe(ref[b]);
      }
    });
  }

  it("hash chains: equal prefixes hash equal, a different earlier block changes every later hash", () => {
    const a = Array.from({ length: KV_BLOCK }, (_, i) => i), b = a.map((x) => x + 1);
    expect(blockHash("", a)).toBe(blockHash("", [...a]));
    expect(blockHash(blockHash("", a), b)).not.toBe(blockHash(blockHash("", b), b));
  });
});

let model: Glm4Model;
beforeAll(async () => {
  model = await loadGlm4(DIR, { device: "cpu", maxContext: 512 });
});
afterAll(async () => {
  await model?.dispose();
});

describe("KvCache: sequences growing, sharing, truncating and leaving (cpu)", () => {
  it("random grow / truncate / share / free on 4 slots: refcounts equal the table entries, shared blocks are full and registered", () => {
    const ctx = model.runtime.ctx;
    const kv = new KvCache(ctx, model.config, 4, 512, "f32", 24);
    const r = rnd(9);
    const heads = makePrompts(3, 100, [300, 300, 300], 5); // three prompt heads the sequences draw from
    const ids: number[][] = [[], [], [], []];
    try {
      for (let step = 0; step < 600; step++) {
        const slot = r(4), op = r(4), len = ids[slot].length;
        if (op === 0) {
          const n = 1 + r(80);
          const to = Math.min(512, len + n);
          const head = heads[slot % 3];
          try {
            kv.reserve([{ slot, len, to }]);
            for (let p = len; p < to; p++) ids[slot].push(p < 300 && r(4) ? head[p] : r(100));
            kv.filled(slot, ids[slot], to);
          } catch (e) {
            expect((e as { code?: string }).code).toBe("ERR_GLM4_KV_CACHE_FULL");
            expect(kv.blocksOf(slot).length).toBe(Math.ceil(len / KV_BLOCK)); // nothing changed
          }
        } else if (op === 1 && len) {
          const n = r(len + 1);
          kv.truncate(slot, n);
          ids[slot].length = n;
        } else if (op === 2 && len === 0) {
          const head = heads[r(3)];
          const m = kv.attachPrefix(slot, head, 0);
          expect(m % KV_BLOCK).toBe(0);
          ids[slot] = head.slice(0, m);
        } else if (op === 3) {
          kv.free(slot);
          ids[slot] = [];
        }
        kv.pool.check();
        const count = new Map<number, number>([[0, 1]]);
        for (let s = 0; s < 4; s++) {
          expect(kv.blocksOf(s).length).toBe(Math.ceil(ids[s].length / KV_BLOCK));
          for (const b of kv.blocksOf(s)) count.set(b, (count.get(b) ?? 0) + 1);
        }
        for (let b = 0; b < kv.pool.numBlocks; b++) expect(kv.pool.refCount(b), `block ${b}`).toBe(count.get(b) ?? 0);
        for (const [b, c] of count) if (c > 1 && b !== 0) expect(kv.pool.isRegistered(b)).toBe(true);
      }
    } finally {
      kv.dispose();
    }
  });

  it("pool sizing: explicit blocks, bytes, or a share of the device's memory; bad values are refused by name", () => {
    const cfg = model.config;
    const bb = blockBytes(cfg, "bf16");
    expect(bb).toBe(2 * cfg.numLayers * KV_BLOCK * cfg.numKvHeads * cfg.headDim * 2);
    expect(kvBlocksFor({ kvBlocks: 10 }, cfg, "bf16", 5)).toBe(10);
    expect(kvBlocksFor({ kvCacheBytes: 10.5 * bb }, cfg, "bf16", 5)).toBe(10);
    expect(kvBlocksFor({}, cfg, "bf16", 5)).toBe(5);
    const dev = { totalMemory: 1000 * bb, freeMemory: 800 * bb, reserveBytes: 100 * bb };
    expect(kvBlocksFor({ gpuMemoryUtilization: 0.9 }, cfg, "bf16", 5, dev)).toBe(900 - 200 - 100);
    expect(kvBlocksFor({ gpuMemoryUtilization: 0.9 }, cfg, "bf16", 5)).toBe(5); // no device: the default
    expect(() => kvBlocksFor({ gpuMemoryUtilization: 0.25 }, cfg, "bf16", 5, dev)).toThrow(/gpuMemoryUtilization 0.25 leaves no room/);
    expect(() => kvBlocksFor({ gpuMemoryUtilization: 1.5 }, cfg, "bf16", 5, dev)).toThrow(/gpuMemoryUtilization must be/);
    expect(() => kvBlocksFor({ kvBlocks: 1 }, cfg, "bf16", 5)).toThrow(/kvBlocks must be an integer >= 2/);
    expect(() => kvBlocksFor({ kvCacheBytes: bb }, cfg, "bf16", 5)).toThrow(/kvCacheBytes must be at least two blocks/);
  });
});

/**
 * Logits of `prompt` then `steps` greedy tokens through a CONTIGUOUS cache (attention's form without a table: row =
 * position), recorded straight from forward.ts: one chunk for the prompt, then one token a step.
 */
async function contiguous(prompt: readonly number[], steps: number): Promise<{ tokens: number[]; logits: Float32Array[] }> {
  const { ctx, config: cfg, weights: w } = model.runtime;
  const kvc = { k: [] as NativeTensor[], v: [] as NativeTensor[], blockSize: 0 };
  const S = prompt.length + steps;
  for (let i = 0; i < cfg.numLayers; i++) {
    kvc.k.push(ctx.empty("f32", [S, cfg.numKvHeads, cfg.headDim]));
    kvc.v.push(ctx.empty("f32", [S, cfg.numKvHeads, cfg.headDim]));
  }
  const out = { tokens: [] as number[], logits: [] as Float32Array[] };
  try {
    let feed = [...prompt];
    let pos = 0;
    for (let i = 0; i <= steps; i++) {
      const T = feed.length;
      const s = new Scratch(ctx, cfg, T);
      const h = ctx.empty("f32", [1, cfg.hiddenSize]), lg = ctx.empty("f32", [1, cfg.vocabSize]);
      try {
        s.x.write(w.embed.gather(feed));
        s.pos.write(Int32Array.from(feed, (_, j) => pos + j));
        recordLayers(ctx, cfg, w, s, kvc as unknown as KvCache, null);
        const last = s.x.slice0(T - 1, T);
        ctx.rmsnorm(h, last, w.finalNorm, cfg.rmsEps);
        recordLinear(ctx, lg, h, w.output);
        last.dispose();
        const l = lg.read() as Float32Array;
        out.logits.push(l);
        let best = 0;
        for (let j = 1; j < l.length; j++) if (l[j] > l[best]) best = j;
        out.tokens.push(best);
        pos += T;
        feed = [best];
      } finally {
        s.dispose();
        h.dispose();
        lg.dispose();
      }
    }
  } finally {
    for (const t of [...kvc.k, ...kvc.v]) t.dispose();
  }
  return out;
}

describe("paged decode (cpu)", () => {
  it("three sequences whose blocks interleave in the pool give bit for bit the logits of a contiguous cache", async () => {
    const V = model.config.vocabSize;
    const prompts = makePrompts(3, V, [70, 130, 5], 21);
    const steps = 80; // every sequence crosses block boundaries while the others take blocks between its own
    const refs: Awaited<ReturnType<typeof contiguous>>[] = [];
    for (const p of prompts) refs.push(await model.runtime.exclusive(() => contiguous(p, steps)));
    const e = model.runtime.newEngine({ maxBatch: 3, maxContext: 512 });
    try {
      await model.runtime.exclusive(async () => {
        const slots = prompts.map(() => e.admit());
        for (const [i, s] of slots.entries()) await e.prefill(s, prompts[i]);
        const got: Float32Array[][] = [[], [], []];
        for (let i = 0; i <= steps; i++) {
          slots.forEach((s, j) => got[j].push(e.readLogits(s)));
          const toks = await e.pick(slots.map((slot) => ({ slot, params: GREEDY })));
          if (i < steps) await e.step(slots.map((slot, j) => ({ slot, token: toks[j] })));
        }
        // the blocks really interleave: sequence 0's blocks are not one run
        const b0 = e.kv.blocksOf(slots[0]);
        expect(b0.some((b, i) => i > 0 && b !== b0[i - 1] + 1)).toBe(true);
        for (let j = 0; j < 3; j++) for (let i = 0; i <= steps; i++) expect(got[j][i], `sequence ${j} token ${i}`).toEqual(refs[j].logits[i]);
      });
    } finally {
      await model.runtime.releaseEngine(e);
    }
  });

  it("prefix sharing: a common 150-token head is computed once and held by reference; every sequence's tokens equal those without sharing", async () => {
    const V = model.config.vocabSize;
    const head = makePrompts(1, V, [150], 31)[0];
    const tails = makePrompts(4, V, [3, 9, 1, 20], 32);
    const prompts = tails.map((t) => [...head, ...t]);
    const alone: Awaited<ReturnType<typeof runAlone>>[] = [];
    for (const p of prompts) alone.push(await runAlone(model, p, 12));
    const e = model.runtime.newEngine({ maxBatch: 4, maxContext: 512 });
    try {
      await model.runtime.exclusive(async () => {
        const slots = prompts.map(() => e.admit());
        const kept: number[] = [];
        for (const [i, s] of slots.entries()) {
          kept.push(e.reusePrefix(s, prompts[i]));
          await e.prefill(s, prompts[i].slice(kept[i]));
        }
        expect(kept).toEqual([0, 128, 128, 128]); // two full blocks of the head, shared by the later three
        const first = e.kv.blocksOf(slots[0]).slice(0, 2);
        for (const s of slots.slice(1)) expect(e.kv.blocksOf(s).slice(0, 2)).toEqual(first);
        for (const b of first) expect(e.kv.pool.refCount(b)).toBe(4);
        const toks: number[][] = [[], [], [], []];
        let t = await e.pick(slots.map((slot) => ({ slot, params: GREEDY })));
        for (let i = 0; i < 12; i++) {
          t.forEach((x, j) => toks[j].push(x));
          if (i < 11) {
            await e.step(slots.map((slot, j) => ({ slot, token: t[j] })));
            t = await e.pick(slots.map((slot) => ({ slot, params: GREEDY })));
          }
        }
        for (let j = 0; j < 4; j++) expect(toks[j], `sequence ${j}`).toEqual(alone[j].tokens);
        // leaving: the shared blocks stay cached (ref 0) for the next sequence with the head
        for (const s of slots) e.release(s);
        expect(e.kvStats().inUse).toBe(1);
        expect(e.kvStats().cached).toBeGreaterThanOrEqual(2);
        const s = e.admit();
        expect(e.reusePrefix(s, prompts[2])).toBe(128);
      });
    } finally {
      await model.runtime.releaseEngine(e);
    }
  });

  it("truncating into a shared block copies it first (copy on write): the other holder's logits do not change", async () => {
    const V = model.config.vocabSize;
    const p = makePrompts(1, V, [140], 41)[0];
    const e = model.runtime.newEngine({ maxBatch: 2, maxContext: 512 });
    try {
      await model.runtime.exclusive(async () => {
        const a = e.admit(), b = e.admit();
        await e.prefill(a, p);
        expect(e.reusePrefix(b, p)).toBe(128);
        await e.prefill(b, p.slice(128));
        const before = e.readLogits(a);
        const shared = e.kv.blocksOf(b)[1];
        expect(e.kv.pool.refCount(shared)).toBe(2);
        e.truncate(b, 100); // position 100 lies in the second shared block
        await e.prefill(b, makePrompts(1, V, [30], 42)[0]);
        expect(e.kv.blocksOf(b)[1]).not.toBe(shared);
        expect(e.kv.pool.refCount(shared)).toBe(1);
        await e.step([{ slot: a, token: 7 }]);
        // the same ops on a cache of its own: the model's one-slot engine
        const solo = model.runtime.solo;
        solo.reset();
        await solo.prefill(p);
        expect(before).toEqual(solo.readLogits());
        await solo.step(7);
        expect(e.readLogits(a)).toEqual(solo.readLogits());
        solo.reset();
      });
    } finally {
      await model.runtime.releaseEngine(e);
    }
  });

  it("a full pool refuses cleanly: ERR_GLM4_KV_CACHE_FULL, nothing held changes, the other sequence decodes on", async () => {
    const V = model.config.vocabSize;
    const [pa, pb] = makePrompts(2, V, [100, 100], 51);
    const alone = await runAlone(model, pa, 10);
    const e = model.runtime.newEngine({ maxBatch: 2, maxContext: 512, kvBlocks: 4 }); // the pad block + 3
    try {
      await model.runtime.exclusive(async () => {
        const a = e.admit(), b = e.admit();
        await e.prefill(a, pa); // 2 blocks
        const before = e.kvStats();
        await expect(e.prefill(b, pb)).rejects.toMatchObject({ code: "ERR_GLM4_KV_CACHE_FULL" });
        expect(e.kvStats()).toEqual(before);
        expect(e.length(b)).toBe(0);
        expect(e.blocksFor(b, 64)).toBe(1);
        const toks = await e.pick([{ slot: a, params: GREEDY }]);
        for (let i = 1; i < 10; i++) {
          await e.step([{ slot: a, token: toks[i - 1] }]);
          toks.push((await e.pick([{ slot: a, params: GREEDY }]))[0]);
        }
        expect(toks).toEqual(alone.tokens);
        // a step that needs more blocks than are left refuses for all its rows, before anything is recorded
        await e.prefill(b, pb.slice(0, 64)); // the last block
        const lenA = e.length(a), lenB = e.length(b);
        await expect(e.step([{ slot: a, token: 1 }, { slot: b, token: 1 }])).rejects.toMatchObject({ code: "ERR_GLM4_KV_CACHE_FULL" });
        expect([e.length(a), e.length(b)]).toEqual([lenA, lenB]);
      });
    } finally {
      await model.runtime.releaseEngine(e);
    }
  });
});
