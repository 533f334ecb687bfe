/**
 * Activation-aware scaling (issue 15), CPU, tiny checkpoint.
 * 1. The fold is exact: any per-channel scales folded into the norms, the V rows and bias (GQA groups) and the up
 *    rows, with the column factors multiplied into the weights, leave the full-precision model's logits unchanged
 *    (to float32 rounding). A fold that ignored GQA (o's scales per head) or the V bias would fail this.
 * 2. The search: alpha 0 is plain rounding, and the chosen alpha's output error is never above it; on a layer with
 *    a few input channels 50x larger than the rest, scaling cuts the error severalfold.
 * 3. `quantize --awq`: the record lists each linear's alpha and errors, the folded norms and QKV bias are F32, the
 *    checkpoint loads and runs, and its logits stay close to BF16.
 */
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadGlm4 } from "../lib/index.js";
import { readConfig } from "../lib/checkpoint/config.js";
import { Checkpoint } from "../lib/checkpoint/checkpoint.js";
import { iterateWeights } from "../lib/checkpoint/namings.js";
import { quantizeCheckpoint } from "../lib/checkpoint/quantize.js";
import { INT4_RECORD_FILE } from "../lib/checkpoint/int4-format.js";
import { createContext } from "../lib/engine/device.js";
import { WeightAssembler } from "../lib/engine/assembler.js";
import { Runtime } from "../lib/engine/runtime.js";
import { AWQ_GRID, awqScales, foldAwq, searchLinear, tieToKvGroups, vScales, type AwqPlan } from "../lib/quant/awq.js";
import { golden, nerr, TINY } from "./helpers/golden.js";
import { Rng } from "./helpers/rng.js";
import { cleanupTempDirs, tempDir } from "./helpers/st-writer.js";
import { runCli, ensureBuilt } from "./helpers/cli.js";

afterAll(cleanupTempDirs);
const P1: number[] = golden.prompts.P1;
const P3: number[] = golden.prompts.P3;

/** Logits of the tiny checkpoint with every tensor passed through `map` first (full precision, CPU). */
async function logitsWith(map: (t: { name: string; dtype: string; shape: number[]; data: Buffer }) => { name: string; dtype: string; shape: number[]; data: Buffer }, tokens: number[]): Promise<Float32Array> {
  const dir = path.join(TINY, "original");
  const cfg = await readConfig(dir);
  const ctx = createContext("cpu");
  const asm = new WeightAssembler(ctx, cfg, { quantization: "none", groupSize: 128 });
  const ck = await Checkpoint.open(dir);
  try {
    for await (const t of iterateWeights(ck, cfg)) await asm.addHost(map(t));
  } finally {
    await ck.close();
  }
  const rt = new Runtime(ctx, cfg, asm.finish(), null, { dir, device: "cpu", quantization: "none", groupSize: 128, maxContext: 256 }, { kvDtype: "f32", prefillChunk: 512 });
  try {
    return await rt.logits(tokens);
  } finally {
    rt.dispose();
  }
}

describe("awq: the fold", () => {
  it("folding any scales leaves the full-precision logits unchanged (norms, V rows + bias per KV group, up rows)", async () => {
    const cfg = await readConfig(path.join(TINY, "original"));
    const rng = new Rng(15);
    const scales = (n: number) => Float32Array.from({ length: n }, () => Math.exp(1.5 * (rng.uniform() - 0.5) * 2)); // 0.22 .. 4.5
    const D = cfg.headDim, per = cfg.numHeads / cfg.numKvHeads;
    const plan: AwqPlan = {
      grid: [],
      results: {},
      tokens: 0,
      layers: Array.from({ length: cfg.numLayers }, () => {
        const sv = scales(cfg.numKvHeads * D);
        return {
          qkv: scales(cfg.hiddenSize),
          attnOut: Float32Array.from({ length: cfg.numHeads * D }, (_, c) => sv[Math.floor(Math.floor(c / D) / per) * D + (c % D)]),
          gateUp: scales(cfg.hiddenSize),
          down: scales(cfg.ffnSize),
        };
      }),
    };
    expect(vScales(plan.layers[0].attnOut, cfg)[D + 5]).toBe(plan.layers[0].attnOut[per * D + 5]);
    const base = await logitsWith((t) => t, P1);
    const folded = await logitsWith((t) => {
      const f = foldAwq(t, plan, cfg);
      if (!f.colScale) return f.tensor;
      const k = t.shape[1], cs = f.colScale;
      const v = new Float32Array(f.tensor.data.buffer, f.tensor.data.byteOffset, f.tensor.data.byteLength / 4).map((x, i) => x * cs[i % k]);
      return { ...f.tensor, data: Buffer.from(v.buffer) };
    }, P1);
    // float32 rounding of the divisions and products only (the unfolded model: bf16 weights in f32 arithmetic)
    expect(nerr(folded, base)).toBeLessThan(1e-10);
    // and the fold is not a no-op: the same scales applied to the norms only break the model
    const broken = await logitsWith((t) => (/attn_norm|ffn_norm/.test(t.name) ? foldAwq(t, plan, cfg).tensor : t), P1);
    expect(nerr(broken, base)).toBeGreaterThan(1e-3);
  }, 120_000);

  it("O's statistics are tied across the heads of a KV group", () => {
    const cfg = { numHeads: 8, numKvHeads: 2, headDim: 4 };
    const m = Float64Array.from({ length: 32 }, (_, i) => i);
    const t = tieToKvGroups(m, cfg);
    for (let h = 0; h < 8; h++) for (let d = 0; d < 4; d++) expect(t[h * 4 + d]).toBe(t[(h < 4 ? 0 : 4) * 4 + d]);
    expect(t[1]).toBe((1 + 5 + 9 + 13) / 4);
    expect(awqScales([1, 4, 16], 0)).toEqual(Float32Array.from([1, 1, 1]));
    const s = awqScales([1, 4, 16], 0.5); // 1, 2, 4 normalized by sqrt(4 * 1) = 2
    expect(Array.from(s)).toEqual([0.5, 1, 2]);
  });
});

