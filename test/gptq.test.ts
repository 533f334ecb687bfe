/**
 * GPTQ import (lib/checkpoint/gptq.ts).
 *
 * 1. The repack on hand-made tensors: codes bit for bit against the canonical packing, v1/v2 zero points
 *    (v1's stored 15 reads as 16), group sizes -1, 256, 16 and act-order, f16 -> bf16 scale rounding, bad
 *    scales and g_idx, bad settings.
 * 2. The fixtures written by scripts/make_gptq_fixture.py (an independent numpy packer and reader):
 *    - layer 0's fused [q; k; v], dequantized on the device (ctx.dequantizeInt4), equals numpy's reading
 *      bit for bit (exact variants: scales rounded to bf16), or, for act-order, equals this library's
 *      quantizer applied to numpy's exact reading (the documented re-quantization), with a warning;
 *    - the whole model: its logits equal, bit for bit, those of a full-precision (F32, quantization "none")
 *      checkpoint that this test writes from its own reading of the GPTQ tensors. The CPU backend's INT4 and
 *      F32 matmuls accumulate the same products in the same order, and (code - zero) * scale is exact in
 *      float32, so any difference is an import error;
 *    - the f16 -> bf16 scale rounding: the same comparison against the exact f16 scales, measured.
 */
import { copyFile, readFile, writeFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadGlm4, Glm4Error } from "../lib/index.js";
import { native } from "../lib/engine/native-binary.js";
import type { NativeContext, QWeight } from "../lib/engine/native.js";
import { Checkpoint } from "../lib/checkpoint/checkpoint.js";
import { readConfig, type Glm4Config } from "../lib/checkpoint/config.js";
import { onDiskLayout, toOnDisk, type Naming } from "../lib/checkpoint/namings.js";
import { isLinearName } from "../lib/checkpoint/tensors.js";
import { canonicalGroupOf, checkGptqTensors, defaultGIdx, dequantGptq, parseGptqConfig, repackGptq, type GptqTensors } from "../lib/checkpoint/gptq.js";
import type { Linear } from "../lib/engine/weights.js";
import { cleanupTempDirs, rng, tempDir, writeSafetensors } from "./helpers/st-writer.js";
import { nerr } from "./helpers/golden.js";

const GPTQ = path.resolve(import.meta.dirname, "../fixtures/gptq-tiny");
const manifest = JSON.parse(readFileSync(path.join(GPTQ, "manifest.json"), "utf8"));
const TINY = path.resolve(import.meta.dirname, "../fixtures/tiny-glm4");
const P1: number[] = JSON.parse(readFileSync(path.join(TINY, "golden/logits.json"), "utf8")).prompts.P1;

afterAll(cleanupTempDirs);

// ------------------------------------------------------------------------------------------------ helpers

const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
function bf16Round(x: number): number {
  f32[0] = x;
  u32[0] = ((u32[0] + 0x7fff + ((u32[0] >>> 16) & 1)) >>> 16) << 16;
  return f32[0];
}
function halfBits(x: number): number {
  // float -> f16 bits for the values used here (normal, exactly representable)
  if (x === 0) return 0;
  const s = x < 0 ? 0x8000 : 0, a = Math.abs(x), e = Math.floor(Math.log2(a));
  return s | ((e + 15) << 10) | Math.round((a / 2 ** e - 1) * 1024);
}
function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
}

/** GPTQ tensors from codes [N, K] (row-major), zeros [ng, N] (true zeros), scales [ng, N], gIdx [K]: an independent little packer. */
function packGptq(n: number, k: number, codes: number[], zeros: number[], scales: number[], gIdx: Int32Array, v1: boolean): GptqTensors {
  const ng = zeros.length / n;
  const qweight = new Uint32Array((k / 8) * n);
  for (let r = 0; r < n; r++) for (let c = 0; c < k; c++) qweight[(c >> 3) * n + r] |= codes[r * k + c] << ((c & 7) * 4);
  const qzeros = new Uint32Array(ng * (n / 8));
  for (let g = 0; g < ng; g++) for (let r = 0; r < n; r++) qzeros[g * (n / 8) + (r >> 3)] |= ((v1 ? zeros[g * n + r] - 1 : zeros[g * n + r]) & 15) << ((r & 7) * 4);
  return { name: "test", n, k, qweight, qzeros, scales: Float32Array.from(scales), gIdx, ng, v1 };
}

