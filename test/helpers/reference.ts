/**
 * Float64 references for every op of csrc/ops.h, written from the math stated there (and, for INT4, from the
 * layout in csrc/core/int4_layout.h / fixtures/tiny-glm4/golden/quant_cases.json), not from the C++ code.
 *
 * Inputs are the exact values held by the native tensors (bf16/f16 decoded exactly), so a reference sees the same
 * rounded numbers as the op. Arrays are flat, row-major.
 */
import { bf16BitsToF32, f32ToBf16Bits } from "./rng.js";

// ------------------------------------------------------------------ error measure

export interface NormError {
  /** ||got - ref||^2 / ||ref||^2 (plain ||got - ref||^2 when ref is all zeros). */
  err: number;
  /** Index of the first non-finite value of got where ref is finite, or -1. */
  badIndex: number;
}

/** Normalized squared error; a NaN or Inf in `got` (where ref is finite) is reported, never averaged away. */
export function normError(got: ArrayLike<number>, ref: ArrayLike<number>): NormError {
  if (got.length !== ref.length) throw new Error(`normError: length ${got.length} vs ${ref.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; ++i) {
    const g = got[i];
    const r = ref[i];
    if (!Number.isFinite(g) && Number.isFinite(r)) return { err: Infinity, badIndex: i };
    num += (g - r) * (g - r);
    den += r * r;
  }
  return { err: den > 0 ? num / den : num, badIndex: -1 };
}

// ------------------------------------------------------------------ ops

/** out[t, :] = table[ids[t], :]. */
export function embeddingRef(table: ArrayLike<number>, v: number, h: number, ids: ArrayLike<number>): Float64Array {
  const out = new Float64Array(ids.length * h);
  for (let t = 0; t < ids.length; ++t) {
    const id = ids[t];
    if (id < 0 || id >= v) throw new Error(`embeddingRef: id ${id} outside [0, ${v})`);
    for (let j = 0; j < h; ++j) out[t * h + j] = table[id * h + j];
  }
  return out;
}

/** out = x / sqrt(mean(x^2) + eps) * w, per row of x [T, H]. */
export function rmsnormRef(x: ArrayLike<number>, t: number, h: number, w: ArrayLike<number>, eps: number): Float64Array {
  const out = new Float64Array(t * h);
  for (let r = 0; r < t; ++r) {
    let ss = 0;
    for (let j = 0; j < h; ++j) ss += x[r * h + j] * x[r * h + j];
    const inv = 1 / Math.sqrt(ss / h + eps);
    for (let j = 0; j < h; ++j) out[r * h + j] = x[r * h + j] * inv * w[j];
  }
  return out;
}

/** y [M, N] = x [M, K] * w[N, K]^T (+ bias[N]). */
export function matmulRef(
  x: ArrayLike<number>,
  m: number,
  k: number,
  w: ArrayLike<number>,
  n: number,
  bias?: ArrayLike<number> | null,
): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; ++i) {
    for (let r = 0; r < n; ++r) {
      let acc = 0;
      const xo = i * k;
      const wo = r * k;
      for (let j = 0; j < k; ++j) acc += x[xo + j] * w[wo + j];
      out[i * n + r] = acc + (bias ? bias[r] : 0);
    }
  }
  return out;
}

/** x [M, N] + b [N]. */
export function addBiasRef(x: ArrayLike<number>, m: number, n: number, b: ArrayLike<number>): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; ++i) for (let j = 0; j < n; ++j) out[i * n + j] = x[i * n + j] + b[j];
  return out;
}

/**
 * GLM-4 rotary on x [T, heads, D] (returns a new array): on the first rotDim dims of each head, interleaved
 * pairs (x[2i], x[2i+1]) rotated by a = pos[t] * theta^(-2i/rotDim), i < rotDim/2; dims >= rotDim unchanged.
 */
export function rotaryRef(
  x: ArrayLike<number>,
  t: number,
  heads: number,
  d: number,
  pos: ArrayLike<number>,
  rotDim: number,
  theta: number,
): Float64Array {
  const out = Float64Array.from(x as ArrayLike<number>);
  for (let i = 0; i < t; ++i) {
    for (let j = 0; j < rotDim / 2; ++j) {
      const a = pos[i] * Math.pow(theta, (-2 * j) / rotDim);
      const c = Math.cos(a);
      const s = Math.sin(a);
      for (let h = 0; h < heads; ++h) {
        const o = (i * heads + h) * d + 2 * j;
        const x0 = x[o];
        const x1 = x[o + 1];
        out[o] = x0 * c - x1 * s;
        out[o + 1] = x1 * c + x0 * s;
      }
    }
  }
  return out;
}

/**
 * Causal GQA attention over a paged cache: query i (q [t, hq, d]) sees positions 0..pos[i] of its sequence,
 * position p at pool row rowOf(i, p) (k, v: [rows, hkv, d]). softmax(q.k * scale) v in float64.
 */
export function attentionRowsRef(
  q: ArrayLike<number>,
  t: number,
  hq: number,
  d: number,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  hkv: number,
  pos: ArrayLike<number>,
  scale: number,
  rowOf: (i: number, p: number) => number,
): Float64Array {
  const out = new Float64Array(t * hq * d);
  const per = hq / hkv;
  for (let i = 0; i < t; ++i) {
    const len = pos[i] + 1;
    const rows = Array.from({ length: len }, (_, p) => rowOf(i, p));
    const sc = new Float64Array(len);
    for (let h = 0; h < hq; ++h) {
      const g = Math.floor(h / per);
      const qo = (i * hq + h) * d;
      let mx = -Infinity;
      for (let j = 0; j < len; ++j) {
        const ko = (rows[j] * hkv + g) * d;
        let dot = 0;
        for (let x = 0; x < d; ++x) dot += q[qo + x] * k[ko + x];
        sc[j] = dot * scale;
        if (sc[j] > mx) mx = sc[j];
      }
      let sum = 0;
      for (let j = 0; j < len; ++j) sum += sc[j] = Math.exp(sc[j] - mx);
      for (let j = 0; j < len; ++j) {
        const pw = sc[j] / sum;
        const vo = (rows[j] * hkv + g) * d;
        for (let x = 0; x < d; ++x) out[qo + x] += pw * v[vo + x];
      }
    }
  }
  return out;
}

/**
 * Causal GQA attention: q [T, Hq, D] over cache rows start[t]..pos[t] of k, v [S, Hkv, D] (start absent: 0); query
 * head h reads KV group h / (Hq / Hkv); out = softmax(scale * q.k) v.
 */
export function attentionRef(
  q: ArrayLike<number>,
  t: number,
  hq: number,
  d: number,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  hkv: number,
  pos: ArrayLike<number>,
  scale: number,
  start?: ArrayLike<number>,
): Float64Array {
  const out = new Float64Array(t * hq * d);
  const per = hq / hkv;
  for (let i = 0; i < t; ++i) {
    const b0 = start ? start[i] : 0;
    const len = pos[i] + 1 - b0;
    const sc = new Float64Array(len);
    for (let h = 0; h < hq; ++h) {
      const g = Math.floor(h / per);
      const qo = (i * hq + h) * d;
      let mx = -Infinity;
      for (let j = 0; j < len; ++j) {
        const ko = ((b0 + j) * hkv + g) * d;
        let dot = 0;
        for (let x = 0; x < d; ++x) dot += q[qo + x] * k[ko + x];
        sc[j] = dot * scale;
        if (sc[j] > mx) mx = sc[j];
      }
      let sum = 0;
      for (let j = 0; j < len; ++j) sum += sc[j] = Math.exp(sc[j] - mx);
      for (let j = 0; j < len; ++j) {
        const p = sc[j] / sum;
        const vo = ((b0 + j) * hkv + g) * d;
        for (let x = 0; x < d; ++x) out[qo + x] += p * v[vo + x];
      }
    }
  }
  return out;
}

/** out [M, F] = silu(gu[:, :F]) * gu[:, F:]. */
export function swigluRef(gu: ArrayLike<number>, m: number, f: number): Float64Array {
  const out = new Float64Array(m * f);
  for (let i = 0; i < m; ++i) {
    for (let j = 0; j < f; ++j) {
      const g = gu[i * 2 * f + j];
      const u = gu[i * 2 * f + f + j];
      out[i * f + j] = (g / (1 + Math.exp(-g))) * u;
    }
  }
  return out;
}

export function addRef(a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  const out = new Float64Array(a.length);
  for (let i = 0; i < a.length; ++i) out[i] = a[i] + b[i];
  return out;
}

/** Index of the first maximum of each row of x [M, V]. */
export function argmaxRef(x: ArrayLike<number>, m: number, v: number): Int32Array {
  const out = new Int32Array(m);
  for (let i = 0; i < m; ++i) {
    let best = 0;
    for (let j = 1; j < v; ++j) if (x[i * v + j] > x[i * v + best]) best = j;
    out[i] = best;
  }
  return out;
}

/** softmax(x / temperature) per row of x [M, V]. */
export function softmaxRef(x: ArrayLike<number>, m: number, v: number, temperature: number): Float64Array {
  const out = new Float64Array(m * v);
  for (let i = 0; i < m; ++i) {
    let mx = -Infinity;
    for (let j = 0; j < v; ++j) mx = Math.max(mx, x[i * v + j] / temperature);
    let sum = 0;
    for (let j = 0; j < v; ++j) sum += out[i * v + j] = Math.exp(x[i * v + j] / temperature - mx);
    for (let j = 0; j < v; ++j) out[i * v + j] /= sum;
  }
  return out;
}

// ------------------------------------------------------------------ sampling

export interface SampleParams {
  temperature: number;
  topP: number;
  minP: number;
  u: number;
  topK: number;
}

export interface SampleCandidates {
  /** Token ids kept after top-k, min-p and top-p, most probable first. */
  ids: number[];
  /** Their probabilities after renormalization (sum 1). */
  probs: number[];
  /**
   * Distance of the cut decisions from their thresholds (top-p cumulative mass vs p, min-p probability vs
   * min_p * p_max), in probability units; Infinity when no cut applies. A pick is only compared exactly when the
   * margin is comfortably above float32 rounding.
   */
  cutMargin: number;
}

/**
 * The documented sampling algorithm: p = softmax(logits / temperature); candidates sorted by p (descending, ties
 * by lower id); keep the first top_k (0 = off); then min-p keeps those with p >= min_p * p_max (min_p <= 0 = off);
 * then top-p keeps the smallest prefix whose mass reaches top_p (top_p outside (0, 1) = off, at least one token);
 * renormalize.
 */
export function sampleCandidates(logits: ArrayLike<number>, p: SampleParams): SampleCandidates {
  const v = logits.length;
  let mx = -Infinity;
  for (let j = 0; j < v; ++j) mx = Math.max(mx, logits[j] / p.temperature);
  const pr = new Float64Array(v);
  let sum = 0;
  for (let j = 0; j < v; ++j) sum += pr[j] = Math.exp(logits[j] / p.temperature - mx);
  for (let j = 0; j < v; ++j) pr[j] /= sum;
  const order = Array.from({ length: v }, (_, j) => j).sort((a, b) => pr[b] - pr[a] || a - b);
  let keep = v;
  let margin = Infinity;
  if (p.topK > 0) keep = Math.min(keep, p.topK);
  if (p.minP > 0) {
    const floor = p.minP * pr[order[0]];
    let n = 1;
    while (n < keep && pr[order[n]] >= floor) ++n;
    for (let j = 1; j < keep; ++j) margin = Math.min(margin, Math.abs(pr[order[j]] - floor));
    keep = n;
  }
  if (p.topP > 0 && p.topP < 1) {
    let cum = 0;
    let n = 0;
    while (n < keep) {
      cum += pr[order[n++]];
      margin = Math.min(margin, Math.abs(cum - p.topP));
      if (cum >= p.topP) break;
    }
    keep = Math.max(n, 1);
  }
  const ids = order.slice(0, keep);
  let mass = 0;
  for (const id of ids) mass += pr[id];
  return { ids, probs: ids.map((id) => pr[id] / mass), cutMargin: margin };
}

export interface SamplePick {
  id: number;
  /** Distance of u from the nearest boundary of the inverse CDF over the candidates (probability units). */
  uMargin: number;
  cutMargin: number;
}

/**
 * The repetition penalty on one row of float32 logits (HF's, in float32 arithmetic like the op): the logit of
 * every listed id in [0, V) is divided by the penalty when positive, multiplied by it otherwise; repeats count
 * once (each is recomputed from the original logit).
 */
export function penalizeRef(logits: ArrayLike<number>, ids: ArrayLike<number>, penalty: number): Float64Array {
  const out = Float64Array.from(logits);
  const p = Math.fround(penalty);
  for (let i = 0; i < ids.length; ++i) {
    const id = ids[i];
    if (id >= 0 && id < out.length) {
      const v = logits[id];
      out[id] = Math.fround(v > 0 ? v / p : v * p);
    }
  }
  return out;
}

/**
 * Whether `id` is an acceptable pick when the implementation may misjudge any cumulative boundary (the top-p cut,
 * the min-p floor, the inverse CDF) by up to `delta` in probability: `id` must be kept under the loosest cuts, and
 * its interval of the inverse CDF must come within delta of u times a kept mass between the tightest and the
 * loosest cuts'. Returns null when it is, else what is wrong.
 */
export function samplePickWithin(logits: ArrayLike<number>, p: SampleParams, id: number, delta: number): string | null {
  if (!(p.temperature > 0)) {
    const want = argmaxRef(logits, 1, logits.length)[0];
    return id === want ? null : `greedy pick ${id}, want ${want}`;
  }
  const v = logits.length;
  let mx = -Infinity;
  for (let j = 0; j < v; ++j) mx = Math.max(mx, logits[j] / p.temperature);
  const pr = new Float64Array(v);
  let sum = 0;
  for (let j = 0; j < v; ++j) sum += pr[j] = Math.exp(logits[j] / p.temperature - mx);
  for (let j = 0; j < v; ++j) pr[j] /= sum;
  const order = Array.from({ length: v }, (_, j) => j).sort((a, b) => pr[b] - pr[a] || a - b);
  const cum = new Float64Array(v);
  for (let j = 0, c = 0; j < v; ++j) cum[j] = c += pr[order[j]];
  const keepWith = (slack: number): number => {
    let keep = p.topK > 0 ? Math.min(v, p.topK) : v;
    if (p.minP > 0) {
      const floor = p.minP * pr[order[0]] - slack;
      let n = 1;
      while (n < keep && pr[order[n]] >= floor) ++n;
      keep = n;
    }
    if (p.topP > 0 && p.topP < 1) {
      let n = 0;
      while (n < keep && !(cum[n] >= p.topP + slack)) ++n;
      keep = Math.max(Math.min(n + 1, keep), 1);
    }
    return keep;
  };
  const lo = keepWith(-delta), hi = keepWith(delta);
  const r = order.indexOf(id);
  if (r < 0) return `pick ${id} is not a token id`;
  if (r >= hi) return `pick ${id} has rank ${r}, beyond the ${hi} tokens kept even with the cuts loosened by ${delta}`;
  const before = r > 0 ? cum[r - 1] : 0, after = cum[r];
  const tLo = p.u * cum[lo - 1] - delta, tHi = p.u * cum[hi - 1] + delta;
  if (after < tLo || before > tHi)
    return `pick ${id} (rank ${r}) covers [${before}, ${after}) of the CDF, u * kept mass is in [${tLo + delta}, ${tHi - delta}]`;
  return null;
}

/** The token picked by u in [0, 1) by inverse CDF over the candidates; temperature <= 0 means argmax. */
export function sampleRef(logits: ArrayLike<number>, p: SampleParams): SamplePick {
  if (!(p.temperature > 0)) return { id: argmaxRef(logits, 1, logits.length)[0], uMargin: Infinity, cutMargin: Infinity };
  const c = sampleCandidates(logits, p);
  let cum = 0;
  let id = c.ids[c.ids.length - 1];
  let uMargin = Infinity;
  let picked = false;
  for (let j = 0; j < c.ids.length; ++j) {
    cum += c.probs[j];
    if (j < c.ids.length - 1) uMargin = Math.min(uMargin, Math.abs(p.u - cum));
    if (!picked && p.u < cum) {
      id = c.ids[j];
      picked = true;
    }
  }
  return { id, uMargin, cutMargin: c.cutMargin };
}

// ------------------------------------------------------------------ INT4 (canonical layout)

/** codes [N, K] (0..15) -> bytes [N, K/2], byte (n, k/2) = code(n, k) | code(n, k+1) << 4 for even k. */
export function packInt4(codes: ArrayLike<number>, n: number, k: number): Uint8Array {
  if (k % 2 !== 0) throw new Error("packInt4: K must be even");
  const out = new Uint8Array((n * k) / 2);
  for (let r = 0; r < n; ++r)
    for (let j = 0; j < k; j += 2) out[(r * k + j) / 2] = (codes[r * k + j] & 15) | ((codes[r * k + j + 1] & 15) << 4);
  return out;
}

/** bytes [N, K/2] -> codes [N, K]. */
export function unpackInt4(bytes: ArrayLike<number>, n: number, k: number): Uint8Array {
  const out = new Uint8Array(n * k);
  for (let i = 0; i < (n * k) / 2; ++i) {
    out[2 * i] = bytes[i] & 15;
    out[2 * i + 1] = bytes[i] >> 4;
  }
  return out;
}

/** Round half to even (for doubles holding float32 values). */
function rintHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

export interface Int4Ref {
  packed: Uint8Array; // [N, K/2]
  scales: Uint16Array; // bf16 bits [N, K/G]
  zeros: Uint16Array; // bf16 bits [N, K/G]
}

/**
 * Canonical INT4 quantization, every step in float32 (Math.fround after each operation; for +, -, *, / of float32
 * operands double arithmetic followed by one rounding to float32 is the correctly rounded float32 result), by
 * scheme (csrc/core/int4_layout.h), of v = fround(w * colScale[k]) (colScale optional):
 *   0 asymmetric: lo = min(min(v), 0), hi = max(max(v), 0); s = (hi - lo) / 15, 1 when 0; scale = bf16(s);
 *     zero = bf16(-lo / scale); code = clamp(rint_half_even(v / scale + zero), 0, 15).
 *   1 symmetric: a = max |v|; scale = bf16(a / 7, 1 when 0); zero = 8; code = clamp(rint_half_even(v / scale + 8), 0, 15).
 *   2 NF4: a = max |v|; scale = bf16(a, 1 when 0); zero = 0; code = #{i < 15 : v / scale > mid_i},
 *     mid_i = fround(fround(NF4[i] + NF4[i+1]) * 0.5) (written here from the definition, not from the C++).
 * w holds float32 values [N, K]. Throws on NaN/Inf.
 */
export function quantizeInt4Ref(w: ArrayLike<number>, n: number, k: number, g: number, scheme: 0 | 1 | 2 = 0, colScale?: ArrayLike<number>): Int4Ref {
  if (k % g !== 0) throw new Error(`quantizeInt4Ref: K=${k} not a multiple of ${g}`);
  const ng = k / g;
  const codes = new Uint8Array(n * k);
  const scales = new Uint16Array(n * ng);
  const zeros = new Uint16Array(n * ng);
  const f = Math.fround;
  const mids = Array.from({ length: 15 }, (_, i) => f(f(NF4[i] + NF4[i + 1]) * 0.5));
  const val = (idx: number) => (colScale ? f(w[idx] * colScale[idx % k]) : w[idx]);
  for (let r = 0; r < n; ++r) {
    for (let gi = 0; gi < ng; ++gi) {
      let lo = 0;
      let hi = 0;
      let amax = 0;
      for (let i = 0; i < g; ++i) {
        const x = val(r * k + gi * g + i);
        if (!Number.isFinite(x)) throw new Error(`quantizeInt4Ref: non-finite weight at row ${r}`);
        lo = Math.min(lo, x);
        hi = Math.max(hi, x);
        amax = Math.max(amax, Math.abs(x));
      }
      let sf: number, zf: number;
      if (scheme === 0) {
        let s = f(f(hi - lo) / 15);
        if (s === 0) s = 1;
        const sb = f32ToBf16Bits(s);
        sf = bf16BitsToF32(sb);
        const zb = f32ToBf16Bits(f(-lo / sf));
        zf = bf16BitsToF32(zb);
        scales[r * ng + gi] = sb;
        zeros[r * ng + gi] = zb;
      } else {
        let s = scheme === 1 ? f(amax / 7) : amax;
        if (s === 0) s = 1;
        const sb = f32ToBf16Bits(s);
        sf = bf16BitsToF32(sb);
        zf = scheme === 1 ? 8 : 0;
        scales[r * ng + gi] = sb;
        zeros[r * ng + gi] = f32ToBf16Bits(zf);
      }
      for (let i = 0; i < g; ++i) {
        const idx = r * k + gi * g + i;
        if (scheme === 2) {
          const x = f(val(idx) / sf);
          codes[idx] = mids.filter((m) => x > m).length;
        } else {
          const t = f(f(val(idx) / sf) + zf);
          codes[idx] = Math.min(15, Math.max(0, rintHalfEven(t)));
        }
      }
    }
  }
  return { packed: packInt4(codes, n, k), scales, zeros };
}

/**
 * bitsandbytes' NF4 values (QLoRA's NormalFloat4), as float32: what code q stands for in codebook 1. Kept here apart
 * from the native table (csrc/core/int4_layout.h); the dequantize_int4 cases compare the two bit for bit.
 */
export const NF4: readonly number[] = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
].map(Math.fround);

/**
 * Dequantization W(n, k) = (code - zero) * scale (codebook 1: (NF4[code] - zero) * scale), evaluated as float32 (code - zero) then float32 product, the
 * order the layout states. When zero is 0 or a bf16 in [2^-3, 16) both steps are exact (code - zero then has at
 * most 14 significant bits, times the 8 of a bf16 scale makes at most 22 < 24), so this is the exact product and
 * any correct evaluation order gives the same float32.
 */
export function dequantizeInt4Ref(
  packed: ArrayLike<number>,
  scales: ArrayLike<number>,
  zeros: ArrayLike<number>,
  n: number,
  k: number,
  g: number,
  codebook: 0 | 1 = 0,
): Float64Array {
  const codes = unpackInt4(packed, n, k);
  const value = (q: number) => (codebook === 1 ? NF4[q] : q);
  const ng = k / g;
  const out = new Float64Array(n * k);
  for (let r = 0; r < n; ++r) {
    for (let j = 0; j < k; ++j) {
      const gi = Math.floor(j / g);
      const s = bf16BitsToF32(scales[r * ng + gi]);
      const z = bf16BitsToF32(zeros[r * ng + gi]);
      out[r * k + j] = Math.fround(Math.fround(value(codes[r * k + j]) - z) * s);
    }
  }
  return out;
}

// ------------------------------------------------------------------ INT4 layout 1 (the CUDA kernel layout)

/**
 * Canonical -> layout 1, written from the spec's fragment definition (csrc/core/int4_layout.h, PLAN.md), not from
 * the C++ index function: for each 16 x 64 tile (nt, kt), lane l = 4g + t, word j (k0 = 64kt + 16j), the entries
 *   a0 = W[g][k0+2t], a1 = W[g][k0+2t+1], a2 = W[g+8][k0+2t], a3 = W[g+8][k0+2t+1],
 *   a4 = W[g][k0+2t+8], a5 = W[g][k0+2t+9], a6 = W[g+8][k0+2t+8], a7 = W[g+8][k0+2t+9]   (rows of the tile)
 * go to nibbles 0..7 in the order a0, a2, a4, a6, a1, a3, a5, a7; the word is stored little-endian at byte
 * 512 (nt K/64 + kt) + 16 l + 4 j. Scales and zeros: (n, gi) -> ((n/16) (K/G) + gi) 16 + n % 16.
 */
export function repackInt4Ref(packed: ArrayLike<number>, groupVals: ArrayLike<number>[], n: number, k: number, g: number): { codes: Uint8Array; groups: Uint16Array[] } {
  if (n % 16 !== 0 || k % 64 !== 0) throw new Error(`repackInt4Ref: [${n},${k}] is not a multiple of 16 x 64`);
  const c = unpackInt4(packed, n, k);
  const W = (r: number, col: number) => c[r * k + col];
  const codes = new Uint8Array((n * k) / 2);
  const kt64 = k / 64;
  for (let nt = 0; nt < n / 16; ++nt)
    for (let kt = 0; kt < kt64; ++kt)
      for (let l = 0; l < 32; ++l) {
        const gg = nt * 16 + (l >> 2);
        const t = l & 3;
        for (let j = 0; j < 4; ++j) {
          const k0 = kt * 64 + 16 * j;
          const a = [W(gg, k0 + 2 * t), W(gg, k0 + 2 * t + 1), W(gg + 8, k0 + 2 * t), W(gg + 8, k0 + 2 * t + 1),
            W(gg, k0 + 2 * t + 8), W(gg, k0 + 2 * t + 9), W(gg + 8, k0 + 2 * t + 8), W(gg + 8, k0 + 2 * t + 9)];
          const order = [a[0], a[2], a[4], a[6], a[1], a[3], a[5], a[7]];
          let word = 0;
          for (let p = 0; p < 8; ++p) word += order[p] * 2 ** (4 * p);
          const at = 512 * (nt * kt64 + kt) + 16 * l + 4 * j;
          for (let b = 0; b < 4; ++b) codes[at + b] = Math.floor(word / 2 ** (8 * b)) & 0xff;
        }
      }
  const ng = k / g;
  const groups = groupVals.map((v) => {
    const o = new Uint16Array(n * ng);
    for (let r = 0; r < n; ++r) for (let gi = 0; gi < ng; ++gi) o[(Math.floor(r / 16) * ng + gi) * 16 + (r % 16)] = v[r * ng + gi];
    return o;
  });
  return { codes, groups };
}

/**
 * The fused INT4 linear (csrc/ops.h linear_int4) in float64: xn = rmsnorm(x) * normW when normW is given;
 * y = xn W^T + bias; mode 0: y, 1: base + y, 2: silu(y[:, :N/2]) * y[:, N/2:].
 */
export function linearInt4Ref(
  x: ArrayLike<number>,
  m: number,
  k: number,
  w: ArrayLike<number>,
  n: number,
  opts: { bias?: ArrayLike<number> | null; normW?: ArrayLike<number> | null; eps?: number; mode: 0 | 1 | 2; base?: ArrayLike<number> },
): Float64Array {
  const xn = opts.normW ? rmsnormRef(x, m, k, opts.normW, opts.eps!) : x;
  const y = matmulRef(xn, m, k, w, n, opts.bias ?? null);
  if (opts.mode === 0) return y;
  if (opts.mode === 1) return addRef(opts.base!, y);
  return swigluRef(y, m, n / 2);
}
