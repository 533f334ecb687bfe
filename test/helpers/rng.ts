/**
 * Seeded random numbers and exact float-format conversions for the op tests.
 *
 * The conversions are written from the IEEE definitions (value = significand * 2^exponent, round to the nearest
 * representable value, ties to the even significand), not from the bit tricks in csrc/core/dtype.h, so that the
 * native conversions are tested against something independent.
 */

/** 32-bit FNV-1a of a string: the fixed seed of a test case, derived from its readable name. */
export function seedOf(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; ++i) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** xoshiro128** seeded through splitmix32; deterministic across platforms (32-bit integer arithmetic only). */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spare: number | null = null;

  constructor(seed: number | string) {
    let x = (typeof seed === "string" ? seedOf(seed) : seed) >>> 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Uniform 32-bit unsigned integer. */
  u32(): number {
    const r = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return r;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  uniform(): number {
    const hi = this.u32() >>> 5; // 27 bits
    const lo = this.u32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  /** Standard normal (Box-Muller, both values used). */
  normal(): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return s;
    }
    let u1 = 0;
    while (u1 === 0) u1 = this.uniform();
    const u2 = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u1));
    this.spare = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  }

  /** n values of normal(mean, std). */
  normals(n: number, std = 1, mean = 0): Float64Array {
    const out = new Float64Array(n);
    for (let i = 0; i < n; ++i) out[i] = mean + std * this.normal();
    return out;
  }

  /** n values uniform in [lo, hi). */
  uniforms(n: number, lo = 0, hi = 1): Float64Array {
    const out = new Float64Array(n);
    for (let i = 0; i < n; ++i) out[i] = lo + (hi - lo) * this.uniform();
    return out;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

// ------------------------------------------------------------------ float formats

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** The bits of the float32 nearest to x (x is first rounded to float32). */
export function f32Bits(x: number): number {
  f32buf[0] = x;
  return u32buf[0];
}
/** The float32 value with these bits. */
export function f32FromBits(u: number): number {
  u32buf[0] = u >>> 0;
  return f32buf[0];
}

/** floor(log2(a)) for a finite a > 0, exact. */
function exponentOf(a: number): number {
  let e = Math.floor(Math.log2(a));
  while (2 ** e > a) e -= 1;
  while (2 ** (e + 1) <= a) e += 1;
  return e;
}

/**
 * x rounded to a binary format with `p` significand bits (implicit bit included), minimum normal exponent `emin`
 * and maximum exponent `emax`: nearest representable value, ties to even, overflow to Infinity, gradual underflow.
 * Returns the rounded value as a number (NaN for NaN). x must itself be exactly representable in float64.
 */
export function roundToFormat(x: number, p: number, emin: number, emax: number): number {
  if (Number.isNaN(x) || !Number.isFinite(x) || x === 0) return x;
  const sign = x < 0 ? -1 : 1;
  const a = Math.abs(x);
  const e = Math.max(exponentOf(a), emin);
  const quantum = 2 ** (e - (p - 1)); // spacing of representable values around a
  const m = a / quantum; // exact: division by a power of two
  let r = Math.floor(m);
  const frac = m - r;
  if (frac > 0.5 || (frac === 0.5 && r % 2 === 1)) r += 1;
  const v = r * quantum;
  const maxFinite = (2 - 2 ** (1 - p)) * 2 ** emax;
  return v > maxFinite ? sign * Infinity : sign * v;
}

/** Round to the nearest bfloat16 value (8 significand bits, float32's exponent range). */
export function roundBf16(x: number): number {
  return roundToFormat(Math.fround(x), 8, -126, 127);
}
/** Round to the nearest IEEE binary16 value (11 significand bits, exponents -14..15). */
export function roundF16(x: number): number {
  return roundToFormat(Math.fround(x), 11, -14, 15);
}

/** bf16 bits of the nearest bf16 to float32(x); NaN -> 0x7fc0 (callers compare NaN by class). */
export function f32ToBf16Bits(x: number): number {
  if (Number.isNaN(x)) return 0x7fc0;
  const v = roundBf16(x);
  // v is a bf16 value, so it is exactly a float32 whose low 16 bits are zero; -0 keeps its sign.
  return f32Bits(v) >>> 16;
}
/** The value of bf16 bits h (exact). */
export function bf16BitsToF32(h: number): number {
  return f32FromBits((h & 0xffff) << 16);
}

/** IEEE half bits of the nearest half to float32(x); NaN -> 0x7e00 (callers compare NaN by class). */
export function f32ToF16Bits(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const v = roundF16(x);
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a === Infinity) return sign | 0x7c00;
  if (a === 0) return sign;
  const e = exponentOf(a);
  if (e < -14) return sign | (a / 2 ** -24); // subnormal: a = m * 2^-24, m < 1024
  return sign | ((e + 15) << 10) | (a / 2 ** (e - 10) - 1024);
}
/** The value of IEEE half bits h (exact). */
export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1024 + m) * 2 ** (e - 25);
}

export type FloatDType = "f32" | "bf16" | "f16";

/** True when bits (of the given dtype) encode a NaN. */
export function isNaNBits(dtype: FloatDType, bits: number): boolean {
  if (dtype === "f32") return ((bits >>> 23) & 0xff) === 0xff && (bits & 0x7fffff) !== 0;
  if (dtype === "bf16") return ((bits >>> 7) & 0xff) === 0xff && (bits & 0x7f) !== 0;
  return ((bits >>> 10) & 0x1f) === 0x1f && (bits & 0x3ff) !== 0;
}

/** Encode numbers into the storage of a dtype (f32: Float32Array; bf16/f16: Uint16Array bits). */
export function encodeFloats(dtype: FloatDType, values: ArrayLike<number>): Float32Array | Uint16Array {
  if (dtype === "f32") return Float32Array.from(values as ArrayLike<number>);
  const out = new Uint16Array(values.length);
  const enc = dtype === "bf16" ? f32ToBf16Bits : f32ToF16Bits;
  for (let i = 0; i < values.length; ++i) out[i] = enc(values[i]);
  return out;
}

/** Decode the storage of a float dtype into float64 values (exact). */
export function decodeFloats(dtype: FloatDType, data: ArrayLike<number>): Float64Array {
  const out = new Float64Array(data.length);
  if (dtype === "f32") {
    for (let i = 0; i < data.length; ++i) out[i] = data[i];
  } else {
    const dec = dtype === "bf16" ? bf16BitsToF32 : f16BitsToF32;
    for (let i = 0; i < data.length; ++i) out[i] = dec(data[i]);
  }
  return out;
}