function canonicalCodes(n: number, k: number, codes: number[]): Uint8Array {
  const out = new Uint8Array((n * k) / 2);
  for (let r = 0; r < n; r++) for (let c = 0; c < k; c += 2) out[(r * k + c) / 2] = codes[r * k + c] | (codes[r * k + c + 1] << 4);
  return out;
}

function bf16ToNum(b: number): number {
  u32[0] = b << 16;
  return f32[0];
}

function codeOf(e: unknown): string {
  expect(e).toBeInstanceOf(Glm4Error);
  return (e as Glm4Error).code;
}

// ------------------------------------------------------------------------------------------------ 1. unit

describe("GPTQ repack on hand-made tensors", () => {
  const R = rng(7);
  const n = 16, k = 256;
  const codes = Array.from({ length: n * k }, () => Math.floor(R() * 16));

  it("codes: a transpose of 32-bit words gives the canonical packing bit for bit; v1 zero = stored + 1 (15 reads as 16), v2 as stored", () => {
    const G = 64, ng = k / G;
    const zeros = Array.from({ length: ng * n }, () => 1 + Math.floor(R() * 15));
    zeros[0] = 16; // what a v1 writer's stored 15 means
    const scales = Array.from({ length: ng * n }, () => halfToFloat(halfBits(0.001 + R() * 0.05)));
    const t = packGptq(n, k, codes, zeros, scales, defaultGIdx(k, G), true);
    expect(canonicalGroupOf(t.gIdx, k)).toBe(64);
    const c = repackGptq(t, 64);
    expect(Buffer.from(c.codes).equals(Buffer.from(canonicalCodes(n, k, codes)))).toBe(true);
    for (let r = 0; r < n; r++) for (let b = 0; b < ng; b++) {
      expect(bf16ToNum(c.zeros[r * ng + b])).toBe(zeros[b * n + r]);
      expect(bf16ToNum(c.scales[r * ng + b])).toBe(bf16Round(scales[b * n + r]));
    }
    expect(bf16ToNum(c.zeros[0])).toBe(16);
    // v2: the same stored nibbles are the zeros themselves.
    const v2zeros = zeros.map((z) => z - 1);
    const t2 = packGptq(n, k, codes, v2zeros, scales, defaultGIdx(k, G), false);
    for (let i = 0; i < v2zeros.length; i++) expect(bf16ToNum(repackGptq(t2, 64).zeros[(i % n) * ng + Math.floor(i / n)])).toBe(v2zeros[i]);
    // The canonical weights equal the GPTQ reading with bf16 scales, element by element.
    const deq = dequantGptq(t);
    for (let r = 0; r < n; r += 5) for (let col = 0; col < k; col += 7) {
      const g = Math.floor(col / G);
      expect(deq[r * k + col]).toBe(Math.fround((codes[r * k + col] - zeros[g * n + r]) * scales[g * n + r]));
    }
  });

  it("group -1 and 256 repeat one scale per 128 columns (exact); 32 stays 32; 16 and act-order cannot be repacked", () => {
    expect(canonicalGroupOf(defaultGIdx(k, -1), k)).toBe(128);
    expect(canonicalGroupOf(defaultGIdx(512, 256), 512)).toBe(128);
    expect(canonicalGroupOf(defaultGIdx(k, 32), k)).toBe(32);
    expect(canonicalGroupOf(defaultGIdx(k, 16), k)).toBe(null);
    const perm = defaultGIdx(k, 64);
    [perm[3], perm[200]] = [perm[200], perm[3]];
    expect(canonicalGroupOf(perm, k)).toBe(null);
    // One group per row: every canonical group of the row gets the row's scale and zero.
    const zeros = Array.from({ length: n }, (_, r) => 1 + (r % 16));
    const scales = Array.from({ length: n }, (_, r) => halfToFloat(halfBits(0.01 * (r + 1))));
    const c = repackGptq(packGptq(n, k, codes, zeros, scales, defaultGIdx(k, -1), true), 128);
    for (let r = 0; r < n; r++) for (let b = 0; b < 2; b++) expect(bf16ToNum(c.zeros[r * 2 + b])).toBe(zeros[r]);
  });

  it("f16 scales are rounded to the nearest bf16, ties to even", () => {
    // 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7: ties to even -> 1. 1 + 3 * 2^-8 -> 1 + 2^-6 (even).
    // 1 + 2^-10 -> 1; 1.5 + 5 * 2^-10 is 0.625 of a bf16 step above 1.5 -> 1.5 + 2^-7.
    const scales = [1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -10, 1.5 + 2 ** -8 + 2 ** -10];
    const t = packGptq(8, 32, new Array(8 * 32).fill(3), new Array(8).fill(8), [...scales, ...scales], defaultGIdx(32, 32), true);
    const c = repackGptq(t, 32);
    expect(Array.from(c.scales.slice(0, 4), bf16ToNum)).toEqual([1, 1 + 2 ** -6, 1, 1.5 + 2 ** -7]);
  });

  it("bad scales and g_idx are refused, naming the tensor, group and output", () => {
    const t = packGptq(8, 64, new Array(8 * 64).fill(1), new Array(16).fill(8), new Array(16).fill(0.5), defaultGIdx(64, 32), true);
    t.scales[8 + 3] = NaN;
    expect(() => checkGptqTensors(t, "f.safetensors")).toThrow(/f\.safetensors: tensor "test\.scales" group 1, output 3 holds NaN/);
    t.scales[11] = -0.5;
    expect(() => checkGptqTensors(t, "f")).toThrow(/holds -0.5; scales must be finite and > 0/);
    t.scales[11] = 0.5;
    t.gIdx[5] = 2;
    try {
      checkGptqTensors(t, "f");
      throw new Error("no throw");
    } catch (e) {
      expect(codeOf(e)).toBe("ERR_GLM4_BAD_QUANTIZATION");
      expect((e as Error).message).toMatch(/puts input column 5 in group 2, but there are 2 groups/);
    }
  });

  it("settings: 8 bits, AWQ, Marlin packing, another pack dtype or a bad group size are refused by name", () => {
    const ok = { bits: 4, group_size: 128, desc_act: false, sym: true, quant_method: "gptq" };
    expect(parseGptqConfig(ok, "q.json")).toMatchObject({ groupSize: 128, format: "gptq", sym: true, descAct: false, lmHead: false });
    expect(parseGptqConfig({ ...ok, checkpoint_format: "gptq_v2" }, "q.json").format).toBe("gptq_v2");
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ ...ok, bits: 8 }, "ERR_GLM4_UNSUPPORTED", /"bits" is 8; only 4-bit/],
      [{ ...ok, quant_method: "awq" }, "ERR_GLM4_UNSUPPORTED", /quantized with "awq"/],
      [{ ...ok, is_marlin_format: true }, "ERR_GLM4_UNSUPPORTED", /Marlin/],
      [{ ...ok, checkpoint_format: "marlin" }, "ERR_GLM4_UNSUPPORTED", /checkpoint_format "marlin"/],
      [{ ...ok, pack_dtype: "int16" }, "ERR_GLM4_UNSUPPORTED", /pack_dtype/],
      [{ ...ok, group_size: 0 }, "ERR_GLM4_BAD_QUANTIZATION", /"group_size" must be -1 or an integer in \[1, 1048576\]/],
      [{ ...ok, desc_act: "yes" }, "ERR_GLM4_BAD_QUANTIZATION", /"desc_act" must be true or false/],
    ];
    for (const [o, c, re] of cases) {
      try {
        parseGptqConfig(o, "q.json");
        throw new Error(`no throw for ${JSON.stringify(o)}`);
      } catch (e) {
        expect(codeOf(e)).toBe(c);
        expect((e as Error).message).toMatch(/^q\.json: /);
        expect((e as Error).message).toMatch(re);
      }
    }
  });
});

