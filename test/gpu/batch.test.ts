/**
 * Continuous batching on CUDA: sequences in slots of one shared bf16 KV cache, decoded one batched step at a
 * time (1..8 rows a replay: the INT4 and dense GEMVs, one weight pass, per-row arithmetic independent of M; the
 * attention's split-K cluster path divides start..pos relative to start), give bit for bit the logits and
 * tokens they give alone on a one-slot engine of the same GPU. The tiny checkpoint (both weight paths)
 * and the synthetic full-size GLM-4-9B INT4 (head dim 128, 32 heads: the shapes of the real decode). Also the
 * server's scheduler with 8 concurrent greedy requests. Runs only where the addon has CUDA and a GPU is visible.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { buildInfo, devices, loadGlm4, type Glm4Model } from "../../lib/index.js";
import { Engine } from "../../lib/engine/engine.js";
import { Scheduler } from "../../lib/serve/scheduler.js";
import { makePrompts, runAlone, runBatched } from "../helpers/batch-check.js";

const hasGpu = buildInfo().backends.includes("cuda") && devices().length > 0;
const DIR = path.resolve(import.meta.dirname, "../../fixtures/tiny-glm4/original");

async function joinAndLeave(model: Glm4Model, V: number) {
  const prompts = makePrompts(10, V, [8, 15, 3, 20, 1, 14, 9, 7, 2, 11]);
  const n = [14, 10, 9, 16, 9, 7, 11, 4, 8, 6];
  const joinAt = [0, 0, 1, 1, 2, 3, 3, 5, 6, 9];
  const alone = [];
  for (const [i, p] of prompts.entries()) alone.push(await runAlone(model, p, n[i]));
  const { traces, widest } = await runBatched(model, 8, prompts, n, joinAt);
  expect(widest).toBe(8);
  for (const [i, t] of traces.entries()) {
    expect(t.tokens, `sequence ${i} tokens`).toEqual(alone[i].tokens);
    expect(t.logits, `sequence ${i} logits (f32 bits)`).toEqual(alone[i].logits);
  }
}

describe.skipIf(!hasGpu)("continuous batching on the GPU", () => {
  const models: Record<string, Glm4Model> = {};
  beforeAll(async () => {
    for (const q of ["none", "int4"] as const) models[q] = await loadGlm4(DIR, { device: "cuda", quantization: q, prefillChunk: 7, maxContext: 64 });
  });
  afterAll(async () => {
    for (const m of Object.values(models)) await m.dispose();
  });

  for (const q of ["none", "int4"] as const) {
    it(`tiny ${q === "none" ? "bf16" : "int4"}: 10 sequences joining and leaving 8 slots equal their solo decode bit for bit`, async () => {
      await joinAndLeave(models[q], models[q].config.vocabSize);
    });
  }

  it("the server's scheduler: 8 concurrent greedy requests decode 8-wide with exactly their solo tokens", async () => {
    const model = models.int4;
    const prompts = makePrompts(8, model.config.vocabSize, [5, 12, 1, 9, 16, 3, 7, 10], 7);
    const alone = [];
    for (const [i, p] of prompts.entries()) alone.push(await model.generate(p, { maxNewTokens: 6 + 2 * i, temperature: 0 }));
    const step = vi.spyOn(Engine.prototype, "step");
    const run = vi.spyOn(Engine.prototype, "run"); // the scheduler's rounds (GLM4_RUN_ROUNDS, 8 on CUDA) once all decode
    const sched = new Scheduler(model, { maxConcurrent: 8, maxContext: 64 });
    try {
      const together = await Promise.all(prompts.map((p, i) => sched.submit({ prompt: p, options: { maxNewTokens: 6 + 2 * i, temperature: 0 } })));
      for (const [i, r] of together.entries()) expect(r.tokens, `request ${i}`).toEqual(alone[i].tokens);
      expect(Math.max(...step.mock.calls.map((c) => c[0].length), ...run.mock.calls.map((c) => c[0].length))).toBe(8);
    } finally {
      step.mockRestore();
      run.mockRestore();
      await sched.close();
    }
  });

  it("synthetic GLM-4-9B INT4: 10 sequences joining and leaving 8 slots equal their solo decode bit for bit", async () => {
    const model = await loadGlm4(null, { synthetic: "glm-4-9b", device: "cuda", maxContext: 128, prefillChunk: 7 });
    try {
      await joinAndLeave(model, model.config.vocabSize);
    } finally {
      await model.dispose();
    }
  }, 600_000);
});
