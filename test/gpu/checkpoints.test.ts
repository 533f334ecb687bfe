/**
 * Real-checkpoint paths on the GPU: an INT4 checkpoint written by `quantize` loads straight onto the device
 * and gives the same logits as load-time quantization there (the codes are the same bits: both go through
 * the one canonical quantizer, tested bit-exact on both backends); GPTQ imports run on the GPU and agree with
 * the CPU backend.
 */
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { buildInfo, devices, loadGlm4, quantizeCheckpoint } from "../../lib/index.js";
import { readFileSync } from "node:fs";
import { nerr } from "../helpers/golden.js";

const hasGpu = buildInfo().backends.includes("cuda") && devices().length > 0;
const FIX = path.resolve(import.meta.dirname, "../../fixtures");
const P1: number[] = JSON.parse(readFileSync(path.join(FIX, "tiny-glm4/golden/logits.json"), "utf8")).prompts.P1;
const tmp = mkdtempSync(path.join(os.tmpdir(), "glm4-gpu-ckpt-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));


describe.skipIf(!hasGpu)("checkpoints on the GPU", () => {
  it("an INT4 checkpoint loads on cuda with logits identical to load-time quantization on cuda", async () => {
    const out = path.join(tmp, "int4");
    await quantizeCheckpoint(path.join(FIX, "tiny-glm4/original"), out, { groupSize: 128 });
    const a = await loadGlm4(out, { device: "cuda" });
    const b = await loadGlm4(path.join(FIX, "tiny-glm4/original"), { device: "cuda", quantization: "int4" });
    const la = await a.logits(P1), lb = await b.logits(P1);
    expect(Buffer.from(la.buffer).equals(Buffer.from(lb.buffer))).toBe(true);
    await a.dispose();
    await b.dispose();
  });

  for (const variant of ["v1-sym-g128-original", "v1-asym-g32-hf", "v2-asym-g64-original"]) {
    it(`GPTQ ${variant} runs on cuda and agrees with the CPU backend`, async () => {
      const g = await loadGlm4(path.join(FIX, "gptq-tiny", variant), { device: "cuda" });
      const c = await loadGlm4(path.join(FIX, "gptq-tiny", variant), { device: "cpu" });
      const e = nerr(await g.logits(P1), await c.logits(P1));
      // Same bound and reason as test/gpu/model.test.ts: bf16 activations in the prefill GEMM and a bf16 cache.
      expect(e).toBeLessThan(3e-4);
      await g.dispose();
      await c.dispose();
    });
  }
});
