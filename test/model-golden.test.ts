/**
 * The whole model against an independent implementation: HF transformers GlmForCausalLM (float32, eager) on
 * the tiny checkpoint's bf16 weights ("bf16" path) and on the weights replaced by an independent numpy
 * INT4 quantize→dequantize ("int4" path). Goldens: fixtures/tiny-glm4/golden (scripts/golden_logits.py).
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadGlm4, type Glm4Model } from "../lib/index.js";
import { TINY, V, golden, goldenBin as bin, nerr, prompts } from "./helpers/golden.js";

const FIX = TINY;

// Our CPU path computes in f32 with f64 dot products; the golden is torch f32 (on an H100, TF32 off). The
// golden script measured its own distance to a float64 numpy forward at <= 1e-5 absolute on logits of std
// ~2.5, i.e. a normalized squared error near 1e-11. 1e-9 leaves two orders of magnitude for our own f32
// rounding (softmax, rotary angles in f32) while a wrong op (one bad head, a swapped rotary pair) gives > 1e-3.
const TOL = 1e-9;

for (const [pathName, quantization] of [["bf16", "none"], ["int4", "int4"]] as const) {
  describe(`tiny GLM-4 vs transformers, ${pathName} path`, () => {
    let orig: Glm4Model, hf: Glm4Model;
    beforeAll(async () => {
      orig = await loadGlm4(path.join(FIX, "original"), { device: "cpu", quantization });
      hf = await loadGlm4(path.join(FIX, "hf"), { device: "cpu", quantization });
    });
    afterAll(async () => {
      await orig?.dispose();
      await hf?.dispose();
    });

    for (const name of Object.keys(prompts)) {
      it(`logits of ${name} (${prompts[name].length} tokens) match the golden`, async () => {
        const want = bin(golden.results[pathName][name].logits_file);
        const got = await orig.logits(prompts[name]);
        expect(got.length).toBe(prompts[name].length * V);
        expect(nerr(got, want)).toBeLessThan(TOL);
        // Both namings load to the same weights: identical logits, bit for bit.
        const got2 = await hf.logits(prompts[name]);
        expect(Buffer.from(got2.buffer).equals(Buffer.from(got.buffer))).toBe(true);
      });

      it(`greedy continuation of ${name} equals the golden argmax tokens`, async () => {
        const r = golden.results[pathName][name];
        const want: number[] = r.greedy_new_tokens;
        const margins: number[] = r.greedy_top1_minus_top2;
        // Compare up to the first step whose golden top-1/top-2 margin is below what f32 rounding can flip
        // (1e-3, three orders above our logit error), and never past a token that our generate() stops on.
        let n = want.length;
        for (let i = 0; i < want.length; i++) if (margins[i] < 1e-3 || golden.eos?.includes?.(want[i])) { n = i; break; }
        const res = await orig.generate(prompts[name], { maxNewTokens: n, temperature: 0, stop: [] });
        const stopAt = res.tokens.length;
        expect(res.tokens).toEqual(want.slice(0, stopAt));
        if (stopAt < n) expect(orig.config.eosTokenIds).toContain(want[stopAt]);
        // Decode-step logits (KV cache path) against the golden per-step logits.
        const steps = bin(r.steps_file);
        const last = await orig.logits([...prompts[name], ...want.slice(0, 3)]);
        for (let i = 0; i <= 3; i++) {
          const row = last.subarray((prompts[name].length - 1 + i) * V, (prompts[name].length + i) * V);
          expect(nerr(row, steps.subarray(i * V, (i + 1) * V))).toBeLessThan(TOL);
        }
      });
    }
  });
}