// ------------------------------------------------------------------------------------------------ 2. fixtures

interface Variant {
  name: string;
  dir: string;
  naming: Naming;
  checkpoint_format: string;
  group_size: number;
  desc_act: boolean;
  lm_head: boolean;
  qkv0: { file: string };
}
const variants: Variant[] = manifest.variants;

function readF32(file: string): Float32Array {
  const b = readFileSync(file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

function dequantOnDevice(ctx: NativeContext, lins: Linear[]): Float32Array {
  const parts = lins.map((l) => {
    if (l.kind !== "int4") throw new Error("expected int4");
    const out = ctx.empty("f32", [l.n, l.k]);
    ctx.dequantizeInt4(out, l.q);
    const a = out.read() as Float32Array;
    out.dispose();
    return a;
  });
  const all = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) (all.set(p, off), (off += p.length));
  return all;
}

/** This library's quantizer applied to f32 rows [n, k] at group G, dequantized again (on the CPU backend). */
function fakeQuant(ctx: NativeContext, w: Float32Array, n: number, k: number, G: 32 | 64 | 128, dtype: "f32" | "f16" = "f32", raw?: Uint8Array): Float32Array {
  const src = ctx.fromBuffer(dtype, [n, k], raw ?? w);
  const q: QWeight = { codes: ctx.empty("i4", [n, k]), scales: ctx.empty("bf16", [n, k / G]), zeros: ctx.empty("bf16", [n, k / G]), groupSize: G };
  ctx.quantizeInt4(q, src, 0);
  const out = ctx.empty("f32", [n, k]);
  ctx.dequantizeInt4(out, q);
  const r = out.read() as Float32Array;
  for (const t of [src, q.codes, q.scales, q.zeros, out]) t.dispose();
  return r;
}

/**
 * The test's own reading of a GPTQ linear part (independent of lib/checkpoint/gptq.ts): float32 [n, k] =
 * (code - zero) * scale, with the scale rounded to bf16 or not.
 */
async function readGptqPart(ck: Checkpoint, prefix: string, v1: boolean, G: number, bf16Scales: boolean): Promise<{ w: Float32Array; n: number; k: number }> {
  const qwT = await ck.read(`${prefix}.qweight`);
  const [k8, n] = qwT.shape;
  const k = k8 * 8;
  const qw = new Int32Array(qwT.data.buffer.slice(qwT.data.byteOffset, qwT.data.byteOffset + qwT.data.byteLength));
  const qzT = await ck.read(`${prefix}.qzeros`);
  const qz = new Int32Array(qzT.data.buffer.slice(qzT.data.byteOffset, qzT.data.byteOffset + qzT.data.byteLength));
  const scT = await ck.read(`${prefix}.scales`);
  const sc = new Uint16Array(scT.data.buffer.slice(scT.data.byteOffset, scT.data.byteOffset + scT.data.byteLength));
  let gIdx: Int32Array;
  if (ck.has(`${prefix}.g_idx`)) {
    const g = await ck.read(`${prefix}.g_idx`);
    gIdx = new Int32Array(g.data.buffer.slice(g.data.byteOffset, g.data.byteOffset + g.data.byteLength));
  } else gIdx = Int32Array.from({ length: k }, (_, i) => Math.floor(i / G));
  const w = new Float32Array(n * k);
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < k; c++) {
      const g = gIdx[c];
      const code = (qw[(c >> 3) * n + r] >>> ((c & 7) * 4)) & 15;
      const z = ((qz[g * (n / 8) + (r >> 3)] >>> ((r & 7) * 4)) & 15) + (v1 ? 1 : 0);
      const s = halfToFloat(sc[g * n + r]);
      w[r * k + c] = (code - z) * (bf16Scales ? bf16Round(s) : s);
    }
  }
  return { w, n, k };
}

