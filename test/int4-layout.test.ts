/**
 * The canonical INT4 layout (csrc/core/int4_layout.h), bit for bit: packing against hand-computed bytes,
 * quantization against the independent numpy implementation's fixtures (scripts/int4_ref.py ->
 * fixtures/tiny-glm4/golden/quant_*), the quantize -> dequantize error bound for every group size, special groups,
 * and non-finite weights.
 */
import { afterAll, describe, expect, it } from "vitest";

import type { NativeTensor, QWeight } from "../lib/engine/native.js";
import { native } from "../lib/engine/native-binary.js";
import { loadQuantFixture, quantFixtures } from "./helpers/cases.js";
import { dequantizeInt4Ref, packInt4, quantizeInt4Ref, repackInt4Ref, unpackInt4 } from "./helpers/reference.js";
import { Rng, bf16BitsToF32, decodeFloats, encodeFloats, f32ToBf16Bits } from "./helpers/rng.js";

const ctx = new (native().Context)("cpu");
afterAll(() => ctx.dispose());

type G = 32 | 64 | 128;

function qweight(n: number, k: number, g: G): QWeight {
  return {
    codes: ctx.empty("i4", [n, k]),
    scales: ctx.fromBuffer("bf16", [n, k / g], new Uint16Array((n * k) / g).fill(0x7fc0)),
    zeros: ctx.fromBuffer("bf16", [n, k / g], new Uint16Array((n * k) / g).fill(0x7fc0)),
    groupSize: g,
  };
}
function disposeQ(q: QWeight): void {
  q.codes.dispose();
  q.scales.dispose();
  q.zeros.dispose();
}
function quantize(dtype: "f32" | "bf16" | "f16", n: number, k: number, g: G, values: ArrayLike<number>): { q: QWeight; w: NativeTensor } {
  const w = ctx.fromBuffer(dtype, [n, k], encodeFloats(dtype, values));
  const q = qweight(n, k, g);
  ctx.quantizeInt4(q, w, 0);
  return { q, w };
}
function dequantize(q: QWeight, n: number, k: number): Float32Array {
  const out = ctx.fromBuffer("f32", [n, k], new Float32Array(n * k).fill(NaN));
  ctx.dequantizeInt4(out, q);
  const r = out.read() as Float32Array;
  out.dispose();
  return r;
}

// ------------------------------------------------------------------ packing

describe("packing: two codes a byte, low nibble = even k", () => {
  // codes of one row of K = 32, and the bytes worked out by hand: byte j = code(2j) | code(2j+1) << 4
  const codes = [1, 2, 15, 0, 7, 8, 10, 5, 0, 0, 15, 15, 3, 12, 9, 6, 4, 11, 13, 14, 1, 1, 2, 2, 6, 9, 12, 3, 8, 7, 5, 10];
  const bytes = [0x21, 0x0f, 0x87, 0x5a, 0x00, 0xff, 0xc3, 0x69, 0xb4, 0xed, 0x11, 0x22, 0x96, 0x3c, 0x78, 0xa5];

  it("TS pack/unpack match the hand-computed bytes", () => {
    expect(Array.from(packInt4(codes, 1, 32))).toEqual(bytes);
    expect(Array.from(unpackInt4(bytes, 1, 32))).toEqual(codes);
  });

  it("dequantize reads the low nibble as the even column (scale 1, zero 0 gives the codes back)", () => {
    const q: QWeight = {
      codes: ctx.fromBuffer("i4", [1, 32], Uint8Array.from(bytes)),
      scales: ctx.fromBuffer("bf16", [1, 1], Uint16Array.of(0x3f80)),
      zeros: ctx.fromBuffer("bf16", [1, 1], Uint16Array.of(0x0000)),
      groupSize: 32,
    };
    expect(Array.from(dequantize(q, 1, 32))).toEqual(codes);
    disposeQ(q);
  });

  it("quantize writes the low nibble for the even column (integer weights 0..15: scale 1, zero 0)", () => {
    // lo = 0 and hi = 15 in the group, so scale = 15/15 = 1 and zero = 0: the codes are the weights themselves.
    const { q, w } = quantize("f32", 1, 32, 32, codes);
    expect(Array.from(q.codes.read())).toEqual(bytes);
    expect(Array.from(q.scales.read())).toEqual([0x3f80]);
    expect(bf16BitsToF32((q.zeros.read() as Uint16Array)[0]) === 0).toBe(true); // -lo / scale = -0: stored as -0
    disposeQ(q);
    w.dispose();
  });

  it("an i4 tensor of n elements takes ceil(n/2) bytes; rows slice on byte boundaries", () => {
    const t = ctx.empty("i4", [3, 5]);
    expect(t.nbytes).toBe(8);
    t.dispose();
    const u = ctx.fromBuffer("i4", [4, 8], Uint8Array.from({ length: 16 }, (_, i) => i * 17));
    const s = u.slice0(1, 3);
    expect(s.shape).toEqual([2, 8]);
    expect(Array.from(s.read())).toEqual([4, 5, 6, 7, 8, 9, 10, 11].map((i) => i * 17));
    s.dispose();
    u.dispose();
  });
});

