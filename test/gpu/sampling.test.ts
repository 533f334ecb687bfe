/**
 * Sampling inside the engine on the GPU (tiny checkpoint, cuda): with a repetition penalty each pick runs on the
 * device in one flush and equals the host reference on the same logits (read back, penalized in float32 over the
 * listed tokens, sampleHost); and rows with different settings picked in one call equal each row picked alone.
 * Runs only where the addon has CUDA and a GPU is visible.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildInfo, devices, loadGlm4, sampleHost, type Glm4Model } from "../../lib/index.js";
import { rng } from "../../lib/engine/generation.js";
import { TINY } from "../helpers/golden.js";

const hasGpu = buildInfo().backends.includes("cuda") && devices().length > 0;

function penalize(logits: Float32Array, seen: Iterable<number>, penalty: number): Float32Array {
  const out = Float32Array.from(logits);
  const p = Math.fround(penalty);
  for (const id of seen) out[id] = logits[id] > 0 ? logits[id] / p : logits[id] * p;
  return out;
}

describe.skipIf(!hasGpu)("sampling in the engine on the GPU", () => {
  let model: Glm4Model;
  beforeAll(async () => {
    model = await loadGlm4(path.join(TINY, "original"), { device: "cuda", maxContext: 64 });
  });
  afterAll(async () => {
    await model?.dispose();
  });

  for (const s of [
    { temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1.7 },
    { temperature: 0.9, topK: 0, topP: 0.95, minP: 0, repetitionPenalty: 1.3 },
    { temperature: 1.2, topK: 8, topP: 1, minP: 0.02, repetitionPenalty: 0.7 },
  ]) {
    it(`repetition penalty: device picks equal the host reference, ${JSON.stringify(s)}`, async () => {
      const e = model.runtime.newEngine({ maxBatch: 1, maxContext: 64 });
      try {
        const slot = e.admit();
        const prompt = [5, 17, 5, 9, 33, 17, 2];
        await e.prefill(slot, prompt);
        const first = e.readLogits(slot);
        const seen = new Set([...prompt, first.indexOf(Math.max(...first))]);
        const u = rng(7);
        let changed = 0;
        for (let k = 0; k < 12; ++k) {
          const p = { ...s, u: u() };
          const logits = e.readLogits(slot);
          const want = sampleHost(penalize(logits, seen, s.repetitionPenalty), p);
          if (sampleHost(logits, p) !== want) changed++;
          const [got] = await e.pick([{ slot, params: { ...p, penaltyIds: Int32Array.from(seen) } }]);
          expect(got, `step ${k}`).toBe(want);
          seen.add(got);
          await e.step([{ slot, token: got }]);
        }
        expect(changed, "steps where the penalty changes the pick").toBeGreaterThan(0);
      } finally {
        await model.runtime.releaseEngine(e);
      }
    });
  }

  it("rows with different settings picked in one call equal each row picked alone", async () => {
    const e = model.runtime.newEngine({ maxBatch: 6, maxContext: 64 });
    try {
      const slots = Array.from({ length: 6 }, () => e.admit());
      for (const [i, slot] of slots.entries()) await e.prefill(slot, [3 + i, 40 + 2 * i, 7, 11 * (i + 1)]);
      const u = rng(11);
      const rows = slots.map((slot, i) => ({
        slot,
        params: [
          { temperature: 0, topK: 0, topP: 1, minP: 0, u: u() },
          { temperature: 0.8, topK: 0, topP: 0.8, minP: 0, u: u() },
          { temperature: 1, topK: 40, topP: 1, minP: 0, u: u() },
          { temperature: 1, topK: 0, topP: 1, minP: 0.05, u: u() },
          { temperature: 1.1, topK: 0, topP: 0.9, minP: 0, u: u(), repetitionPenalty: 1.3, penaltyIds: [3, 40, 7] },
          { temperature: 0, topK: 0, topP: 1, minP: 0, u: u(), repetitionPenalty: 1.5, penaltyIds: [8, 9, 10] },
        ][i],
      }));
      const together = await e.pick(rows);
      const alone = [];
      for (const r of rows) alone.push((await e.pick([r]))[0]);
      expect(together).toEqual(alone);
    } finally {
      await model.runtime.releaseEngine(e);
    }
  });
});
