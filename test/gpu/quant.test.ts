/**
 * Quantization settings on the GPU (issue 15): symmetric, NF4, the output layer in bf16 and AWQ-scaled checkpoints
 * load on cuda (repacked into layout 1: the tensor-core GEMV for decode, the INT4 GEMMs for prompts, NF4 through
 * their 16-entry table) and agree with the CPU backend on the same checkpoint; eval on cuda agrees with eval on the
 * CPU. (quantize_int4 of every scheme, bit for bit against the reference, is in the op cases: test/gpu/ops.test.ts.)
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { buildInfo, devices, evaluate, loadGlm4, quantizeCheckpoint } from "../../lib/index.js";
import { nerr } from "../helpers/golden.js";

const hasGpu = buildInfo().backends.includes("cuda") && devices().length > 0;
const FIX = path.resolve(import.meta.dirname, "../../fixtures");
const TINY = path.join(FIX, "tiny-glm4/original");
const prompts = JSON.parse(readFileSync(path.join(FIX, "tiny-glm4/golden/logits.json"), "utf8")).prompts;
const tmp = mkdtempSync(path.join(os.tmpdir(), "glm4-gpu-quant-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe.skipIf(!hasGpu)("quantization settings on the GPU", () => {
  const cal = path.join(tmp, "cal.txt");
  writeFileSync(cal, "GLM-4 is a family of bilingual language models trained on text and code. 你好, GLM-4! ".repeat(20));
  const cases = [
    { name: "sym g64", opts: { scheme: "sym", groupSize: 64 } },
    { name: "nf4 g32", opts: { scheme: "nf4", groupSize: 32 } },
    { name: "nf4 g128 output bf16", opts: { scheme: "nf4", groupSize: 128, outputLayer: "bf16" } },
    { name: "asym g128 output bf16", opts: { scheme: "asym", groupSize: 128, outputLayer: "bf16" } },
    { name: "asym g64 awq", opts: { scheme: "asym", groupSize: 64, awq: { calibration: cal, tokens: 256 } } },
    { name: "nf4 g64 awq", opts: { scheme: "nf4", groupSize: 64, awq: { calibration: cal, tokens: 256 } } },
  ] as const;
  for (const c of cases) {
    it(`${c.name}: the checkpoint runs on cuda (prompt: GEMM; one token: GEMV) and agrees with the CPU backend`, async () => {
      const out = path.join(tmp, c.name.replace(/ /g, "-"));
      await quantizeCheckpoint(TINY, out, { ...c.opts, device: "cuda" });
      const g = await loadGlm4(out, { device: "cuda" });
      const cpu = await loadGlm4(out, { device: "cpu" });
      try {
        // Same bound and reason as test/gpu/checkpoints.test.ts: bf16 activations in the GEMMs and a bf16 KV cache.
        const long = nerr(await g.logits(prompts.P1), await cpu.logits(prompts.P1));
        const one = nerr(await g.logits(prompts.P2), await cpu.logits(prompts.P2));
        expect(long).toBeLessThan(3e-4);
        expect(one).toBeLessThan(3e-4);
        const r = await g.generate(prompts.P1, { maxNewTokens: 8 });
        expect(r.tokens.length).toBe(8);
      } finally {
        await g.dispose();
        await cpu.dispose();
      }
    });
  }

  it("quantizing on cuda writes the same checkpoint bytes as on the CPU (every scheme)", async () => {
    for (const scheme of ["asym", "sym", "nf4"] as const) {
      const a = path.join(tmp, `bytes-cuda-${scheme}`), b = path.join(tmp, `bytes-cpu-${scheme}`);
      const ra = await quantizeCheckpoint(TINY, a, { scheme, groupSize: 32, device: "cuda" });
      const rb = await quantizeCheckpoint(TINY, b, { scheme, groupSize: 32, device: "cpu" });
      for (let i = 0; i < ra.shards.length; i++) expect(readFileSync(path.join(a, ra.shards[i])).equals(readFileSync(path.join(b, rb.shards[i])))).toBe(true);
    }
  });

  it("eval on cuda agrees with eval on the CPU", async () => {
    const tokens = [...prompts.P3, ...prompts.P4];
    const opts = { tokens, context: 64, settings: ["asym-g128", "nf4-g64"] };
    const g = await evaluate(TINY, { ...opts, device: "cuda" });
    const c = await evaluate(TINY, { ...opts, device: "cpu" });
    expect(g.tokens).toBe(c.tokens);
    expect(Math.abs(g.reference.ppl / c.reference.ppl - 1)).toBeLessThan(1e-2);
    for (let i = 0; i < 2; i++) {
      expect(Math.abs(g.results[i].ppl / c.results[i].ppl - 1)).toBeLessThan(1e-2);
      expect(Math.abs(g.results[i].klMean / c.results[i].klMean - 1)).toBeLessThan(0.05);
    }
  });
});