// ------------------------------------------------------------------ numpy fixtures

describe("quantization matches the numpy fixtures bit for bit", () => {
  const listing = quantFixtures();
  it("the fixtures cover every group size, with random, special and real-checkpoint inputs", () => {
    expect(listing.format).toBe("glm4-int4-native quantizer goldens v1");
    expect(new Set(listing.cases.map((c) => c.G))).toEqual(new Set([32, 64, 128]));
    expect(listing.cases.some((c) => c.name.startsWith("special"))).toBe(true);
    expect(listing.cases.some((c) => c.name.startsWith("tiny"))).toBe(true);
  });

  for (const fc of listing.cases) {
    it(`${fc.name} (N=${fc.N},K=${fc.K},G=${fc.G})`, () => {
      const { N, K, G, input, packed, scales, zeros, deq } = loadQuantFixture(fc);

      // the fixture is self-consistent
      const hist = new Array<number>(16).fill(0);
      for (const c of unpackInt4(packed, N, K)) hist[c]++;
      expect(hist).toEqual(fc.stats.codes_histogram);

      // the native quantizer
      const w = ctx.fromBuffer("bf16", [N, K], input);
      const q = qweight(N, K, G);
      ctx.quantizeInt4(q, w, 0);
      expect(Buffer.from(q.codes.read() as Uint8Array).equals(Buffer.from(packed))).toBe(true);
      expect(Array.from(q.scales.read())).toEqual(Array.from(scales));
      expect(Array.from(q.zeros.read())).toEqual(Array.from(zeros));
      const d = dequantize(q, N, K);
      expect(Array.from(new Uint32Array(d.buffer))).toEqual(Array.from(deq));
      disposeQ(q);
      w.dispose();

      // the TS reference agrees as well (it is what the op table checks random inputs against)
      const ref = quantizeInt4Ref(decodeFloats("bf16", input), N, K, G);
      expect(Buffer.from(ref.packed).equals(Buffer.from(packed))).toBe(true);
      expect(Array.from(ref.scales)).toEqual(Array.from(scales));
      expect(Array.from(ref.zeros)).toEqual(Array.from(zeros));
      expect(Array.from(new Uint32Array(Float32Array.from(dequantizeInt4Ref(packed, scales, zeros, N, K, G)).buffer))).toEqual(Array.from(deq));
    });
  }
});

// ------------------------------------------------------------------ error bound