/**
 * A full-precision checkpoint (F32 linears, everything else copied) holding what the import should load:
 * GPTQ linears read by readGptqPart (re-quantized by this library's quantizer for act-order), full-precision
 * linears quantized by this library's quantizer at `G`.
 */
async function writeReference(v: Variant, bf16Scales: boolean, ctx: NativeContext, G: 32 | 64 | 128): Promise<string> {
  const src = path.join(GPTQ, v.dir);
  const out = await tempDir("glm4-gptq-ref-");
  const cfg: Glm4Config = await readConfig(src);
  const ck = await Checkpoint.open(src);
  const tensors: { name: string; dtype: string; shape: number[]; data: Uint8Array }[] = [];
  try {
    for (const e of onDiskLayout(cfg, v.naming)) {
      const prefixes = e.parts.map((p) => p.onDisk.replace(/\.weight$/, ""));
      let t: { name: string; dtype: string; shape: number[]; data: Buffer };
      if (isLinearName(e.name) && ck.has(`${prefixes[0]}.qweight`)) {
        const [n, k] = e.shape;
        let w: Float32Array = new Float32Array(n * k);
        let off = 0;
        for (const p of prefixes) {
          // act-order layers are re-quantized from the exact reading (f16 scales), not repacked
          const part = await readGptqPart(ck, p, v.checkpoint_format === "gptq", v.group_size, bf16Scales && !v.desc_act);
          w.set(part.w, off);
          off += part.w.length;
        }
        if (v.desc_act) w = fakeQuant(ctx, w, n, k, G);
        t = { name: e.name, dtype: "F32", shape: e.shape, data: Buffer.from(w.buffer) };
      } else {
        const bufs = await Promise.all(e.parts.map(async (p) => (await ck.read(p.onDisk)).data));
        const data = Buffer.concat(bufs);
        const dtype = ck.info(e.parts[0].onDisk).dtype;
        if (isLinearName(e.name)) {
          const [n, k] = e.shape;
          t = { name: e.name, dtype: "F32", shape: e.shape, data: Buffer.from(fakeQuant(ctx, new Float32Array(0), n, k, G, "f16", data).buffer) };
          expect(dtype).toBe("F16");
        } else t = { name: e.name, dtype, shape: e.shape, data };
      }
      for (const d of toOnDisk(t, cfg, v.naming)) tensors.push(d);
    }
  } finally {
    await ck.close();
  }
  await writeSafetensors(path.join(out, "model.safetensors"), tensors);
  const config = JSON.parse(await readFile(path.join(src, "config.json"), "utf8"));
  delete config.quantization_config;
  await writeFile(path.join(out, "config.json"), JSON.stringify(config));
  for (const f of ["generation_config.json", "tokenizer.model", "tokenizer.json", "tokenizer_config.json"]) await copyFile(path.join(src, f), path.join(out, f)).catch(() => undefined);
  return out;
}

