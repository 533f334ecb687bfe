/**
 * Decoding in rounds (Engine.run; GLM4_RUN_ROUNDS, 8 on CUDA, 1 on the CPU) gives exactly what the token-by-token
 * loop gives: the same tokens, text, finish reason and usage, and the cache cut back to where the loop leaves it
 * when a sequence stops inside a run (a stop token, a stop string, maxNewTokens, a full context), for greedy and
 * seeded sampling, through model.generate and the server's scheduler. On the CPU backend Engine.run is the loop of
 * pick() and step() itself, so this checks the bookkeeping around it (Generation.acceptRun, the scheduler's
 * rounds); test/gpu/run.test.ts checks the device-fed run against the loop on CUDA.
 */
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { loadGlm4, type Glm4Model } from "../lib/index.js";
import { Engine } from "../lib/engine/engine.js";
import { runRounds } from "../lib/engine/generation.js";
import { Scheduler } from "../lib/serve/scheduler.js";
import type { GenerateOptions } from "../lib/types.js";
import { makePrompts } from "./helpers/batch-check.js";

const DIR = path.resolve(import.meta.dirname, "../fixtures/tiny-glm4/original");

let model: Glm4Model;
beforeAll(async () => {
  model = await loadGlm4(DIR, { device: "cpu", maxContext: 48 });
});
afterAll(async () => {
  await model?.dispose();
});
afterEach(() => {
  delete process.env.GLM4_RUN_ROUNDS;
});

async function generateWith(rounds: number, prompt: number[], o: GenerateOptions) {
  process.env.GLM4_RUN_ROUNDS = String(rounds);
  const run = vi.spyOn(Engine.prototype, "run");
  try {
    const r = await model.generate(prompt, o);
    const seq = model.runtime.solo;
    return { r, cache: seq.tokens.slice(), length: seq.length, runs: run.mock.calls.map((c) => c[1]) };
  } finally {
    run.mockRestore();
  }
}

describe("decoding in rounds (cpu)", () => {
  it("GLM4_RUN_ROUNDS: 1 on the CPU by default, 8 on CUDA; a bad value is refused with what to do", () => {
    expect(runRounds("cpu")).toBe(1);
    expect(runRounds("cuda:0")).toBe(8);
    process.env.GLM4_RUN_ROUNDS = "4";
    expect(runRounds("cpu")).toBe(4);
    process.env.GLM4_RUN_ROUNDS = "0";
    expect(() => runRounds("cuda:0")).toThrow(/GLM4_RUN_ROUNDS must be an integer in 1\.\.64/);
  });

  const V = () => model.config.vocabSize;
  const cases: [string, (loop: number[]) => GenerateOptions][] = [
    ["maxNewTokens inside a run", () => ({ maxNewTokens: 7, temperature: 0, stop: [] })],
    ["a stop token in the middle of a run", (loop) => ({ maxNewTokens: 20, temperature: 0, stop: [loop[5]] })],
    ["a full context inside a run", () => ({ maxNewTokens: 100, temperature: 0, stop: [] })],
    ["seeded sampling", () => ({ maxNewTokens: 13, temperature: 0.9, topK: 20, topP: 0.95, seed: 7, stop: [] })],
  ];
  for (const [name, opts] of cases) {
    it(`${name}: rounds of 4 give what the token-by-token loop gives, cache included`, async () => {
      const prompt = makePrompts(1, V(), [name.includes("context") ? 30 : 9], 5)[0];
      const first = await generateWith(1, prompt, { maxNewTokens: 20, temperature: 0, stop: [] });
      const o = opts(first.r.tokens);
      const loop = await generateWith(1, prompt, o);
      const rounds = await generateWith(4, prompt, o);
      expect(loop.runs, "rounds = 1 never calls Engine.run").toEqual([]);
      expect(rounds.runs.length, "rounds = 4 decodes through Engine.run").toBeGreaterThan(0);
      expect(rounds.runs.every((k) => k >= 2 && k <= 4)).toBe(true);
      expect(rounds.r.tokens).toEqual(loop.r.tokens);
      expect(rounds.r.text).toBe(loop.r.text);
      expect(rounds.r.finishReason).toBe(loop.r.finishReason);
      expect(rounds.r.usage).toEqual(loop.r.usage);
      expect(rounds.length, "cache length").toBe(loop.length);
      expect(rounds.cache).toEqual(loop.cache);
      if (name.includes("stop token")) expect(loop.r.finishReason).toBe("stop");
      if (name.includes("context")) expect(loop.r.finishReason).toBe("length");
    });
  }

  it("the scheduler: 5 concurrent requests (greedy, sampled, a stop token, staggered limits) get the same tokens in rounds of 3 as tick by tick", async () => {
    const prompts = makePrompts(5, V(), [4, 9, 2, 7, 5], 9);
    const opts = (i: number): GenerateOptions => (i % 2 ? { maxNewTokens: 5 + 3 * i, temperature: 0.8, seed: 11 + i, stop: [] } : { maxNewTokens: 4 + 2 * i, temperature: 0, stop: i === 2 ? [17] : [] });
    const serve = async (rounds: number) => {
      process.env.GLM4_RUN_ROUNDS = String(rounds);
      const run = vi.spyOn(Engine.prototype, "run");
      const sched = new Scheduler(model, { maxConcurrent: 5, maxContext: 48 });
      try {
        const r = await Promise.all(prompts.map((p, i) => sched.submit({ prompt: p, options: opts(i) })));
        return { r, runs: run.mock.calls.length };
      } finally {
        run.mockRestore();
        await sched.close();
      }
    };
    const ticks = await serve(1);
    const rounds = await serve(3);
    expect(ticks.runs).toBe(0);
    expect(rounds.runs).toBeGreaterThan(0);
    for (let i = 0; i < prompts.length; i++) {
      expect(rounds.r[i].tokens, `request ${i} tokens`).toEqual(ticks.r[i].tokens);
      expect(rounds.r[i].finishReason, `request ${i}`).toBe(ticks.r[i].finishReason);
    }
  });
});