/**
 * |w - w'| <= scale/2 * (1 + 2^-15) for every weight, scale being the stored bf16 scale of its group.
 * Why this holds with the bf16-rounded scale and zero: the quantizer rounds w/scale + zero to the nearest code
 * using the rounded values themselves, so inside the grid [(0 - zero) * scale, (15 - zero) * scale] the error is at
 * most scale/2. bf16 rounding of scale (2^-9 relative) and zero (2^-9 * |zero| <= 2^-5) can leave the group's min or
 * max outside that grid, by at most (15 + 16) * 2^-9 * scale ~ 0.06 scale, which clamping to 0 or 15 keeps below
 * scale/2. The float32 evaluation of w/scale + zero (|t| <= 16: error <= 2^-19) can flip a rounding at a midpoint,
 * and dequantization rounds at most once more (2^-24 relative): together < 2^-18 * scale. The slack 2^-16 * scale
 * covers that 4x over.
 */
function checkBound(w: ArrayLike<number>, d: Float32Array, scalesBits: Uint16Array, n: number, k: number, g: G): string | null {
  const ng = k / g;
  for (let r = 0; r < n; ++r)
    for (let j = 0; j < k; ++j) {
      const s = bf16BitsToF32(scalesBits[r * ng + Math.floor(j / g)]);
      const err = Math.abs(w[r * k + j] - d[r * k + j]);
      if (!(err <= (s / 2) * (1 + 2 ** -15))) return `row ${r} col ${j}: |${w[r * k + j]} - ${d[r * k + j]}| = ${err} > scale/2 = ${s / 2}`;
    }
  return null;
}

describe("quantize -> dequantize error <= scale/2 for every group size", () => {
  const n = 8;
  const k = 512;
  const dists: Record<string, (rng: Rng) => number[]> = {
    "normal(0, 0.02)": (rng) => Array.from(rng.normals(n * k, 0.02)),
    "heavy tails": (rng) => Array.from(rng.normals(n * k), (x) => 0.02 * x * Math.exp(1.5 * Math.abs(rng.normal()))),
    "rows of very different scales": (rng) => Array.from(rng.normals(n * k), (x, i) => x * 10 ** (Math.floor(i / k) - 4)),
    "all positive": (rng) => Array.from(rng.normals(n * k), (x) => Math.abs(x) + 0.1),
    "all negative": (rng) => Array.from(rng.normals(n * k), (x) => -Math.abs(x) * 3 - 1e-3),
  };
  for (const g of [32, 64, 128] as const)
    for (const [dname, gen] of Object.entries(dists))
      for (const dtype of ["bf16", "f32"] as const) {
        it(`G=${g}, ${dname}, w=${dtype}`, () => {
          const rng = new Rng(`bound ${g} ${dname} ${dtype}`);
          const vals = decodeFloats(dtype, encodeFloats(dtype, gen(rng)));
          const { q, w } = quantize(dtype, n, k, g, vals);
          const d = dequantize(q, n, k);
          expect(checkBound(vals, d, q.scales.read() as Uint16Array, n, k, g)).toBeNull();
          disposeQ(q);
          w.dispose();
        });
      }
});

// ------------------------------------------------------------------ special groups

