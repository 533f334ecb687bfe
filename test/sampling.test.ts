/**
 * The repetition penalty runs on the device as part of the sample op (one flush a token): an engine's picks with a
 * penalty equal the host reference (the step's logits read back, HF's penalty in float32 over the tokens seen,
 * prompt included, then sampleHost), greedy and sampled, on the tiny checkpoint (CPU backend).
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadGlm4, sampleHost, type Glm4Model } from "../lib/index.js";
import { rng } from "../lib/engine/generation.js";

const DIR = path.resolve(import.meta.dirname, "../fixtures/tiny-glm4/original");

let model: Glm4Model;
beforeAll(async () => {
  model = await loadGlm4(DIR, { device: "cpu", maxContext: 64 });
});
afterAll(async () => {
  await model?.dispose();
});

function penalize(logits: Float32Array, seen: Iterable<number>, penalty: number): Float32Array {
  const out = Float32Array.from(logits);
  const p = Math.fround(penalty);
  for (const id of seen) out[id] = logits[id] > 0 ? logits[id] / p : logits[id] * p;
  return out;
}

describe("repetition penalty on the device", () => {
  for (const s of [
    { temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1.7 },
    { temperature: 0.9, topK: 0, topP: 0.95, minP: 0, repetitionPenalty: 1.3 },
    { temperature: 1.2, topK: 8, topP: 1, minP: 0.02, repetitionPenalty: 0.7 },
  ]) {
    it(`picks what the host reference picks: ${JSON.stringify(s)}`, async () => {
      const e = model.runtime.newEngine({ maxBatch: 1, maxContext: 64 });
      try {
        const slot = e.admit();
        const prompt = [5, 17, 5, 9, 33, 17, 2];
        await e.prefill(slot, prompt);
        // the penalized list is the prompt and the token the model likes best now (so that the penalty bites)
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
});
