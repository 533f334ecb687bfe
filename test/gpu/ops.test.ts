/**
 * The op table of test/helpers/cases.ts on "cuda": every case against the float64 reference with the GPU
 * thresholds (cases.ts says why each is what it is) AND against the CPU backend on the same inputs (same seed per
 * case). Plus what only CUDA does: out-of-vocab ids give zero rows, and a captured step replays as a CUDA graph.
 *
 * Runs only where the addon was built with CUDA and a device is present; elsewhere the whole file is skipped and
 * the suite name says why. Run with `npm run test:gpu` (one process, one file at a time).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import type { NativeContext } from "../../lib/engine/native.js";
import { native } from "../../lib/engine/native-binary.js";
import {
  OP_CASES,
  crossFailures,
  loadQuantFixture,
  makeDecodeStep,
  quantFixtures,
  readF64,
  referenceFailures,
  runCase,
} from "../helpers/cases.js";
import { normError } from "../helpers/reference.js";
import { encodeFloats } from "../helpers/rng.js";

const N = native();
const info = N.buildInfo();
const devices = N.devices();
const skipReason = !info.backends.includes("cuda")
  ? `this build of the addon has no CUDA backend (${info.cudaStatus})`
  : devices.length === 0
    ? `no CUDA device is visible (${info.cudaStatus})`
    : null;

const suite = skipReason ? describe.skip : describe;

suite(skipReason ? `ops on cuda: skipped, ${skipReason}` : `ops on cuda (${devices[0].name}, sm_${devices[0].computeCapability})`, () => {
  let gpu: NativeContext;
  let cpu: NativeContext;
  beforeAll(() => {
    gpu = new N.Context("cuda");
    cpu = new N.Context("cpu");
  });
  afterAll(() => {
    gpu?.dispose();
    cpu?.dispose();
  });

  it("linearPath names the INT4 kernel per shape: the GEMV up to 8 rows, a tensor-core GEMM above", () => {
    const sm90 = devices[0].computeCapability === "9.0" && info.cudaArchitectures.includes("90a");
    expect(N.linearPath(1, 4608, 4096)).toBe("gemv");
    expect(N.linearPath(8, 4608, 4096)).toBe("gemv");
    expect(N.linearPath(64, 4096, 4096, 128, 0)).toBe("gemm_tc (layout 0)");
    for (const m of [9, 64, 128, 2048]) expect(N.linearPath(m, 27392, 4096)).toMatch(sm90 ? /^wgmma / : /^mma /);
    expect(N.linearPath(16, 4096, 13696)).toMatch(/splits=([2-9]|1[0-6])$/); // one token tile on 16 row blocks: K split
  });

  describe("op table: cuda vs float64 and cuda vs cpu", () => {
    for (const c of OP_CASES) {
      if (c.gpuPending) {
        it.skip(`${c.name}: pending, ${c.gpuPending}`, () => {});
        continue;
      }
      it(c.name, () => {
        const rg = runCase(c, gpu);
        expect(referenceFailures(rg, "gpu"), "cuda vs the float64 reference").toEqual([]);
        const rc = runCase(c, cpu);
        expect(referenceFailures(rc, "cpu"), "cpu vs the float64 reference (the baseline itself)").toEqual([]);
        expect(crossFailures(rg, rc, "gpu"), "cuda vs the cpu backend").toEqual([]);
      });
    }
  });

  // The default launch picks the cluster size from the row count; each variant must give the same picks (the
  // single-block kernels are what GPUs before sm_90 run).
  describe("sampling kernels: every variant (GLM4_SAMPLING_BLOCKS) vs the float64 reference", () => {
    for (const variant of ["single", "4", "8"])
      for (const c of OP_CASES.filter((x) => x.op === "sample" || x.op === "argmax")) {
        it(`${c.name} [${variant}]`, () => {
          const saved = process.env.GLM4_SAMPLING_BLOCKS;
          process.env.GLM4_SAMPLING_BLOCKS = variant;
          try {
            expect(referenceFailures(runCase(c, gpu), "gpu"), "cuda vs the float64 reference").toEqual([]);
          } finally {
            if (saved === undefined) delete process.env.GLM4_SAMPLING_BLOCKS;
            else process.env.GLM4_SAMPLING_BLOCKS = saved;
          }
        });
      }
  });

  describe("quantization on cuda matches the numpy fixtures bit for bit (the layout is the same on every backend)", () => {
    for (const fc of quantFixtures().cases) {
      it(`${fc.name} (N=${fc.N},K=${fc.K},G=${fc.G})`, () => {
        const { N: n, K: k, G: g, input, packed, scales, zeros, deq } = loadQuantFixture(fc);
        const w = gpu.fromBuffer("bf16", [n, k], input);
        const q = {
          codes: gpu.fromBuffer("i4", [n, k], new Uint8Array((n * k) / 2).fill(0xa5)),
          scales: gpu.fromBuffer("bf16", [n, k / g], new Uint16Array((n * k) / g).fill(0x7fc0)),
          zeros: gpu.fromBuffer("bf16", [n, k / g], new Uint16Array((n * k) / g).fill(0x7fc0)),
          groupSize: g,
        };
        gpu.quantizeInt4(q, w, 0);
        const out = gpu.fromBuffer("f32", [n, k], new Float32Array(n * k).fill(NaN));
        gpu.dequantizeInt4(out, q);
        expect(Buffer.from(q.codes.read() as Uint8Array).equals(Buffer.from(packed)), "codes").toBe(true);
        expect(Array.from(q.scales.read()), "scales").toEqual(Array.from(scales));
        expect(Array.from(q.zeros.read()), "zeros").toEqual(Array.from(zeros));
        const d = out.read() as Float32Array;
        expect(Array.from(new Uint32Array(d.buffer, d.byteOffset, d.length)), "dequantized").toEqual(Array.from(deq));
        for (const t of [w, q.codes, q.scales, q.zeros, out]) t.dispose();
      });
    }
  });

  it("embedding: ids outside [0, V) give rows of zeros on CUDA (ops.h), not an error", () => {
    const V = 10;
    const H = 8;
    const tableVals = Array.from({ length: V * H }, (_, i) => 1 + i / 7);
    const table = gpu.fromBuffer("bf16", [V, H], encodeFloats("bf16", tableVals));
    const ids = gpu.fromBuffer("i32", [4], Int32Array.of(-1, 3, V, 2147483647));
    const out = gpu.fromBuffer("f32", [4, H], new Float32Array(4 * H).fill(NaN));
    gpu.embedding(out, table, ids);
    const got = readF64(out);
    const want = new Float64Array(4 * H);
    for (let j = 0; j < H; ++j) want[H + j] = readF64(table)[3 * H + j];
    expect(Array.from(got)).toEqual(Array.from(want));
    for (const t of [table, ids, out]) t.dispose();
  });

  // The layout-1 GEMV launches with programmatic dependent launch (its weight loads start before the previous kernel
  // ends; x and the output are touched only after griddepcontrol.wait). A chain of linear_int4 calls, each reading the
  // one before, captured as a CUDA graph and replayed, must give exactly what direct calls give: a wait in the wrong
  // place would read a stale input.
  it("a chain of linear_int4 calls (PDL launches) replays as a CUDA graph bit for bit like direct calls", () => {
    const M = 3, H = 256, F = 512;
    const rnd = (n: number, seed: number, amp = 1) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed) * amp);
    const weight = (n: number, k: number, seed: number) => {
      const codes = gpu.fromBuffer("i4", [n, k], Uint8Array.from({ length: (n * k) / 2 }, (_, i) => (i * 7 + seed * 13) & 0xff));
      const groups = (v: number) => gpu.fromBuffer("bf16", [n, k / 128], encodeFloats("bf16", Array.from({ length: (n * k) / 128 }, (_, i) => v + ((i * 5 + seed) % 7) * 0.001)));
      const src = { codes, scales: groups(0.004), zeros: groups(7.5), groupSize: 128 as const };
      const dst = { codes: gpu.empty("i4", [n, k]), scales: gpu.empty("bf16", [n, k / 128]), zeros: gpu.empty("bf16", [n, k / 128]), groupSize: 128 as const, layout: 1 };
      gpu.repackInt4(dst, src);
      return dst;
    };
    const w1 = weight(F, H, 1), w2 = weight(H, F, 2), w3 = weight(F, H, 3), w4 = weight(H, F / 2, 4);
    const x = gpu.fromBuffer("f32", [M, H], rnd(M * H, 1, 3));
    const h0 = gpu.fromBuffer("f32", [M, H], rnd(M * H, 2));
    const nw = gpu.fromBuffer("bf16", [H], encodeFloats("bf16", Array.from(rnd(H, 3, 0.3)).map((v) => 1 + v)));
    const bias = gpu.fromBuffer("f32", [F], rnd(F, 4, 0.5));
    const a = gpu.empty("f32", [M, F]), h = gpu.empty("f32", [M, H]), c = gpu.empty("f32", [M, F / 2]), d = gpu.empty("f32", [M, H]);
    const step = () => {
      gpu.copy(h, h0);
      gpu.linearInt4(a, x, w1, 1.5625e-7, 0, bias, nw); // qkv-like: norm + bias
      gpu.linearInt4(h, a, w2, 0, 1); // o-like: h += a W2^T
      gpu.linearInt4(c, h, w3, 1.5625e-7, 2, null, nw); // gate_up-like: norm + SwiGLU
      gpu.linearInt4(d, c, w4, 0, 0); // down-like
    };
    const bits = (t: typeof a) => Array.from(new Uint32Array((t.read() as Float32Array).slice().buffer));
    step();
    const want = [bits(a), bits(h), bits(c), bits(d)];
    expect(want[3].some((v) => v !== 0), "the chain computed something").toBe(true);
    gpu.beginCapture();
    step();
    const plan = gpu.endCapture();
    for (const t of [a, h, c, d]) t.write(new Float32Array(t.shape[0] * t.shape[1]).fill(NaN));
    for (let r = 0; r < 3; ++r) {
      gpu.replay(plan);
      expect([bits(a), bits(h), bits(c), bits(d)], `replay ${r}`).toEqual(want);
    }
    plan.dispose();
    for (const q of [w1, w2, w3, w4]) for (const t of [q.codes, q.scales, q.zeros]) t.dispose();
    for (const t of [x, h0, nw, bias, a, h, c, d]) t.dispose();
  });

  it("a captured decode step replays (as a CUDA graph) like direct calls", () => {
    const a = new N.Context("cuda");
    const b = new N.Context("cuda");
    const sa = makeDecodeStep(a);
    const sb = makeDecodeStep(b);
    a.beginCapture();
    const nOps = sa.record();
    const plan = a.endCapture();
    expect(plan.ops).toBe(nOps);
    const tokens = [3, 17, 42, 7, 7, 0, 49, 11];
    const us = [0.5, 0.1, 0.9, 0.33, 0.77, 0.01, 0.6, 0.45];
    tokens.forEach((tok, step) => {
      for (const s of [sa, sb]) {
        s.ids.write(Int32Array.of(tok));
        s.pos.write(Int32Array.of(step));
        s.params.write(Float32Array.of(0.8, 0.9, 0.05, us[step]));
      }
      a.replay(plan);
      sb.record();
      const la = readF64(sa.logits);
      const lb = readF64(sb.logits);
      // Same kernels on the same inputs: identical unless a kernel reduces with atomics in a varying order,
      // which moves float32 sums by ~1e-7 relative (1e-14 squared); 1e-10 allows that and nothing more.
      const e = normError(la, lb);
      expect(e.badIndex, `step ${step}: non-finite logits from the replay`).toBe(-1);
      expect(e.err, `step ${step}: replayed logits vs direct`).toBeLessThanOrEqual(1e-10);
      expect(sa.next.read()[0], `step ${step}: argmax`).toBe(sb.next.read()[0]);
      expect(sa.sampled.read()[0], `step ${step}: sample`).toBe(sb.sampled.read()[0]);
    });
    plan.dispose();
    sa.dispose();
    sb.dispose();
    a.dispose();
    b.dispose();
  });
  // Continuous batching relies on this: a sequence decoded in a batch, its blocks anywhere in the pool, gets
  // exactly the arithmetic it gets alone over a contiguous cache (the decode split rule depends on its length only,
  // not on the batch or the grid); and a prefill chunk through a block table equals the contiguous one.
  for (const [label, T, batch] of [["decode: the query of sequence 3 in a batch of 4", 1, true], ["prefill chunk of 48 tokens, one sequence", 48, false]] as const) {
    it(`attention through a block table is bit-identical to a contiguous cache: ${label}`, () => {
      const S = 1024, Hkv = 2, Hq = 32, D = 128, len = 777, bs = 64, nb = S / bs;
      const rnd = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed) * 2);
      const k = rnd(len * Hkv * D, 1), v = rnd(len * Hkv * D, 2), q = rnd(T * Hq * D, 3);
      const ints = (a: number[], shape = [a.length]) => gpu.fromBuffer("i32", shape, Int32Array.from(a));
      const pos = Array.from({ length: T }, (_, i) => len - T + i);
      const run = (paged: boolean) => {
        const seqs = paged && batch ? 4 : 1;
        const rows = seqs * S;
        const kc = gpu.empty("bf16", [rows, Hkv, D]), vc = gpu.empty("bf16", [rows, Hkv, D]);
        gpu.fillRandom(kc, 5, 0, 1);
        gpu.fillRandom(vc, 6, 0, 1);
        // Sequence `me` owns blocks in reverse order, interleaved with the others': table[b][i] = (nb - 1 - i) * seqs + b.
        const me = seqs - 1;
        const table = Array.from({ length: seqs * nb }, (_, j) => (nb - 1 - (j % nb)) * seqs + Math.floor(j / nb));
        const rowOf = (p: number) => (paged ? table[me * nb + Math.floor(p / bs)] * bs + (p % bs) : p);
        gpu.kvWrite(kc, vc, gpu.fromBuffer("f32", [len, Hkv, D], k), gpu.fromBuffer("f32", [len, Hkv, D], v), ints(Array.from({ length: len }, (_, p) => rowOf(p))));
        const out = gpu.empty("f32", [T, Hq, D]);
        const qt = gpu.fromBuffer("f32", [T, Hq, D], q);
        if (!paged) gpu.attention(out, qt, kc, vc, ints(pos), 1 / Math.sqrt(D), 0);
        else if (batch) {
          // 4 queries, one per sequence; the others attend their own (random) rows.
          const q4 = gpu.fromBuffer("f32", [4, Hq, D], Float32Array.from({ length: 4 * Hq * D }, (_, i) => {
            const b = Math.floor(i / (Hq * D));
            return q[i % (Hq * D)] * (b === me ? 1 : 0.5 + b / 7); // row `me` is the query of the contiguous run
          }));
          const o4 = gpu.empty("f32", [4, Hq, D]);
          gpu.attention(o4, q4, kc, vc, ints([100, 5, 1023, pos[0]]), 1 / Math.sqrt(D), bs, ints(table, [seqs, nb]), ints([0, 1, 2, 3]));
          gpu.copy(out, o4.slice0(3, 4));
        } else gpu.attention(out, qt, kc, vc, ints(pos), 1 / Math.sqrt(D), bs, ints(table, [seqs, nb]), null);
        const r = Array.from(new Uint32Array((out.read() as Float32Array).buffer));
        for (const t of [kc, vc, out]) t.dispose();
        return r;
      };
      const alone = run(false);
      expect(alone.some((x) => x !== 0), "the output is not all zeros").toBe(true);
      expect(run(true)).toEqual(alone);
    });
  }
});