describe("special groups", () => {
  const g = 32;
  const k = 4 * g;
  function groupOf<T>(a: ArrayLike<T>, gi: number): T[] {
    return Array.from({ length: g }, (_, i) => a[gi * g + i]);
  }

  it("constant, all-zero, all-positive and all-negative groups", () => {
    const rng = new Rng("special groups");
    const vals = new Float64Array(k);
    vals.fill(0.375, 0, g); // constant positive
    vals.fill(0, g, 2 * g); // all zero
    for (let i = 2 * g; i < 3 * g; ++i) vals[i] = Math.abs(rng.normal()) + 0.01; // all positive, distinct
    for (let i = 3 * g; i < 4 * g; ++i) vals[i] = -1.25; // constant negative
    const { q, w } = quantize("f32", 1, k, 32, vals);
    const codes = unpackInt4(q.codes.read(), 1, k);
    const scales = q.scales.read() as Uint16Array;
    const zeros = Array.from(q.zeros.read() as Uint16Array, bf16BitsToF32);
    const d = dequantize(q, 1, k);

    // constant c > 0: lo = 0, so zero = 0 and every code is 15 (c / bf16(c/15) rounds to 15); w' = 15 * scale
    expect(new Set(groupOf(codes, 0))).toEqual(new Set([15]));
    expect(zeros[0] === 0).toBe(true); // +-0 (-0 in practice: -lo / scale with lo = +0)
    expect(d[0]).toBe(15 * bf16BitsToF32(scales[0]));
    // all zero: scale 1, zero 0, codes 0, exact zeros back
    expect(scales[1]).toBe(0x3f80);
    expect(zeros[1] === 0).toBe(true);
    expect(new Set(groupOf(codes, 1))).toEqual(new Set([0]));
    expect(groupOf(d, 1).every((x) => x === 0)).toBe(true);
    // all positive: lo = 0, so the zero point is exactly 0 (stored as -0 by both implementations: -lo / scale)
    expect(zeros[2] === 0).toBe(true);
    expect(Math.max(...groupOf(codes, 2))).toBe(15);
    // constant c < 0: hi = 0, zero = bf16(-c / scale) ~ 15, codes 0
    expect(new Set(groupOf(codes, 3))).toEqual(new Set([0]));
    expect(zeros[3]).toBeGreaterThan(14.9);
    expect(checkBound(vals, d, scales, 1, k, 32)).toBeNull();
    disposeQ(q);
    w.dispose();
  });

  it("dequantize is (code - zero) * scale exactly", () => {
    // codes 0..15 twice, scale 0.5, zero 3.25: every (c - 3.25) * 0.5 is exact in float32 (and bf16 out rounds it)
    const codes = Array.from({ length: 32 }, (_, i) => i % 16);
    const q: QWeight = {
      codes: ctx.fromBuffer("i4", [1, 32], packInt4(codes, 1, 32)),
      scales: ctx.fromBuffer("bf16", [1, 1], Uint16Array.of(f32ToBf16Bits(0.5))),
      zeros: ctx.fromBuffer("bf16", [1, 1], Uint16Array.of(f32ToBf16Bits(3.25))),
      groupSize: 32,
    };
    expect(Array.from(dequantize(q, 1, 32))).toEqual(codes.map((c) => (c - 3.25) * 0.5));
    const outB = ctx.empty("bf16", [1, 32]);
    ctx.dequantizeInt4(outB, q);
    expect(Array.from(outB.read() as Uint16Array, bf16BitsToF32)).toEqual(codes.map((c) => (c - 3.25) * 0.5));
    outB.dispose();
    disposeQ(q);
  });
});

// ------------------------------------------------------------------ non-finite weights

describe("a group holding Inf or NaN is rejected", () => {
  const cases: [string, "f32" | "bf16" | "f16", number][] = [
    ["NaN in f32", "f32", NaN],
    ["+Inf in f32", "f32", Infinity],
    ["-Inf in bf16", "bf16", -Infinity],
    ["NaN in bf16", "bf16", NaN],
    ["Inf in f16 (overflow of 1e5)", "f16", 1e5],
  ];
  for (const [name, dtype, bad] of cases) {
    it(name, () => {
      const vals = Array.from(new Rng(name).normals(4 * 128, 0.02));
      vals[2 * 128 + 77] = bad; // row 2
      const { q, w } = quantize(dtype, 4, 128, 64, vals);
      let err: (Error & { code?: string }) | null = null;
      try {
        ctx.flush();
      } catch (e) {
        err = e as Error & { code?: string };
      }
      expect(err, "quantize of a NaN/Inf weight must throw").not.toBeNull();
      expect(err!.code).toBe("ERR_GLM4_INVALID_ARGUMENT");
      expect(err!.message).toMatch(/quantize_int4/);
      expect(err!.message).toMatch(/row 2/);
      expect(err!.message).toMatch(/NaN or Inf/);
      disposeQ(q);
      w.dispose();
      // the context keeps working
      const ok = quantize("f32", 1, 64, 64, Array.from({ length: 64 }, (_, i) => i / 64 - 0.3));
      expect(() => ok.q.codes.read()).not.toThrow();
      disposeQ(ok.q);
      ok.w.dispose();
    });
  }
});