describe("awq: the search", () => {
  it("on a layer with outlier input channels, scaling cuts the output error severalfold; never above plain rounding", async () => {
    const ctx = createContext("cpu");
    try {
      const rng = new Rng(7);
      const T = 64, K = 256, N = 64;
      const big = new Set([3, 77, 140, 201]);
      const x = new Float32Array(T * K);
      for (let t = 0; t < T; t++) for (let j = 0; j < K; j++) x[t * K + j] = rng.normal() * (big.has(j) ? 50 : 1);
      const w = Float32Array.from({ length: N * K }, () => rng.normal() * 0.05);
      const mean = new Float64Array(K);
      for (let t = 0; t < T; t++) for (let j = 0; j < K; j++) mean[j] += Math.abs(x[t * K + j]) / T;
      for (const scheme of ["asym", "sym", "nf4"] as const) {
        const r = await searchLinear(ctx, x, T, w, N, K, mean, { groupSize: 128, scheme });
        expect(r.error).toBeLessThanOrEqual(r.errorRtn);
        expect(r.alpha).toBeGreaterThan(0);
        expect(r.error).toBeLessThan(r.errorRtn / 3);
      }
      // no outliers: nothing to gain, and the search still never does worse than plain rounding
      const x1 = Float32Array.from({ length: T * K }, () => rng.normal());
      const r1 = await searchLinear(ctx, x1, T, w, N, K, new Float64Array(K).fill(0.8), { groupSize: 64, scheme: "asym" }, AWQ_GRID);
      expect(r1.error).toBeLessThanOrEqual(r1.errorRtn);
    } finally {
      ctx.dispose();
    }
  });
});

describe("quantize --awq", () => {
  it("writes the alphas and errors, F32 folded tensors; loads, runs, stays close to BF16", async () => {
    const dir = await tempDir("glm4-awq-");
    const cal = path.join(dir, "cal.txt");
    await writeFile(cal, "GLM-4 is a family of bilingual language models trained on text and code. 你好, GLM-4! ".repeat(20));
    const out = path.join(dir, "int4");
    const r = await quantizeCheckpoint(path.join(TINY, "original"), out, { device: "cpu", groupSize: 64, scheme: "asym", awq: { calibration: cal, tokens: 256 } });
    const rec = JSON.parse(await readFile(path.join(out, INT4_RECORD_FILE), "utf8"));
    expect(rec).toMatchObject({ version: 2, scheme: "asym", output_layer: "int4", awq: { calibration: "cal.txt", tokens: 256 } });
    expect(rec.awq.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(Object.keys(rec.awq.alphas).sort()).toEqual(["layers.0.attn_out", "layers.0.down", "layers.0.gate_up", "layers.0.qkv", "layers.1.attn_out", "layers.1.down", "layers.1.gate_up", "layers.1.qkv"]);
    for (const [k, e] of Object.entries(rec.awq.errors as Record<string, { rtn: number; awq: number }>)) {
      expect(e.awq, k).toBeLessThanOrEqual(e.rtn);
      expect(AWQ_GRID).toContain(rec.awq.alphas[k]);
    }
    expect(r.record.awq).toEqual(rec.awq);
    const ck = await Checkpoint.open(out);
    try {
      expect(ck.info("layers.0.attn_norm")).toMatchObject({ dtype: "F32", shape: [256] });
      expect(ck.info("layers.1.qkv_bias")).toMatchObject({ dtype: "F32", shape: [384] });
      expect(ck.info("final_norm").dtype).toBe("BF16");
    } finally {
      await ck.close();
    }
    const bf = await loadGlm4(path.join(TINY, "original"), { device: "cpu", quantization: "none" });
    const m = await loadGlm4(out, { device: "cpu" });
    try {
      expect(m.info).toMatchObject({ awq: true, scheme: "asym", groupSize: 64 });
      const [a, b] = [await m.logits(P3), await bf.logits(P3)];
      expect(a.every(Number.isFinite)).toBe(true);
      expect(nerr(a, b)).toBeLessThan(0.25);
      expect((await m.generate(P1, { maxNewTokens: 3 })).tokens.length).toBe(3);
    } finally {
      await m.dispose();
      await bf.dispose();
    }
  }, 300_000);

  it("refuses a missing calibration file, and --calibration without --awq (command line)", async () => {
    const out = path.join(await tempDir("glm4-awq-"), "x");
    await expect(quantizeCheckpoint(path.join(TINY, "original"), out, { device: "cpu", awq: { calibration: "/nonexistent/cal.txt" } })).rejects.toMatchObject({ code: "ERR_GLM4_FILE_NOT_FOUND" });
    ensureBuilt();
    const c = runCli(["quantize", "--model", path.join(TINY, "original"), "--out", out, "--calibration", "x.txt"]);
    expect(await c.exited).toBe(1);
    expect(c.stderr()).toMatch(/ERR_GLM4_INVALID_ARGUMENT: --calibration is for --awq/);
    const d = runCli(["quantize", "--model", path.join(TINY, "original"), "--out", out, "--awq"]);
    expect(await d.exited).toBe(1);
    expect(d.stderr()).toMatch(/--awq needs --calibration FILE/);
  }, 600_000);
});