describe("Engine.run's device-fed rounds on the CPU backend (GLM4_DEVICE_FED=1)", () => {
  afterEach(() => {
    delete process.env.GLM4_DEVICE_FED;
  });
  it("equal the pick/step loop bit for bit: greedy, sampled and mixed rows, 1..5 rows, runs of 1, 3 and 4 rounds on the same buckets, a row count that shrinks", async () => {
    const V = model.config.vocabSize;
    const prompts = makePrompts(5, V, [6, 3, 9, 1, 4], 21);
    const sampledRow = (i: number, mode: number) => mode === 1 || (mode === 2 && i % 2 === 0);
    const params = (i: number, mode: number) => (sampledRow(i, mode) ? { temperature: 0.8, topK: 30, topP: 0.9, minP: 0.02, u: 0 } : { temperature: 0, topK: 0, topP: 1, minP: 0, u: 0 });
    const drive = async (fed: "0" | "1") => {
      process.env.GLM4_DEVICE_FED = fed;
      const be = model.runtime.newEngine({ maxBatch: 5, maxContext: 48 });
      const slots = prompts.map(() => be.admit());
      for (const [i, s] of slots.entries()) await be.prefill(s, prompts[i]); // (a 1-token prompt goes in by step())
      const step = vi.spyOn(Engine.prototype, "step");
      try {
        const tokens: number[][] = [];
        let u = 0;
        // (rows, rounds, mode): 5 rows greedy, 4 rows sampled (bucket 4), 3 rows mixed (bucket 4, fewer rows), 1 row
        for (const [nr, k, mode] of [[5, 3, 0], [4, 4, 1], [3, 3, 2], [1, 1, 0], [5, 4, 2]] as const) {
          const rows = slots.slice(0, nr).map((slot, i) => ({ slot, params: params(i, mode), us: Array.from({ length: k }, () => ((u += 0.377) % 1)) }));
          tokens.push(...(await be.run(rows, k)));
        }
        return { tokens, logits: slots.map((s) => be.readLogits(s)), lengths: slots.map((s) => be.length(s)), steps: step.mock.calls.length };
      } finally {
        step.mockRestore();
        await model.runtime.releaseEngine(be);
      }
    };
    const fedOut = await drive("1");
    const loop = await drive("0");
    expect(fedOut.steps, "the fed rounds never call step()").toBe(0);
    expect(loop.steps).toBeGreaterThan(0);
    expect(fedOut.tokens).toEqual(loop.tokens);
    expect(fedOut.lengths).toEqual(loop.lengths);
    for (let i = 0; i < 5; i++) expect(new Uint32Array(fedOut.logits[i].buffer), `slot ${i} logits (f32 bits)`).toEqual(new Uint32Array(loop.logits[i].buffer));
  });
});
