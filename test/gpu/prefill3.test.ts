/**
 * The GEMM path's layer variants on the GPU (lib/engine/forward.ts layerPath), on the tiny INT4 checkpoint (every
 * linear in layout 1 on CUDA): bf16 activations written by rmsnorm / add_rmsnorm / swiglu / attention must give the
 * logits of the f32 activations + convert path bit for bit (the GEMMs see the same bf16 values); the single fused
 * QKV GEMM + rotary_kv_write_qkv agrees with the three GEMMs within float32 summation-order noise (another tile /
 * split plan for N = 384 than for 256 / 64 / 64); the embedding rows widened on the device equal the JS gather's bit
 * for bit. Prefill chunks (every token's logits) and a decode step of 12 rows (a plan past the 8 GEMV rows). Bit for
 * bit where the baseline path repeats itself bit for bit (a split-K GEMM may not: then within 1e-6).
 * GLM4_LAYER_PATH and GLM4_EMBED_GATHER are read at each prefill chunk and each plan capture.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildInfo, devices, loadGlm4, type Glm4Model } from "../../lib/index.js";
import { TINY, V, nerr } from "../helpers/golden.js";

const hasGpu = buildInfo().backends.includes("cuda") && devices().length > 0;

/** Runs fn with the environment variables set (undefined: unset), restoring them afterwards. */
async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(vars)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

const ids = (n: number, seed: number) => Array.from({ length: n }, (_, i) => (i * 7919 + seed * 104729 + 13) % V);