// ------------------------------------------------------------------ layout 1 (the CUDA kernel layout)

describe("layout 1 (tiled 16 x 64, csrc/core/int4_layout.h): repack_int4 bit for bit", () => {
  type Q = QWeight & { layout: number };
  const given = (n: number, k: number, g: G, packed: Uint8Array, scales: Uint16Array, zeros: Uint16Array, codebook: 0 | 1 = 0): Q => ({
    codes: ctx.fromBuffer("i4", [n, k], packed),
    scales: ctx.fromBuffer("bf16", [n, k / g], scales),
    zeros: ctx.fromBuffer("bf16", [n, k / g], zeros),
    groupSize: g,
    layout: 0,
    codebook,
  });
  const empty1 = (n: number, k: number, g: G, codebook: 0 | 1 = 0): Q => {
    const q = qweight(n, k, g) as Q;
    q.codes.write(new Uint8Array((n * k) / 2).fill(0xa5));
    q.layout = 1;
    q.codebook = codebook;
    return q;
  };
  const random = (rng: Rng, n: number, k: number, g: G) => {
    const packed = new Uint8Array((n * k) / 2);
    for (let i = 0; i < packed.length; ++i) packed[i] = rng.u32() & 0xff;
    const scales = new Uint16Array((n * k) / g).map(() => f32ToBf16Bits(1e-3 + 0.1 * rng.uniform()));
    const zeros = new Uint16Array((n * k) / g).map(() => f32ToBf16Bits(15 * rng.uniform()));
    return { packed, scales, zeros };
  };

  it("a hand-computed weight: every word of every lane, and the one marked word", () => {
    // code(n, k) = (k & 1) | bit(n, 3) << 1 | bit(k, 3) << 2, so in every lane's word the entries a0..a7 are the
    // codes 0..7: nibbles [a0, a2, a4, a6, a1, a3, a5, a7] = [0, 2, 4, 6, 1, 3, 5, 7] -> word 0x75316420, bytes
    // 20 64 31 75. Plus 8 for rows n % 8 == 5 (g = 5), k in tile kt = 1, sub-tile j = 2, columns with
    // (k >> 1) & 3 == 3 (t = 3): exactly lane 4 * 5 + 3 = 23, word 2 of tile (0, 1), whose entries become 8..15:
    // nibbles [8, 10, 12, 14, 9, 11, 13, 15] -> 0xFDB9ECA8 at byte 512 + 16 * 23 + 4 * 2 = 888.
    const n = 16, k = 128;
    const codes: number[] = [];
    for (let r = 0; r < n; ++r)
      for (let c = 0; c < k; ++c) {
        const mark = (r & 7) === 5 && ((c >> 4) & 3) === 2 && ((c >> 1) & 3) === 3 && c >> 6 === 1;
        codes.push((c & 1) | (((r >> 3) & 1) << 1) | (((c >> 3) & 1) << 2) | (mark ? 8 : 0));
      }
    const src = given(n, k, 64, packInt4(codes, n, k), new Uint16Array(32).fill(0x3f80), new Uint16Array(32));
    const dst = empty1(n, k, 64);
    ctx.repackInt4(dst, src);
    const want = new Uint8Array(1024);
    for (let i = 0; i < 1024; i += 4) want.set([0x20, 0x64, 0x31, 0x75], i);
    want.set([0xa8, 0xec, 0xb9, 0xfd], 888);
    expect(Array.from(dst.codes.read() as Uint8Array)).toEqual(Array.from(want));
    disposeQ(src);
    disposeQ(dst);
  });

  it("scales and zeros: (n, gi) -> ((n / 16) * K/G + gi) * 16 + n % 16 (hand-computed)", () => {
    // N = 32, K = 128, G = 32: 4 groups a row; canonical index n * 4 + gi holds the value n * 4 + gi + 1.
    const n = 32, k = 128, g = 32;
    const vals = Uint16Array.from({ length: 128 }, (_, i) => i + 1);
    const src = given(n, k, g, new Uint8Array(2048), vals, vals.map((v) => v + 1000));
    const dst = empty1(n, k, g);
    ctx.repackInt4(dst, src);
    const s = dst.scales.read() as Uint16Array;
    const z = dst.zeros.read() as Uint16Array;
    // (n=0, gi=0) -> 0; (n=1, gi=0) -> 1; (n=0, gi=1) -> 16; (n=15, gi=3) -> 63; (n=16, gi=0) -> 64; (n=17, gi=2) -> 97
    for (const [row, gi, at] of [[0, 0, 0], [1, 0, 1], [0, 1, 16], [15, 3, 63], [16, 0, 64], [17, 2, 97], [31, 3, 127]]) {
      expect(s[at], `scale (${row}, ${gi})`).toBe(row * 4 + gi + 1);
      expect(z[at], `zero (${row}, ${gi})`).toBe(row * 4 + gi + 1001);
    }
    disposeQ(src);
    disposeQ(dst);
  });

  for (const [n, k, g] of [[16, 64, 64], [48, 192, 32], [32, 256, 128], [80, 128, 64]] as [number, number, G][]) {
    it(`random codes N=${n} K=${k} G=${g}: equals the spec's fragment-by-fragment reference; 1 -> 0 gives the input back`, () => {
      const { packed, scales, zeros } = random(new Rng(`repack ${n} ${k} ${g}`), n, k, g);
      const src = given(n, k, g, packed, scales, zeros);
      const dst = empty1(n, k, g);
      ctx.repackInt4(dst, src);
      const ref = repackInt4Ref(packed, [scales, zeros], n, k, g);
      expect(Buffer.from(dst.codes.read() as Uint8Array).equals(Buffer.from(ref.codes)), "codes").toBe(true);
      expect(Array.from(dst.scales.read() as Uint16Array)).toEqual(Array.from(ref.groups[0]));
      expect(Array.from(dst.zeros.read() as Uint16Array)).toEqual(Array.from(ref.groups[1]));
      // dequantize reads layout 1 as the same weight (CPU: through the index functions)
      expect(Array.from(dequantize(dst, n, k))).toEqual(Array.from(dequantize(src, n, k)));
      const back = given(n, k, g, new Uint8Array((n * k) / 2).fill(0x5a), new Uint16Array((n * k) / g), new Uint16Array((n * k) / g));
      ctx.repackInt4(back, dst);
      expect(Buffer.from(back.codes.read() as Uint8Array).equals(Buffer.from(packed)), "codes back").toBe(true);
      expect(Array.from(back.scales.read() as Uint16Array)).toEqual(Array.from(scales));
      expect(Array.from(back.zeros.read() as Uint16Array)).toEqual(Array.from(zeros));
      for (const q of [src, dst, back]) disposeQ(q);
    });
  }

  it("rows slice: rows [16a, 16b) of a layout-1 weight are the layout-1 weight of those rows", () => {
    const n = 64, k = 128, g = 64;
    const { packed, scales, zeros } = random(new Rng("slice"), n, k, g);
    const src = given(n, k, g, packed, scales, zeros);
    const dst = empty1(n, k, g);
    ctx.repackInt4(dst, src);
    const part = { codes: dst.codes.slice0(16, 48), scales: dst.scales.slice0(16, 48), zeros: dst.zeros.slice0(16, 48), groupSize: g, layout: 1 } as QWeight;
    const full = dequantize(src, n, k);
    expect(Array.from(dequantize(part, 32, k))).toEqual(Array.from(full.subarray(16 * k, 48 * k)));
    for (const t of [part.codes, part.scales, part.zeros]) t.dispose();
    disposeQ(src);
    disposeQ(dst);
  });

  it("NF4 codebook: dequantize is (NF4[q] - zero) * scale in float32 (both layouts)", () => {
    const n = 16, k = 64, g = 32;
    const { packed, scales, zeros } = random(new Rng("nf4"), n, k, g);
    const src = given(n, k, g, packed, scales, zeros, 1);
    const want = dequantizeInt4Ref(packed, scales, zeros, n, k, g, 1);
    expect(Array.from(dequantize(src, n, k))).toEqual(Array.from(want));
    const dst = empty1(n, k, g, 1);
    ctx.repackInt4(dst, src);
    expect(Array.from(dequantize(dst, n, k))).toEqual(Array.from(want));
    disposeQ(src);
    disposeQ(dst);
  });

  it("bad repacks and layout-1 weights on the CPU matmuls throw coded errors naming the shapes", () => {
    const { packed, scales, zeros } = random(new Rng("bad"), 32, 128, 64);
    const src = given(32, 128, 64, packed, scales, zeros);
    const odd = given(24, 128, 64, packed.subarray(0, 24 * 64), scales.subarray(0, 48), zeros.subarray(0, 48));
    const odd1 = { ...empty1(24, 128, 64) };
    const codeOf = (f: () => void): string | undefined => {
      try {
        f();
      } catch (e) {
        return `${(e as { code?: string }).code}: ${(e as Error).message}`;
      }
      return undefined;
    };
    expect(codeOf(() => ctx.repackInt4(odd1, odd))).toMatch(/ERR_GLM4_SHAPE.*layout 1 needs N % 16 == 0 and K % 64 == 0, got \[24,128\]/);
    expect(codeOf(() => ctx.repackInt4(src, src))).toMatch(/ERR_GLM4_INVALID_ARGUMENT.*both layout 0/);
    const dst = empty1(32, 128, 64);
    expect(codeOf(() => ctx.repackInt4({ ...dst, groupSize: 32 } as QWeight, src))).toMatch(/ERR_GLM4_SHAPE/);
    expect(codeOf(() => ctx.repackInt4({ ...dst, codebook: 1 }, src))).toMatch(/codebook 1 must match src/);
    expect(codeOf(() => ctx.repackInt4({ ...dst, codebook: 2 as 1 }, src))).toMatch(/unknown codebook 2/);
    expect(codeOf(() => ctx.repackInt4({ ...src, layout: 1, codes: src.codes } as QWeight, src))).toMatch(/overlaps src/);
    const x = ctx.fromBuffer("f32", [1, 128], new Float32Array(128).fill(1));
    const y = ctx.empty("f32", [1, 32]);
    ctx.repackInt4(dst, src);
    expect(codeOf(() => ctx.matmulInt4(y, x, dst))).toMatch(/ERR_GLM4_INVALID_ARGUMENT.*canonical layout/);
    expect(codeOf(() => ctx.linearInt4(y, x, dst, 1e-5, 0))).toMatch(/ERR_GLM4_INVALID_ARGUMENT.*canonical layout/);
    expect(codeOf(() => ctx.linearInt4(y, x, src, 1e-5, 3 as 0))).toMatch(/unknown mode 3/);
    expect(codeOf(() => ctx.linearInt4(ctx.empty("f32", [1, 32]), x, src, 1e-5, 2))).toMatch(/out .* must be \[1,16\]/);
    expect(codeOf(() => ctx.linearInt4(x.reshape([1, 128]), x, { ...src, groupSize: 64 }, 1e-5, 0))).toMatch(/must be \[1,32\]|overlaps x/);
    for (const q of [src, odd, dst]) disposeQ(q);
    for (const t of [odd1.codes, odd1.scales, odd1.zeros, x, y]) t.dispose();
  });
});