/** The tiny model's BF16 weights cut to its first layer (what the GPTQ fixtures were made from), as a checkpoint. */
async function writeBf16OneLayer(naming: Naming): Promise<string> {
  const src = path.join(TINY, naming);
  const out = await tempDir("glm4-gptq-bf16-");
  const ck = await Checkpoint.open(src);
  const tensors: { name: string; dtype: string; shape: number[]; data: Uint8Array }[] = [];
  try {
    for (const name of ck.names()) if (!/\.layers\.1\./.test(name)) tensors.push({ name, ...(await ck.read(name)) });
  } finally {
    await ck.close();
  }
  await writeSafetensors(path.join(out, "model.safetensors"), tensors);
  const config = JSON.parse(await readFile(path.join(src, "config.json"), "utf8"));
  for (const key of ["num_layers", "num_hidden_layers"]) if (key in config) config[key] = 1;
  await writeFile(path.join(out, "config.json"), JSON.stringify(config));
  for (const f of ["generation_config.json", "tokenizer.model", "tokenizer.json", "tokenizer_config.json"]) await copyFile(path.join(src, f), path.join(out, f)).catch(() => undefined);
  return out;
}


describe("GPTQ fixtures (scripts/make_gptq_fixture.py)", () => {
  for (const v of variants) {
    it(`${v.name}: layer 0 qkv equals numpy's reading; the model's logits equal the full-precision reference bit for bit`, async () => {
      const warnings: Error[] = [];
      const onWarn = (w: Error) => warnings.push(w);
      process.on("warning", onWarn);
      const dir = path.join(GPTQ, v.dir);
      const model = await loadGlm4(dir, { device: "cpu" });
      const G = (v.group_size === 32 || v.group_size === 64 || v.group_size === 128 ? v.group_size : 128) as 32 | 64 | 128;
      try {
        expect(model.info.groupSize).toBe(G);
        const { ctx, weights } = model.runtime;
        const L0 = weights.layers[0];
        const got = dequantOnDevice(ctx, [L0.q, L0.k, L0.v]);
        const want = readF32(path.join(GPTQ, v.qkv0.file));
        if (!v.desc_act) {
          expect(L0.q.kind === "int4" && L0.q.q.groupSize).toBe(v.group_size);
          expect(Buffer.from(got.buffer).equals(Buffer.from(want.buffer))).toBe(true);
        } else {
          expect(Buffer.from(got.buffer).equals(Buffer.from(fakeQuant(ctx, want, 384, 256, G).buffer))).toBe(true);
        }
        await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
        const req = warnings.filter((w) => (w as Error & { code?: string }).code === "GLM4_GPTQ_REQUANTIZED");
        expect(req.length).toBe(v.desc_act ? 1 : 0);
        if (v.desc_act) expect(req[0].message).toMatch(/4 GPTQ layer\(s\) use act-order.*layers\.0\.qkv, layers\.0\.attn_out, layers\.0\.gate_up, \.\.\..*re-quantized to INT4 at group 64/);

        const logits = await model.logits(P1);
        expect(logits.every(Number.isFinite)).toBe(true);
        const cpu = new (native().Context)("cpu");
        try {
          const refDir = await writeReference(v, true, cpu, G);
          const ref = await loadGlm4(refDir, { device: "cpu", quantization: "none" });
          const refLogits = await ref.logits(P1);
          await ref.dispose();
          expect(Buffer.from(logits.buffer).equals(Buffer.from(refLogits.buffer))).toBe(true);
          // What rounding the scales f16 -> bf16 does to the logits (exact variants; act-order re-quantizes anyway).
          if (!v.desc_act) {
            const exactDir = await writeReference(v, false, cpu, G);
            const ex = await loadGlm4(exactDir, { device: "cpu", quantization: "none" });
            const exLogits = await ex.logits(P1);
            await ex.dispose();
            let maxAbs = 0;
            for (let i = 0; i < exLogits.length; i++) maxAbs = Math.max(maxAbs, Math.abs(exLogits[i] - logits[i]));
            const e = nerr(logits, exLogits);
            // For scale: the 4-bit quantization itself, exact f16 scales against the BF16 model it was made from.
            const bf = await loadGlm4(await writeBf16OneLayer(v.naming), { device: "cpu", quantization: "none" });
            const bfLogits = await bf.logits(P1);
            await bf.dispose();
            const q = nerr(exLogits, bfLogits);
            console.log(`${v.name}: logits, bf16-rounded vs exact f16 scales: normalized squared error ${e.toExponential(2)}, max |diff| ${maxAbs.toExponential(2)}; the 4-bit quantization itself (exact scales vs the BF16 model): ${q.toExponential(2)}`);
            // bf16 keeps 8 significant bits: each scale, and so each weight, moves by <= 2^-9 (0.2%) of itself.
            // Measured on the three exact variants: 1.5e-5 .. 1.8e-5 (max |diff| 0.04-0.05 on logits of std 2.5),
            // against a quantization error three orders of magnitude larger.
            expect(e).toBeLessThan(5e-5);
            expect(e).toBeLessThan(q / 100);
          }
        } finally {
          cpu.dispose();
        }
      } finally {
        process.off("warning", onWarn);
        await model.dispose();
      }
    });
  }

  it("GPTQ checkpoints refuse quantization \"none\" by name, and inspect reports them", async () => {
    const dir = path.join(GPTQ, variants[0].dir);
    await expect(loadGlm4(dir, { device: "cpu", quantization: "none" })).rejects.toMatchObject({ code: "ERR_GLM4_BAD_QUANTIZATION", message: expect.stringMatching(/quantize_config\.json: this is a GPTQ \(4-bit\) checkpoint, so quantization "none" cannot load it/) });
    const { inspectCheckpoint } = await import("../lib/checkpoint/inspect.js");
    const r = await inspectCheckpoint(path.join(GPTQ, "v1-asym-g32-hf"));
    expect(r.quantization).toBe("GPTQ (gptq v1), 4-bit, group 32, asymmetric, desc_act false, lm_head full precision");
    expect(r.naming).toBe("hf");
  });
});