describe.skipIf(!hasGpu)("GEMM-path layer variants on the GPU (tiny int4)", () => {
  let m: Glm4Model;
  beforeAll(async () => {
    m = await loadGlm4(path.join(TINY, "original"), { device: "cuda", quantization: "int4", prefillChunk: 64 });
  });
  afterAll(async () => {
    await m?.dispose();
  });

  /** Every token's logits of a 150-token prompt (chunks of 64, 64, 22: all on the GEMM path). */
  const prefillLogits = (env: Record<string, string | undefined>) =>
    withEnv(env, () =>
      m.runtime.exclusive(async () => {
        const e = m.runtime.newEngine({ maxContext: 512 });
        try {
          const s = e.admit();
          const all = await e.prefill(s, ids(150, 1), { allLogits: true });
          const out = all!.read() as Float32Array;
          all!.dispose();
          return out;
        } finally {
          e.dispose();
        }
      }),
    );

  /** The logits of one decode step of 12 sequences (a 16-row plan: the unfused path past 8 rows). */
  const stepLogits = (env: Record<string, string | undefined>) =>
    withEnv(env, () =>
      m.runtime.exclusive(async () => {
        const e = m.runtime.newEngine({ maxBatch: 12, maxContext: 256 });
        try {
          const slots = Array.from({ length: 12 }, () => e.admit());
          for (const [i, s] of slots.entries()) await e.prefill(s, ids(5 + 3 * i, i + 2)); // <= 38 tokens: fused or GEMM path
          await e.step(slots.map((slot, i) => ({ slot, token: (17 * i + 3) % V })));
          return slots.map((s) => e.readLogits(s));
        } finally {
          e.dispose();
        }
      }),
    );

  const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
  /**
   * a equals b bit for bit when the path itself is deterministic (base run twice gives the same bits); a GEMM that
   * splits K adds its pieces with red.global in whatever order they arrive, and then the two can only agree as closely
   * as two runs of one path do (1e-6 here, far below a real difference).
   */
  const same = (a: Float32Array, b: Float32Array, again: Float32Array, what: string) => {
    if (bits(again).join() === bits(b).join()) expect(bits(a), `${what}: bit for bit (the path is deterministic)`).toEqual(bits(b));
    else expect(nerr(a, b), `${what}: within run-to-run noise (split-K GEMM)`).toBeLessThan(1e-6);
  };

  it("prefill: bf16 activations equal f32 + convert bit for bit; the packed QKV GEMM and the residual adds in the GEMM epilogue agree within 1e-6", async () => {
    const none = await prefillLogits({ GLM4_LAYER_PATH: "none" });
    const none2 = await prefillLogits({ GLM4_LAYER_PATH: "none" });
    const bf16 = await prefillLogits({ GLM4_LAYER_PATH: "bf16" });
    const packed = await prefillLogits({ GLM4_LAYER_PATH: "packed" });
    const packed2 = await prefillLogits({ GLM4_LAYER_PATH: "packed" });
    const both = await prefillLogits({ GLM4_LAYER_PATH: "bf16,packed" });
    const add = await prefillLogits({ GLM4_LAYER_PATH: "bf16,packed,add" });
    const gu = await prefillLogits({ GLM4_LAYER_PATH: "bf16,packed,add,gu16" });
    const all = await prefillLogits({ GLM4_LAYER_PATH: "bf16,packed,add,gu16,qkv16" });
    same(bf16, none, none2, "bf16 vs none");
    same(both, packed, packed2, "bf16+packed vs packed");
    // the adds in the epilogue compute x + (acc + b) as add_rmsnorm did (whole tiles), K pieces add into x in arrival
    // order instead of into a zeroed buffer first: rounding only (~1e-9 expected); a lost or doubled add costs > 1e-2
    expect(nerr(add, both), "bf16+packed+add vs bf16+packed").toBeLessThan(1e-6);
    // gu16: gate and up rounded to bf16 (2^-9 relative at most, each) before silu * up, the product rounded to bf16
    // as before: the same order of error as the bf16 activations themselves (H200 run15: 3.8e-5); a swapped gate/up
    // or a wrong row is O(1). qkv16: q, k, v rounded to bf16 before the rotation (k, v are stored in bf16 and q is
    // rounded for q.k anyway): H200 run16 8.7e-5 here and 1.7e-4 on a step row (below): 5e-4 (not the default path).
    // Either applies only where the GEMM's plan is whole tiles anyway (forward.ts wholeTiles).
    expect(nerr(gu, add), "gu16 vs f32 gate_up").toBeLessThan(1e-4);
    expect(nerr(all, gu), "qkv16 vs f32 qkv").toBeLessThan(5e-4);
    console.log(`prefill3.test: nerr(gu16 vs f32 gate_up) = ${nerr(gu, add).toExponential(2)}, nerr(qkv16 vs f32 qkv) = ${nerr(all, gu).toExponential(2)}`);
    // float32 sums in another order inside the QKV GEMM (~1e-7 relative; a flipped bf16 rounding of an activation
    // downstream costs ~2^-8 of one element): ~1e-9 expected; a wrong head, row or bias lands above 1e-3
    expect(nerr(packed, none)).toBeLessThan(1e-6);
  });

  it("prefill: the embedding rows widened on the device equal the JS gather bit for bit", async () => {
    const js = await prefillLogits({ GLM4_EMBED_GATHER: "js" });
    const js2 = await prefillLogits({ GLM4_EMBED_GATHER: "js" });
    const dev = await prefillLogits({ GLM4_EMBED_GATHER: undefined });
    same(dev, js, js2, "device-widened vs JS gather");
  });

  it("a decode step of 12 rows: bf16 activations (and bf16 embedding rows) bit for bit; packed and the epilogue adds within 1e-6, gu16 within 1e-4, qkv16 within 5e-4", async () => {
    const none = await stepLogits({ GLM4_LAYER_PATH: "none", GLM4_EMBED_GATHER: "js" });
    const none2 = await stepLogits({ GLM4_LAYER_PATH: "none", GLM4_EMBED_GATHER: "js" });
    const bf16 = await stepLogits({ GLM4_LAYER_PATH: "bf16", GLM4_EMBED_GATHER: "js" });
    const both = await stepLogits({ GLM4_LAYER_PATH: "bf16,packed", GLM4_EMBED_GATHER: undefined });
    const add = await stepLogits({ GLM4_LAYER_PATH: "bf16,packed,add", GLM4_EMBED_GATHER: undefined });
    const gu = await stepLogits({ GLM4_LAYER_PATH: "bf16,packed,add,gu16", GLM4_EMBED_GATHER: undefined });
    const all = await stepLogits({ GLM4_LAYER_PATH: "bf16,packed,add,gu16,qkv16", GLM4_EMBED_GATHER: undefined });
    const packed = await stepLogits({ GLM4_LAYER_PATH: "packed", GLM4_EMBED_GATHER: "js" });
    const packed2 = await stepLogits({ GLM4_LAYER_PATH: "packed", GLM4_EMBED_GATHER: "js" });
    bf16.forEach((l, i) => same(l, none[i], none2[i], `row ${i}, bf16 vs none`));
    both.forEach((l, i) => same(l, packed[i], packed2[i], `row ${i}, bf16+packed vs packed`));
    add.forEach((l, i) => expect(nerr(l, both[i]), `row ${i}, bf16+packed+add vs bf16+packed`).toBeLessThan(1e-6));
    gu.forEach((l, i) => expect(nerr(l, add[i]), `row ${i}, gu16 vs f32 gate_up`).toBeLessThan(1e-4));
    all.forEach((l, i) => expect(nerr(l, gu[i]), `row ${i}, qkv16 vs f32 qkv`).toBeLessThan(5e-4));
    console.log(`prefill3.test: step rows, max nerr(gu16 vs f32 gate_up) = ${Math.max(...gu.map((l, i) => nerr(l, add[i]))).toExponential(2)}, max nerr(qkv16 vs f32 qkv) = ${Math.max(...all.map((l, i) => nerr(l, gu[i]))).toExponential(2)}`);
    packed.forEach((l, i) => expect(nerr(l, none[i]), `row ${i}`).toBeLessThan(1e-6));
  });
});
