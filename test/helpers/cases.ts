/**
 * The op case table and a runner that works on any device (test/ops.test.ts runs it on "cpu",
 * test/gpu/ops.test.ts on "cuda" and compares with the CPU backend as well).
 *
 * Every case has a readable name, draws its inputs from an Rng seeded by that name (so each device sees the same
 * inputs), never uses zeros as inputs, fills its outputs with NaN (or another poison) through write() before the
 * op so that unwritten elements show, reads the results back and returns them beside a float64 reference
 * (test/helpers/reference.ts) or exact expected values.
 *
 * Error measure: ||out - ref||^2 / ||ref||^2 against a per-op threshold (TOL below, each with its reason). A NaN or
 * Inf in an output fails at once, whatever the threshold.
 */
import { readFileSync } from "node:fs";
import path from "node:path";

import type { DType, LinearMode, NativeContext, NativeTensor, QWeight } from "../../lib/engine/native.js";
import { packageRoot } from "../../lib/util.js";
import { repackLayout1 } from "./layout1.js";
import * as R from "./reference.js";
import {
  type FloatDType,
  Rng,
  decodeFloats,
  encodeFloats,
  f32Bits,
  f32FromBits,
  f32ToBf16Bits,
  isNaNBits,
  seedOf,
} from "./rng.js";

export type Backend = "cpu" | "gpu";
/** Thresholds on the normalized squared error, for the CPU backend and for the CUDA backend. */
export interface Tol {
  cpu: number;
  gpu: number;
}

export interface Output {
  name: string;
  /**
   * norm: normalized squared error of got vs the float64 ref within tol.
   * exact: got[i] === ref[i] for every i (bits or integers); with nanClass, any NaN bit pattern of that dtype
   *        matches any other.
   * stat: verify(got) returns null when the statistics hold, else what is wrong.
   */
  mode: "norm" | "exact" | "stat";
  got: ArrayLike<number>;
  ref?: ArrayLike<number>;
  tol?: Tol;
  nanClass?: FloatDType;
  verify?: (got: ArrayLike<number>) => string | null;
  /**
   * How two backends' outputs compare (GPU vs CPU): "exact", "skip", or a Tol on the normalized squared error of
   * one against the other. Default: exact outputs compare exactly, norm outputs with their tol, stat outputs skip.
   */
  cross?: "exact" | "skip" | Tol;
}

export interface OpCase {
  /** e.g. `matmul_int4(M=3,N=96,K=256,G=64)` */
  name: string;
  /** The op family (for grouping): the op's C++ name, as the addon's opList() gives it. */
  op: string;
  /**
   * Set while the CUDA backend does not implement what this case exercises yet (why, and who adds it): the GPU
   * run lists the case as skipped with this text instead of failing. Remove it with the kernel that serves it.
   */
  gpuPending?: string;
  build(env: CaseEnv): Output[];
}

export interface CaseResult {
  name: string;
  device: string;
  outputs: Output[];
}

// ------------------------------------------------------------------ thresholds

const EPS32 = 2 ** -24; // unit roundoff of float32

/**
 * Per-op thresholds on ||out - ref||^2 / ||ref||^2. The cpu values assume what the reference backend does (float32
 * storage, float64 or short float32 accumulations); the gpu values allow what a fast kernel may reasonably do
 * (bf16/f16 tensor-core inputs, fast exp/rsqrt intrinsics, float32 tree reductions) and are still far below what a
 * structural bug produces: a missing tail, a wrong group or head, or an off-by-one row shifts the result by
 * O(1/K) to O(1) relative, i.e. >= 1e-4 squared for the shapes here.
 */
export const TOL = {
  /**
   * add, add_bias, swiglu: one to a few float32 roundings per element (relative <= ~4 * 2^-24, squared <~ 1e-14);
   * 1e-12 leaves 100x. GPU: __expf in silu is within a few ulp for these arguments: 1e-10.
   */
  elementwise: { cpu: 1e-12, gpu: 1e-10 },
  /** rmsnorm: float64 sum of squares, then three float32 roundings per element; GPU: float32 reduction + rsqrtf (2 ulp). */
  rmsnorm: { cpu: 1e-12, gpu: 1e-10 },
  /**
   * matmul / matmul_int4: the CPU accumulates in float64 and rounds once (plus the bias add): relative ~2^-23,
   * squared ~1e-14. GPU: activations may be rounded to bf16 for tensor cores (f16 is 4x better). With random
   * signs the normalized squared output error is the mean squared relative rounding error of the inputs: ~3e-6
   * for normal samples rounded to bf16 (measured with test/helpers/reference.ts on these shapes: 2.7e-6 to
   * 3.0e-6 on average, up to 8e-6 on the smallest, M=1 N=5 K=7), twice that when the f32 or dequantized weights
   * are rounded as well. 5e-5 leaves >= 3x over the worst seen; a dropped K tail or a wrong scale group costs
   * ~1/K >= 1e-3.
   */
  matmul: { cpu: 1e-12, gpu: 5e-5 },
  /**
   * linear_int4 with the SwiGLU epilogue: silu(g) * u multiplies two matmul outputs, and outputs near zero make the
   * relative error heavy-tailed. The bf16 rounding of the activations alone (emulated in float64 over 4000 random
   * draws of the K=256, N=224 case: bench/tolerance/swiglu_bf16.py) gives mean 8.1e-6, p99 3.1e-5, max 1.24e-4,
   * and 0.18 % of draws above TOL.matmul's 5e-5 (the H200 run of 2026-12-03 met one: 5.2e-5). 2e-4 covers that
   * tail with 1.6x; a dropped K tail, a wrong group or a gate/up mix-up costs >= 1e-3.
   */
  matmulSwiglu: { cpu: 1e-12, gpu: 2e-4 },
  /**
   * attention: the CPU sums p * v in float32 over up to len ~ 4096 rows: a random-walk rounding error of
   * ~2^-24 * sqrt(len / 2) relative to the output, squared ~1e-11 at most here, plus float32 scores and exp
   * (~1e-13): 1e-10. GPU: q rounded to bf16 for q.k and P rounded to bf16 for P.V (a flash-attention kernel's
   * usual choices) give 4e-6 to 6e-6 on the decode shapes here (emulated in float64 with the bf16 rounding of
   * test/helpers/rng.ts); 5e-5 leaves ~10x. Deep decode cases give the first and the current row a large score
   * (weight ~3% each), so dropping either costs >= 1e-1 (measured), reading past pos meets NaN.
   */
  attention: { cpu: 1e-10, gpu: 5e-5 },
} as const;

/**
 * rotary: the angle a = pos * theta^(-2i/rot) is formed in float32 (inv_freq rounded, then the product rounded:
 * HF does the same), an error of up to a * 2^-23 radians, which turns pair i of token t by that much. The
 * normalized squared error is then the energy-weighted mean of delta^2 over all elements:
 * sum_t sum_i 2 * delta(t,i)^2 / (T * D) for unit-variance x. Threshold: that sum with delta = a * 2^-22 (2x the
 * worst angle error), 4x for the spread of pair energies, + 1e-12 for cos/sin and the products. At deep positions
 * (131071) this allows ~4e-5; the error measured on the CPU is ~6e-8. GPU: sincosf / __sincosf and a device-side
 * pow may double the angle error again: 4x more, + 1e-10.
 */
export function rotaryTol(pos: number[], d: number, rotDim: number, theta: number): Tol {
  let s = 0;
  for (const p of pos)
    for (let i = 0; i < rotDim / 2; ++i) s += 2 * (p * Math.pow(theta, (-2 * i) / rotDim) * 2 ** -22) ** 2;
  const a = (4 * s) / (pos.length * d);
  return { cpu: 1e-12 + a, gpu: 1e-10 + 4 * a };
}

/**
 * A bf16 activation output (rmsnorm, add_rmsnorm, swiglu, attention write bf16 for the tensor-core GEMM) against the
 * float64 reference: the op's own threshold plus one bf16 rounding of every element. bf16 keeps 8 significant bits,
 * so round-to-nearest moves a value by at most 2^-8 of itself: at most 2^-16 (1.5e-5) squared, ~2.5e-6 on average.
 * A wrong element still costs far more (an unwritten one is NaN; a wrong row O(1)).
 */
export function bf16OutTol(t: Tol): Tol {
  return { cpu: t.cpu + 2 ** -16, gpu: t.gpu + 2 ** -16 };
}

/**
 * The outputs of an op run into a bf16 out (outB) beside the same op into an f32 out (out32) on the same inputs and
 * device: vs the float64 reference at bf16OutTol(tol), and bit for bit the f32 result rounded to nearest even (what
 * convert gives: the promise that a bf16 out changes nothing for the GEMM that reads it).
 */
function bf16OutOutputs(outB: NativeTensor, out32: NativeTensor, ref: ArrayLike<number>, tol: Tol): Output[] {
  const f = readF64(out32);
  const want = new Uint16Array(f.length);
  for (let i = 0; i < f.length; ++i) want[i] = f32ToBf16Bits(f[i]);
  return [
    { name: "out bf16", mode: "norm", got: readF64(outB), ref, tol: bf16OutTol(tol) },
    { name: "out bf16 == f32 out rounded (same device)", mode: "exact", got: readBits(outB), ref: want, nanClass: "bf16", cross: "skip" },
  ];
}

/**
 * softmax: x / temperature is rounded to float32 (absolute error |x/T| * 2^-24), which scales each probability by
 * exp(that): relative error ~ max|x/T| * 2^-24; plus a few roundings in exp and the division. Threshold: twice the
 * first, squared, + 1e-12 (measured: <= 4e-14). GPU: __expf adds a few ulp and may double the rest: 4x, + 1e-9.
 */
export function softmaxTol(maxAbsOverT: number): Tol {
  const a = (maxAbsOverT * 2 * EPS32) ** 2;
  return { cpu: 1e-12 + a, gpu: 1e-9 + 4 * a };
}

// ------------------------------------------------------------------ environment

export interface Stored {
  t: NativeTensor;
  /** The exact values the tensor holds (bf16/f16 decoded). */
  v: Float64Array;
}

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Tensors of one case on one context: created from seeded inputs, poisoned outputs, all disposed at the end. */
export class CaseEnv {
  private readonly owned: NativeTensor[] = [];
  constructor(
    readonly ctx: NativeContext,
    readonly rng: Rng,
  ) {}

  track(t: NativeTensor): NativeTensor {
    this.owned.push(t);
    return t;
  }

  /** A float tensor holding `values` rounded to dtype, with the exact values it holds. */
  floats(dtype: FloatDType, shape: number[], values: ArrayLike<number>): Stored {
    if (values.length !== numel(shape)) throw new Error(`floats: ${values.length} values for [${shape}]`);
    const data = encodeFloats(dtype, values);
    const t = this.track(this.ctx.fromBuffer(dtype, shape, data));
    return { t, v: decodeFloats(dtype, data) };
  }

  /** normal(mean, std) values in a float tensor (never all zeros). */
  randn(dtype: FloatDType, shape: number[], std = 1, mean = 0): Stored {
    return this.floats(dtype, shape, this.rng.normals(numel(shape), std, mean));
  }

  ints(shape: number[], values: ArrayLike<number>): NativeTensor {
    return this.track(this.ctx.fromBuffer("i32", shape, Int32Array.from(values as ArrayLike<number>)));
  }

  bytes(dtype: "u8" | "i4", shape: number[], data: Uint8Array): NativeTensor {
    return this.track(this.ctx.fromBuffer(dtype, shape, data));
  }

  /** An output tensor, poisoned through write(): NaN for floats, -1 for i32, 0xA5 bytes for u8/i4. */
  out(dtype: DType, shape: number[]): NativeTensor {
    const t = this.track(this.ctx.empty(dtype, shape));
    poison(t);
    return t;
  }

  /** A QWeight [n, k] at group g with poisoned codes, scales and zeros. */
  qweight(n: number, k: number, g: 32 | 64 | 128): QWeight {
    return { codes: this.out("i4", [n, k]), scales: this.out("bf16", [n, k / g]), zeros: this.out("bf16", [n, k / g]), groupSize: g };
  }

  dispose(): void {
    for (const t of this.owned) t.dispose();
    this.owned.length = 0;
  }
}

/** Fill a tensor with a poison through write(). */
export function poison(t: NativeTensor): void {
  const n = numel(t.shape);
  switch (t.dtype) {
    case "f32":
      t.write(new Float32Array(n).fill(NaN));
      break;
    case "bf16":
      t.write(new Uint16Array(n).fill(0x7fc0));
      break;
    case "f16":
      t.write(new Uint16Array(n).fill(0x7e00));
      break;
    case "i32":
      t.write(new Int32Array(n).fill(-1));
      break;
    default:
      t.write(new Uint8Array(t.nbytes).fill(0xa5));
  }
}

/** Values of a float tensor as float64 (exact). */
export function readF64(t: NativeTensor): Float64Array {
  const d = t.read();
  if (t.dtype === "f32" || t.dtype === "bf16" || t.dtype === "f16") return decodeFloats(t.dtype, d);
  return Float64Array.from(d);
}

/** Raw bits of a tensor: f32 -> Uint32Array, bf16/f16 -> Uint16Array, i32 -> Int32Array, u8/i4 -> Uint8Array. */
export function readBits(t: NativeTensor): Uint32Array | Uint16Array | Int32Array | Uint8Array {
  const d = t.read();
  if (d instanceof Float32Array) return new Uint32Array(d.buffer, d.byteOffset, d.length);
  return d;
}

/** Expected bits of values stored as dtype (float32 bits for f32). */
function bitsOf(dtype: FloatDType, values: ArrayLike<number>): Uint32Array | Uint16Array {
  if (dtype === "f32") {
    const f = Float32Array.from(values as ArrayLike<number>);
    return new Uint32Array(f.buffer);
  }
  return encodeFloats(dtype, values) as Uint16Array;
}

// ------------------------------------------------------------------ runner

/** Runs one case on a context; tensors of the case are disposed afterwards. */
export function runCase(c: OpCase, ctx: NativeContext): CaseResult {
  const env = new CaseEnv(ctx, new Rng(seedOf(c.name)));
  try {
    return { name: c.name, device: ctx.device, outputs: c.build(env) };
  } finally {
    env.dispose();
  }
}

function fmt(x: number): string {
  return Number.isFinite(x) ? x.toExponential(3) : String(x);
}

function exactFailures(name: string, got: ArrayLike<number>, want: ArrayLike<number>, nanClass?: FloatDType): string[] {
  if (got.length !== want.length) return [`${name}: ${got.length} values, expected ${want.length}`];
  let bad = 0;
  let first = -1;
  for (let i = 0; i < want.length; ++i) {
    const g = got[i];
    const w = want[i];
    const same = g === w || (Number.isNaN(g) && Number.isNaN(w)) || (nanClass !== undefined && isNaNBits(nanClass, g) && isNaNBits(nanClass, w));
    if (!same) {
      if (first < 0) first = i;
      ++bad;
    }
  }
  if (!bad) return [];
  const hex = nanClass !== undefined;
  const show = (x: number) => (hex ? `0x${(x >>> 0).toString(16)}` : String(x));
  return [`${name}: ${bad} of ${want.length} differ; first at ${first}: got ${show(got[first])}, expected ${show(want[first])}`];
}

function normFailures(name: string, got: ArrayLike<number>, ref: ArrayLike<number>, tol: number, what: string): string[] {
  for (let i = 0; i < ref.length; ++i)
    if (!Number.isFinite(ref[i])) return [`${name}: the ${what} is not finite at ${i} (${ref[i]}): damaged inputs or codes`];
  const e = R.normError(got, ref);
  if (e.badIndex >= 0) return [`${name}: non-finite output ${got[e.badIndex]} at index ${e.badIndex} (${what} ${ref[e.badIndex]})`];
  if (!(e.err <= tol)) return [`${name}: normalized squared error vs ${what} ${fmt(e.err)} > ${fmt(tol)}`];
  return [];
}

/** Failures of a result against its float64 reference / exact expectations, for a backend's thresholds. */
export function referenceFailures(r: CaseResult, backend: Backend): string[] {
  const out: string[] = [];
  for (const o of r.outputs) {
    if (o.mode === "norm") out.push(...normFailures(o.name, o.got, o.ref!, o.tol![backend], "float64 reference"));
    else if (o.mode === "exact") out.push(...exactFailures(o.name, o.got, o.ref!, o.nanClass));
    else {
      const msg = o.verify!(o.got);
      if (msg) out.push(`${o.name}: ${msg}`);
    }
  }
  return out;
}

/** Failures of one backend's result against another's (e.g. CUDA against the CPU backend) on the same case. */
export function crossFailures(r: CaseResult, base: CaseResult, backend: Backend = "gpu"): string[] {
  const out: string[] = [];
  if (r.outputs.length !== base.outputs.length) return [`${r.name}: ${r.outputs.length} outputs vs ${base.outputs.length}`];
  r.outputs.forEach((o, i) => {
    const b = base.outputs[i];
    const cross = o.cross ?? (o.mode === "exact" ? "exact" : o.mode === "norm" ? o.tol! : "skip");
    if (cross === "skip") return;
    if (cross === "exact") out.push(...exactFailures(`${o.name} (${r.device} vs ${base.device})`, o.got, b.got, o.nanClass));
    else out.push(...normFailures(`${o.name} (${r.device} vs ${base.device})`, o.got, b.got, cross[backend], `${base.device} result`));
  });
  return out;
}

// ------------------------------------------------------------------ cases: embedding, rmsnorm

function embeddingCase(t: number, v: number, h: number, table: "bf16" | "f32"): OpCase {
  return {
    name: `embedding(T=${t},V=${v},H=${h},table=${table})`,
    op: "embedding",
    build(env) {
      const tab = env.randn(table, [v, h]);
      const ids = Array.from({ length: t }, (_, i) => (i === 0 ? v - 1 : i === 1 ? 0 : env.rng.int(v)));
      if (t > 3) ids[3] = ids[2]; // a repeated id
      const out = env.out("f32", [t, h]);
      env.ctx.embedding(out, tab.t, env.ints([t], ids));
      // A copy: exact (bf16 -> f32 is exact).
      return [{ name: "out", mode: "exact", got: readF64(out), ref: R.embeddingRef(tab.v, v, h, ids) }];
    },
  };
}

function rmsnormCase(t: number, h: number, w: "bf16" | "f32", eps: number, opts: { alias?: boolean; tinyRow?: boolean; outBf16?: boolean } = {}): OpCase {
  const extra = (opts.alias ? ",out=x" : "") + (opts.tinyRow ? ",tiny row" : "") + (opts.outBf16 ? ",out=bf16" : "");
  return {
    name: `rmsnorm(T=${t},H=${h},w=${w},eps=${eps}${extra})`,
    op: "rmsnorm",
    build(env) {
      const xv = env.rng.normals(t * h, 3);
      if (opts.tinyRow) for (let j = 0; j < h; ++j) xv[(t - 1) * h + j] *= 1e-4; // mean(x^2) ~ 1e-7: eps matters
      const x = env.floats("f32", [t, h], xv);
      const wt = env.randn(w, [h], 0.5, 1);
      const outB = opts.outBf16 ? env.out("bf16", [t, h]) : null;
      if (outB) env.ctx.rmsnorm(outB, x.t, wt.t, eps); // before an aliased f32 out overwrites x
      const out = opts.alias ? x.t : env.out("f32", [t, h]);
      env.ctx.rmsnorm(out, x.t, wt.t, eps);
      const ref = R.rmsnormRef(x.v, t, h, wt.v, Math.fround(eps));
      const outs: Output[] = [{ name: "out", mode: "norm", got: readF64(out), ref, tol: TOL.rmsnorm }];
      if (outB) outs.push(...bf16OutOutputs(outB, out, ref, TOL.rmsnorm));
      return outs;
    },
  };
}

/**
 * add_rmsnorm: x += o in place, out = rmsnorm(x) * w. Checked against float64 (the sum, and the norm of the
 * float64 sum: one more rounding than rmsnorm, far inside its threshold), and bit for bit against add + rmsnorm
 * run on the same device from the same inputs (the fusion promises identical arithmetic on each backend).
 */
function addRmsnormCase(t: number, h: number, w: "bf16" | "f32", eps: number, alias: "none" | "out=x" | "out=o" = "none"): OpCase {
  return {
    name: `add_rmsnorm(T=${t},H=${h},w=${w},eps=${eps}${alias === "none" ? "" : `,${alias}`})`,
    op: "add_rmsnorm",
    build(env) {
      const x = env.randn("f32", [t, h], 2);
      const o = env.randn("f32", [t, h], 1.5);
      const wt = env.randn(w, [h], 0.5, 1);
      // The unfused sequence on copies of the same inputs.
      const x2 = env.floats("f32", [t, h], x.v);
      const o2 = env.floats("f32", [t, h], o.v);
      const out2 = alias === "out=x" ? x2.t : alias === "out=o" ? o2.t : env.out("f32", [t, h]);
      env.ctx.add(x2.t, x2.t, o2.t);
      env.ctx.rmsnorm(out2, x2.t, wt.t, eps);
      const out = alias === "out=x" ? x.t : alias === "out=o" ? o.t : env.out("f32", [t, h]);
      env.ctx.addRmsnorm(out, x.t, o.t, wt.t, eps);
      const sum = R.addRef(x.v, o.v);
      const ref = R.rmsnormRef(sum, t, h, wt.v, Math.fround(eps));
      const outs: Output[] = [{ name: "out", mode: "norm", got: readF64(out), ref, tol: TOL.rmsnorm }];
      if (alias !== "out=x") outs.push({ name: "x (sum)", mode: "norm", got: readF64(x.t), ref: sum, tol: TOL.elementwise, cross: "exact" });
      outs.push({ name: "out == rmsnorm(add) (same device)", mode: "exact", got: readBits(out), ref: readBits(out2), nanClass: "f32", cross: "skip" });
      if (alias !== "out=x")
        outs.push({ name: "x == add (same device)", mode: "exact", got: readBits(x.t), ref: readBits(x2.t), nanClass: "f32", cross: "skip" });
      return outs;
    },
  };
}

/**
 * add_rmsnorm into a bf16 out (the engine's h on the GEMM path): x += o as with an f32 out (bit for bit), out the
 * f32 out's values rounded (both runs on copies of the same inputs, same device).
 */
function addRmsnormBf16Case(t: number, h: number, w: "bf16" | "f32", eps: number): OpCase {
  return {
    name: `add_rmsnorm(T=${t},H=${h},w=${w},eps=${eps},out=bf16)`,
    op: "add_rmsnorm",
    build(env) {
      const x = env.randn("f32", [t, h], 2);
      const o = env.randn("f32", [t, h], 1.5);
      const wt = env.randn(w, [h], 0.5, 1);
      const x2 = env.floats("f32", [t, h], x.v);
      const o2 = env.floats("f32", [t, h], o.v);
      const out32 = env.out("f32", [t, h]);
      env.ctx.addRmsnorm(out32, x2.t, o2.t, wt.t, eps);
      const outB = env.out("bf16", [t, h]);
      env.ctx.addRmsnorm(outB, x.t, o.t, wt.t, eps);
      const sum = R.addRef(x.v, o.v);
      const ref = R.rmsnormRef(sum, t, h, wt.v, Math.fround(eps));
      return [
        ...bf16OutOutputs(outB, out32, ref, TOL.rmsnorm),
        { name: "x (sum)", mode: "norm", got: readF64(x.t), ref: sum, tol: TOL.elementwise, cross: "exact" },
        { name: "x == with an f32 out (same device)", mode: "exact", got: readBits(x.t), ref: readBits(x2.t), nanClass: "f32", cross: "skip" },
      ];
    },
  };
}

// ------------------------------------------------------------------ cases: INT4

/** scheme: 0 asymmetric, 1 symmetric, 2 NF4 (csrc/core/int4_layout.h); colScale: activation-aware column factors. */
function quantizeCase(n: number, k: number, g: 32 | 64 | 128, w: FloatDType, kind: "normal" | "special" = "normal", scheme: 0 | 1 | 2 = 0, colScale = false): OpCase {
  const extra = (scheme ? `,scheme=${["asym", "sym", "nf4"][scheme]}` : "") + (colScale ? ",col_scale" : "");
  return {
    name: `quantize_int4(N=${n},K=${k},G=${g},w=${w}${kind === "special" ? ",special groups" : ""}${extra})`,
    op: "quantize_int4",
    build(env) {
      const vals = env.rng.normals(n * k, w === "f16" ? 0.5 : 0.02);
      if (kind === "special") {
        // row 0: constant positive groups; row 1: all positive; row 2: all negative; row 3: exact rounding
        // midpoints (lo = -7, hi = 8 gives scale 1 and zero 7, so w + 7 = x.5: ties must go to the even code);
        // row 4: one spike per group.
        for (let j = 0; j < k; ++j) {
          const i = j % g;
          vals[j] = 0.375;
          vals[k + j] = Math.abs(vals[k + j]) + 0.01;
          vals[2 * k + j] = -Math.abs(vals[2 * k + j]) - 0.01;
          vals[3 * k + j] = i === 0 ? -7 : i === 1 ? 8 : ((i * 7) % 15) - 7 + 0.5;
          vals[4 * k + j] = i === 7 ? 2.5 : vals[4 * k + j] * 0.01;
        }
      }
      if (kind === "special" && scheme !== 0) {
        // row 3 again, for the absmax schemes: exact midpoints of their grids. sym: absmax 7 gives scale 1, so
        // w + 8 = x.5 (ties to the even code); NF4: absmax 1 (scale 1) and every midpoint between NF4 values
        // (ties to the lower code), and +-1 exactly.
        const R4 = R.NF4;
        for (let j = 0; j < k; ++j) {
          const i = j % g;
          if (scheme === 1) vals[3 * k + j] = i === 0 ? -7 : ((i * 7) % 14) - 7 + 0.5;
          else vals[3 * k + j] = i === 0 ? -1 : i === 1 ? 1 : Math.fround(Math.fround(R4[i % 15] + R4[(i % 15) + 1]) * 0.5);
        }
      }
      const wt = env.floats(w, [n, k], vals);
      const q = { ...env.qweight(n, k, g), ...(scheme === 2 ? { codebook: 1 } : {}) };
      const csv = colScale ? Float32Array.from({ length: k }, (_, j) => (j % 17 === 3 ? 30 : 0.25 + env.rng.uniform())) : undefined;
      const cs = csv ? env.track(env.ctx.fromBuffer("f32", [k], csv)) : null;
      env.ctx.quantizeInt4(q, wt.t, scheme, cs);
      const want = R.quantizeInt4Ref(wt.v, n, k, g, scheme, csv);
      return [
        { name: "codes", mode: "exact", got: readBits(q.codes), ref: want.packed },
        { name: "scales", mode: "exact", got: readBits(q.scales), ref: want.scales, nanClass: "bf16" },
        { name: "zeros", mode: "exact", got: readBits(q.zeros), ref: want.zeros, nanClass: "bf16" },
      ];
    },
  };
}

/**
 * Random canonical INT4 weights: random codes, bf16 scales in [1e-3, 0.1), bf16 zeros in [0.5, 15.5) or 0
 * (codebook 1, NF4: zeros 0, or in [-0.25, 0.25) for every third group). unit: scales 1 and zeros 0, so that
 * dequantization gives each code's value itself.
 */
function givenQWeight(
  env: CaseEnv,
  n: number,
  k: number,
  g: 32 | 64 | 128,
  codebook: 0 | 1 = 0,
  unit = false,
): { q: QWeight; packed: Uint8Array; scales: Uint16Array; zeros: Uint16Array } {
  const packed = new Uint8Array((n * k) / 2);
  for (let i = 0; i < packed.length; ++i) packed[i] = env.rng.u32() & 0xff;
  if (unit) for (let i = 0; i < 8 && i < k / 2; ++i) packed[i] = 2 * i + ((2 * i + 1) << 4); // codes 0..15 in row 0
  const ng = (n * k) / g;
  const scales = new Uint16Array(ng);
  const zeros = new Uint16Array(ng);
  for (let i = 0; i < ng; ++i) {
    scales[i] = f32ToBf16Bits(unit ? 1 : 1e-3 + 0.099 * env.rng.uniform());
    if (unit) zeros[i] = 0;
    else if (codebook === 1) zeros[i] = i % 3 === 2 ? f32ToBf16Bits(0.5 * env.rng.uniform() - 0.25) : 0;
    else zeros[i] = i % 5 === 4 ? 0 : f32ToBf16Bits(0.5 + 15 * env.rng.uniform());
  }
  const q: QWeight = {
    codes: env.bytes("i4", [n, k], packed),
    scales: env.track(env.ctx.fromBuffer("bf16", [n, k / g], scales)),
    zeros: env.track(env.ctx.fromBuffer("bf16", [n, k / g], zeros)),
    groupSize: g,
    ...(codebook ? { codebook } : {}),
  };
  return { q, packed, scales, zeros };
}

/** Why an NF4 matmul case of a shape that layout 1 cannot hold does not run on CUDA. */
const NF4_CANONICAL_PENDING =
  "the CUDA kernels of the canonical layout read integer codes only; NF4 runs through layout 1 (N % 16 == 0, K % 64 == 0)";

/** q (canonical) repacked into a fresh, poisoned layout-1 weight on the same context. */
function repacked(env: CaseEnv, q: QWeight): QWeight {
  const [n, k] = q.codes.shape;
  const d: QWeight = { ...env.qweight(n, k, q.groupSize), layout: 1, ...(q.codebook ? { codebook: q.codebook } : {}) };
  env.ctx.repackInt4(d, q);
  return d;
}

/** layout 1: the weight is repacked (on each backend: the CPU reads layout 1 through the layout's index functions). */
function dequantizeCase(n: number, k: number, g: 32 | 64 | 128, out: "f32" | "bf16", codebook: 0 | 1 = 0, unit = false, layout: 0 | 1 = 0): OpCase {
  const extra = (codebook ? ",codebook=nf4" : "") + (unit ? ",unit scales" : "") + (layout ? ",layout=1" : "");
  return {
    name: `dequantize_int4(N=${n},K=${k},G=${g},out=${out}${extra})`,
    op: "dequantize_int4",
    build(env) {
      const given = givenQWeight(env, n, k, g, codebook, unit);
      const { packed, scales, zeros } = given;
      const q = layout ? repacked(env, given.q) : given.q;
      const o = env.out(out, [n, k]);
      env.ctx.dequantizeInt4(o, q);
      // (code - zero) * scale is exact in float32 for these zeros (see dequantizeInt4Ref); bf16 output = its RNE.
      // NF4: (value - zero) and the product are each rounded once to float32, in that order, as the layout states.
      const want = R.dequantizeInt4Ref(packed, scales, zeros, n, k, g, codebook);
      return [{ name: "out", mode: "exact", got: readBits(o), ref: bitsOf(out, want), nanClass: out }];
    },
  };
}

function matmulInt4Case(
  m: number,
  n: number,
  k: number,
  g: 32 | 64 | 128,
  opts: { bias?: "f32" | "bf16"; given?: boolean; nf4?: boolean; layout1?: boolean } = {},
): OpCase {
  const codebook = opts.nf4 ? 1 : 0;
  // On CUDA, layout 1 (the tensor-core GEMV; NF4 always goes there when the shape allows); the CPU runs the same
  // weight in layout 0 (it never repacks), so the cross-check compares the two layouts' kernels.
  const tiled = (opts.layout1 || opts.nf4) && n % 16 === 0 && k % 64 === 0;
  const extra =
    (opts.bias ? `,bias=${opts.bias}` : "") + (opts.given ? ",codes=given" : "") + (opts.nf4 ? ",codebook=nf4" : "") + (tiled ? ",cuda layout 1" : "");
  return {
    name: `matmul_int4(M=${m},N=${n},K=${k},G=${g}${extra})`,
    op: "matmul_int4",
    ...(opts.nf4 && !tiled ? { gpuPending: NF4_CANONICAL_PENDING } : {}),
    build(env) {
      const x = env.randn("f32", [m, k]);
      let q: QWeight;
      if (opts.given || opts.nf4) {
        q = givenQWeight(env, n, k, g, codebook).q;
      } else {
        const w = env.randn("bf16", [n, k], 0.02);
        q = env.qweight(n, k, g);
        env.ctx.quantizeInt4(q, w.t, 0);
      }
      // The reference multiplies by the weights the (canonical) codes on the device stand for.
      const deq = R.dequantizeInt4Ref(readBits(q.codes), readBits(q.scales), readBits(q.zeros), n, k, g, codebook);
      if (tiled && env.ctx.device !== "cpu") q = repacked(env, q);
      const b = opts.bias ? env.randn(opts.bias, [n], 0.3) : null;
      const out = env.out("f32", [m, n]);
      env.ctx.matmulInt4(out, x.t, q, b ? b.t : null);
      const got = readF64(out);
      return [{ name: "out", mode: "norm", got, ref: R.matmulRef(x.v, m, k, deq, n, b ? b.v : null), tol: TOL.matmul }];
    },
  };
}

/**
 * matmul_int4 through the tensor-core GEMM (M > 8) on CUDA: the weight in layout 1, built on the host from the
 * spec (test/helpers/layout1.ts), x f32 (the dispatch converts it to bf16) or bf16 (the GEMM's own input). The CPU
 * runs the canonical weight, and x in f32 holding the same values, so the cross-check compares the two paths.
 * Tolerance TOL.matmul (gpu 5e-5): the GEMM rounds x to bf16, dequantizes as fma(q, s, bf16(-z s)) in bf16 and
 * rounds each weight to bf16; that arithmetic emulated in float64 on these weight statistics gives 8.7e-6 to 9.3e-6
 * (M=17..118, every group size), against 5.1e-6 to 5.7e-6 for f32 (q - z) s rounded once (the canonical path): >= 5x
 * margin, while a wrong group, row tile or K step costs >= 1e-3.
 */
function gemmInt4Case(
  m: number,
  n: number,
  k: number,
  g: 32 | 64 | 128,
  opts: { bias?: "f32" | "bf16"; xbf16?: boolean; nf4?: boolean; outbf16?: boolean } = {},
): OpCase {
  const extra = (opts.bias ? `,bias=${opts.bias}` : "") + (opts.xbf16 ? ",x=bf16" : "") + (opts.nf4 ? ",codebook=nf4" : "") + (opts.outbf16 ? ",out=bf16" : "");
  const codebook = opts.nf4 ? 1 : 0;
  return {
    name: `matmul_int4(M=${m},N=${n},K=${k},G=${g},cuda layout 1 GEMM${extra})`,
    op: "matmul_int4",
    build(env) {
      const { q, packed, scales, zeros } = givenQWeight(env, n, k, g, codebook);
      let w = q;
      if (env.ctx.device !== "cpu") {
        const l1 = repackLayout1(packed, scales, zeros, n, k, g);
        w = {
          codes: env.bytes("i4", [n, k], l1.codes),
          scales: env.track(env.ctx.fromBuffer("bf16", [n, k / g], l1.scales)),
          zeros: env.track(env.ctx.fromBuffer("bf16", [n, k / g], l1.zeros)),
          groupSize: g,
          layout: 1,
          ...(codebook ? { codebook } : {}),
        };
      }
      const x = env.randn(opts.xbf16 ? "bf16" : "f32", [m, k]);
      // bf16 x is for the CUDA GEMM only; the CPU gets the same values in f32
      const xt = opts.xbf16 && env.ctx.device === "cpu" ? env.floats("f32", [m, k], x.v).t : x.t;
      const b = opts.bias ? env.randn(opts.bias, [n], 0.3) : null;
      // out bf16 (CUDA GEMM only: the f32 result rounded once, whole tiles); the CPU writes f32
      const out = env.out(opts.outbf16 && env.ctx.device !== "cpu" ? "bf16" : "f32", [m, n]);
      env.ctx.matmulInt4(out, xt, w, b ? b.t : null);
      const deq = R.dequantizeInt4Ref(packed, scales, zeros, n, k, g, codebook);
      const tol = opts.outbf16 ? bf16OutTol(TOL.matmul) : TOL.matmul;
      return [{ name: "out", mode: "norm", got: readF64(out), ref: R.matmulRef(x.v, m, k, deq, n, b ? b.v : null), tol }];
    },
  };
}

/** repack_int4 0 -> 1 against the spec's fragment-by-fragment reference, and 1 -> 0 back to the input. */
function repackCase(n: number, k: number, g: 32 | 64 | 128, codebook: 0 | 1 = 0): OpCase {
  return {
    name: `repack_int4(N=${n},K=${k},G=${g}${codebook ? ",codebook=nf4" : ""})`,
    op: "repack_int4",
    build(env) {
      const { q, packed, scales, zeros } = givenQWeight(env, n, k, g, codebook);
      const t = repacked(env, q);
      const back: QWeight = { ...env.qweight(n, k, g), ...(codebook ? { codebook } : {}) };
      env.ctx.repackInt4(back, t);
      const ref = R.repackInt4Ref(packed, [scales, zeros], n, k, g);
      return [
        { name: "codes (layout 1)", mode: "exact", got: readBits(t.codes), ref: ref.codes },
        { name: "scales (layout 1)", mode: "exact", got: readBits(t.scales), ref: ref.groups[0] },
        { name: "zeros (layout 1)", mode: "exact", got: readBits(t.zeros), ref: ref.groups[1] },
        { name: "codes back (layout 0)", mode: "exact", got: readBits(back.codes), ref: packed },
        { name: "scales back", mode: "exact", got: readBits(back.scales), ref: scales },
        { name: "zeros back", mode: "exact", got: readBits(back.zeros), ref: zeros },
      ];
    },
  };
}

/**
 * linear_int4, the fused INT4 linear of decode: (rmsnorm) -> x W^T (+ bias) -> store | accumulate | swiglu.
 * CPU: layout 0, and bit for bit the unfused rmsnorm -> matmul_int4 -> copy | add | swiglu on the same inputs (the
 * fusion's promise on the reference backend). CUDA: the weight repacked to layout 1; against float64 with the
 * matmul tolerance (x is rounded to bf16 as the kernel stages it: TOL.matmul's reason; NF4 values rounded to bf16:
 * its "weights rounded as well" case) and against the CPU with it; and token 0 alone equals token 0 of the batch
 * bit for bit (batched decode must equal solo decode).
 */
function linearInt4Case(
  m: number,
  n: number,
  k: number,
  g: 32 | 64 | 128,
  opts: { mode: LinearMode; bias?: "f32" | "bf16"; norm?: "f32" | "bf16"; nf4?: boolean; xbf16?: boolean },
): OpCase {
  const codebook = opts.nf4 ? 1 : 0;
  const modeName = ["store", "accumulate", "swiglu"][opts.mode];
  const extra =
    (opts.bias ? `,bias=${opts.bias}` : "") + (opts.norm ? `,norm=${opts.norm}` : "") + (codebook ? ",codebook=nf4" : "") + (opts.xbf16 ? ",x=bf16 (cuda GEMM)" : "");
  return {
    name: `linear_int4(M=${m},N=${n},K=${k},G=${g},${modeName}${extra})`,
    op: "linear_int4",
    build(env) {
      const eps = 1.5625e-7;
      // x bf16 (M > 8, no norm, store | accumulate): CUDA runs the tensor-core GEMM with the add in its epilogue;
      // the CPU gets the same values in f32 (x.v holds the bf16 values), so the cross-check compares the two paths
      const xb = opts.xbf16 ? env.randn("bf16", [m, k]) : null;
      const x = xb && env.ctx.device === "cpu" ? env.floats("f32", [m, k], xb.v) : xb ?? env.randn("f32", [m, k], opts.norm ? 3 : 1);
      const canonical = givenQWeight(env, n, k, g, codebook).q;
      const deq = R.dequantizeInt4Ref(readBits(canonical.codes), readBits(canonical.scales), readBits(canonical.zeros), n, k, g, codebook);
      const q = env.ctx.device === "cpu" ? canonical : repacked(env, canonical);
      const b = opts.bias ? env.randn(opts.bias, [n], 0.3) : null;
      const nw = opts.norm ? env.randn(opts.norm, [k], 0.5, 1) : null;
      const nout = opts.mode === 2 ? n / 2 : n;
      const base = opts.mode === 1 ? env.randn("f32", [m, nout], 2) : null;
      const out = base ? base.t : env.out("f32", [m, nout]);
      env.ctx.linearInt4(out, x.t, q, eps, opts.mode, b ? b.t : null, nw ? nw.t : null);
      const got = readF64(out);
      const ref = R.linearInt4Ref(x.v, m, k, deq, n, { bias: b?.v, normW: nw?.v, eps: Math.fround(eps), mode: opts.mode, base: base?.v });
      const outs: Output[] = [{ name: "out", mode: "norm", got, ref, tol: opts.mode === 2 ? TOL.matmulSwiglu : TOL.matmul }];
      if (env.ctx.device === "cpu") {
        const xn = env.out("f32", [m, k]);
        if (nw) env.ctx.rmsnorm(xn, x.t, nw.t, eps);
        const y = env.out("f32", [m, n]);
        env.ctx.matmulInt4(y, nw ? xn : x.t, canonical, b ? b.t : null);
        const o2 = base ? env.floats("f32", [m, nout], base.v).t : env.out("f32", [m, nout]);
        if (opts.mode === 0) env.ctx.copy(o2, y);
        else if (opts.mode === 1) env.ctx.add(o2, o2, y);
        else env.ctx.swiglu(o2, y);
        outs.push({ name: "out == unfused ops (cpu)", mode: "exact", got: readBits(out), ref: readBits(o2), nanClass: "f32", cross: "skip" });
      } else if (xb) {
        // CUDA GEMM path: the add in the epilogue equals matmul_int4 into f32 then add on the same device, up to the
        // order of the K pieces' sums (x + p0 + p1 vs x + (p0 + p1): f32 rounding, ~1e-14 squared)
        const y = env.out("f32", [m, n]);
        env.ctx.matmulInt4(y, x.t, q, b ? b.t : null);
        const o2 = base ? env.floats("f32", [m, nout], base.v).t : env.out("f32", [m, nout]);
        if (opts.mode === 0) env.ctx.copy(o2, y);
        else env.ctx.add(o2, o2, y);
        outs.push({ name: "out == matmul_int4 then add (cuda)", mode: "norm", got, ref: readF64(o2), tol: { cpu: 1e-12, gpu: 1e-10 }, cross: "skip" });
      } else {
        // CUDA: token 0 run alone gets bit for bit what it gets in the batch (the decomposition never depends on M)
        const o1 = base ? env.floats("f32", [1, nout], base.v.subarray(0, nout)).t : env.out("f32", [1, nout]);
        env.ctx.linearInt4(o1, env.track(x.t.slice0(0, 1)), q, eps, opts.mode, b ? b.t : null, nw ? nw.t : null);
        const row0 = readBits(out).slice(0, nout);
        outs.push({ name: "token 0 alone == token 0 of the batch (cuda)", mode: "exact", got: readBits(o1), ref: row0, nanClass: "f32", cross: "skip" });
      }
      return outs;
    },
  };
}

// ------------------------------------------------------------------ cases: matmul, add_bias

function matmulCase(m: number, n: number, k: number, w: "bf16" | "f32", bias?: "bf16" | "f32"): OpCase {
  return {
    name: `matmul(M=${m},N=${n},K=${k},w=${w}${bias ? `,bias=${bias}` : ""})`,
    op: "matmul",
    build(env) {
      const x = env.randn("f32", [m, k]);
      const wt = env.randn(w, [n, k], 0.05);
      const b = bias ? env.randn(bias, [n], 0.3) : null;
      const out = env.out("f32", [m, n]);
      env.ctx.matmul(out, x.t, wt.t, b ? b.t : null);
      return [{ name: "out", mode: "norm", got: readF64(out), ref: R.matmulRef(x.v, m, k, wt.v, n, b ? b.v : null), tol: TOL.matmul }];
    },
  };
}

function addBiasCase(m: number, n: number, bias: "bf16" | "f32"): OpCase {
  return {
    name: `add_bias(M=${m},N=${n},bias=${bias})`,
    op: "add_bias",
    build(env) {
      const x = env.randn("f32", [m, n]);
      const b = env.randn(bias, [n]);
      env.ctx.addBias(x.t, b.t); // in place
      return [{ name: "x", mode: "norm", got: readF64(x.t), ref: R.addBiasRef(x.v, m, n, b.v), tol: TOL.elementwise }];
    },
  };
}

// ------------------------------------------------------------------ cases: rotary, kv_write, attention

function rotaryCase(t: number, heads: number, d: number, rotDim: number, theta: number, pos: number[] | "causal" | { below: number }): OpCase {
  const posName = pos === "causal" ? `0..${t - 1}` : Array.isArray(pos) ? pos.join(";") : `random<${pos.below}`;
  return {
    name: `rotary(T=${t},H=${heads},D=${d},rot=${rotDim},theta=${theta},pos=${posName})`,
    op: "rotary",
    build(env) {
      const p = pos === "causal" ? Array.from({ length: t }, (_, i) => i) : Array.isArray(pos) ? pos : Array.from({ length: t }, () => env.rng.int(pos.below));
      const x = env.randn("f32", [t, heads, d]);
      const inBits = new Uint32Array(Float32Array.from(x.v).buffer);
      env.ctx.rotary(x.t, env.ints([t], p), rotDim, theta);
      const gotBits = readBits(x.t) as Uint32Array;
      const got = Float64Array.from(new Float32Array(gotBits.buffer));
      const ref = R.rotaryRef(x.v, t, heads, d, p, rotDim, Math.fround(theta));
      // Dims at and beyond rotDim of every head must come back bit-identical.
      const keepIdx: number[] = [];
      for (let i = 0; i < t * heads; ++i) for (let j = rotDim; j < d; ++j) keepIdx.push(i * d + j);
      const outs: Output[] = [{ name: "x", mode: "norm", got, ref, tol: rotaryTol(p, d, rotDim, Math.fround(theta)) }];
      if (keepIdx.length)
        outs.push({ name: `x[..., ${rotDim}:] unchanged`, mode: "exact", got: keepIdx.map((i) => gotBits[i]), ref: keepIdx.map((i) => inBits[i]), nanClass: "f32" });
      return outs;
    },
  };
}

/** Distinct positions in [0, s), including 0 and s - 1 when t >= 2, in shuffled order. */
function scatteredPositions(rng: Rng, t: number, s: number): number[] {
  const all = Array.from({ length: s }, (_, i) => i);
  for (let i = s - 1; i > 0; --i) {
    const j = rng.int(i + 1);
    [all[i], all[j]] = [all[j], all[i]];
  }
  const p = all.slice(0, t);
  if (t >= 2 && !p.includes(0)) p[0] = 0;
  if (t >= 2 && !p.includes(s - 1)) p[1] = s - 1;
  return p;
}

function kvWriteCase(t: number, hkv: number, d: number, s: number, cache: "bf16" | "f32", pos?: number[]): OpCase {
  return {
    name: `kv_write(T=${t},Hkv=${hkv},D=${d},S=${s},cache=${cache}${pos ? `,pos=${pos.join(";")}` : ""})`,
    op: "kv_write",
    build(env) {
      const p = pos ?? scatteredPositions(env.rng, t, s);
      const row = hkv * d;
      // Caches start with random contents: rows not written must come back unchanged.
      const kc = env.randn(cache, [s, hkv, d]);
      const vc = env.randn(cache, [s, hkv, d]);
      const k = env.randn("f32", [t, hkv, d]);
      const v = env.randn("f32", [t, hkv, d]);
      env.ctx.kvWrite(kc.t, vc.t, k.t, v.t, env.ints([t], p));
      const wantK = Float64Array.from(kc.v);
      const wantV = Float64Array.from(vc.v);
      for (let i = 0; i < t; ++i)
        for (let j = 0; j < row; ++j) {
          wantK[p[i] * row + j] = k.v[i * row + j];
          wantV[p[i] * row + j] = v.v[i * row + j];
        }
      return [
        { name: "kcache", mode: "exact", got: readBits(kc.t), ref: bitsOf(cache, wantK), nanClass: cache },
        { name: "vcache", mode: "exact", got: readBits(vc.t), ref: bitsOf(cache, wantV), nanClass: cache },
      ];
    },
  };
}

/**
 * rotary_kv_write: rotary on q and k at sequence positions `pos`, then k and v into cache rows `rows` (distinct
 * rows, scattered, unrelated to the positions: the batch engine's slots). q and k against the float64 rotary;
 * the caches exactly: written rows hold the returned k (rounded to the cache dtype) and v, other rows keep their
 * random contents. Then bit for bit against rotary + rotary + kv_write on the same device from the same inputs.
 */
function rotaryKvWriteCase(t: number, hq: number, hkv: number, d: number, rotDim: number, s: number, cache: "bf16" | "f32", theta = 5e6): OpCase {
  return {
    name: `rotary_kv_write(T=${t},Hq=${hq},Hkv=${hkv},D=${d},rot=${rotDim},S=${s},cache=${cache},theta=${theta})`,
    op: "rotary_kv_write",
    build(env) {
      const p = Array.from({ length: t }, () => env.rng.int(8192));
      const r = scatteredPositions(env.rng, t, s);
      const row = hkv * d;
      const kc = env.randn(cache, [s, hkv, d]);
      const vc = env.randn(cache, [s, hkv, d]);
      const q = env.randn("f32", [t, hq, d]);
      const k = env.randn("f32", [t, hkv, d]);
      const v = env.randn("f32", [t, hkv, d]);
      // The unfused sequence on copies.
      const kc2 = env.floats(cache, [s, hkv, d], kc.v);
      const vc2 = env.floats(cache, [s, hkv, d], vc.v);
      const q2 = env.floats("f32", [t, hq, d], q.v);
      const k2 = env.floats("f32", [t, hkv, d], k.v);
      const v2 = env.floats("f32", [t, hkv, d], v.v);
      const pos = env.ints([t], p);
      const rows = env.ints([t], r);
      env.ctx.rotary(q2.t, pos, rotDim, theta);
      env.ctx.rotary(k2.t, pos, rotDim, theta);
      env.ctx.kvWrite(kc2.t, vc2.t, k2.t, v2.t, rows);
      env.ctx.rotaryKvWrite(q.t, k.t, v.t, kc.t, vc.t, pos, rows, rotDim, theta);
      const th = Math.fround(theta);
      const gotK = readF64(k.t);
      const wantK = Float64Array.from(kc.v);
      const wantV = Float64Array.from(vc.v);
      for (let i = 0; i < t; ++i)
        for (let j = 0; j < row; ++j) {
          wantK[r[i] * row + j] = gotK[i * row + j];
          wantV[r[i] * row + j] = v.v[i * row + j];
        }
      const same = (name: string, a: NativeTensor, b: NativeTensor, nc: FloatDType): Output => ({
        name: `${name} == unfused (same device)`,
        mode: "exact",
        got: readBits(a),
        ref: readBits(b),
        nanClass: nc,
        cross: "skip",
      });
      return [
        { name: "q", mode: "norm", got: readF64(q.t), ref: R.rotaryRef(q.v, t, hq, d, p, rotDim, th), tol: rotaryTol(p, d, rotDim, th) },
        { name: "k", mode: "norm", got: gotK, ref: R.rotaryRef(k.v, t, hkv, d, p, rotDim, th), tol: rotaryTol(p, d, rotDim, th) },
        { name: "kcache", mode: "exact", got: readBits(kc.t), ref: bitsOf(cache, wantK), nanClass: cache, cross: "skip" },
        { name: "vcache", mode: "exact", got: readBits(vc.t), ref: bitsOf(cache, wantV), nanClass: cache },
        { name: "v unchanged", mode: "exact", got: readBits(v.t), ref: new Uint32Array(Float32Array.from(v.v).buffer), nanClass: "f32" },
        same("q", q.t, q2.t, "f32"),
        same("k", k.t, k2.t, "f32"),
        same("kcache", kc.t, kc2.t, cache),
        same("vcache", vc.t, vc2.t, cache),
      ];
    },
  };
}

/**
 * rotary_kv_write_qkv: the packed form, q, k, v read out of one [T, (Hq + 2 Hkv) D] row (the fused QKV GEMM's
 * output), the rotated q to its own buffer, k and v to cache rows `rows`. Bit for bit against rotary_kv_write on
 * the unpacked q, k, v (copies of the same values) on the same device: q and both caches; q also against the
 * float64 rotary; qkv left unchanged; cache rows not written keep their contents.
 */
function rotaryKvWriteQkvCase(t: number, hq: number, hkv: number, d: number, rotDim: number, s: number, cache: "bf16" | "f32", theta = 5e6, qkvType: "f32" | "bf16" = "f32"): OpCase {
  return {
    name: `rotary_kv_write_qkv(T=${t},Hq=${hq},Hkv=${hkv},D=${d},rot=${rotDim},S=${s},cache=${cache},theta=${theta}${qkvType === "bf16" ? ",qkv=bf16" : ""})`,
    op: "rotary_kv_write_qkv",
    build(env) {
      const p = Array.from({ length: t }, () => env.rng.int(8192));
      const r = scatteredPositions(env.rng, t, s);
      const W = (hq + 2 * hkv) * d;
      const kc = env.randn(cache, [s, hkv, d]);
      const vc = env.randn(cache, [s, hkv, d]);
      // a bf16 qkv: the unpacked f32 reference below takes its exact (widened) values
      const qkv = env.randn(qkvType, [t, W]);
      const part = (a: number, b: number) => {
        const v = new Float64Array(t * (b - a));
        for (let i = 0; i < t; ++i) v.set(qkv.v.subarray(i * W + a, i * W + b), i * (b - a));
        return v;
      };
      const qv = part(0, hq * d), kv = part(hq * d, (hq + hkv) * d), vv = part((hq + hkv) * d, W);
      // The unpacked op on copies.
      const kc2 = env.floats(cache, [s, hkv, d], kc.v);
      const vc2 = env.floats(cache, [s, hkv, d], vc.v);
      const q2 = env.floats("f32", [t, hq, d], qv);
      const k2 = env.floats("f32", [t, hkv, d], kv);
      const v2 = env.floats("f32", [t, hkv, d], vv);
      const pos = env.ints([t], p);
      const rows = env.ints([t], r);
      env.ctx.rotaryKvWrite(q2.t, k2.t, v2.t, kc2.t, vc2.t, pos, rows, rotDim, theta);
      const q = env.out("f32", [t, hq, d]);
      env.ctx.rotaryKvWriteQkv(q, qkv.t, kc.t, vc.t, pos, rows, rotDim, theta);
      const th = Math.fround(theta);
      const same = (name: string, a: NativeTensor, b: NativeTensor, nc: FloatDType): Output => ({
        name: `${name} == unpacked rotary_kv_write (same device)`,
        mode: "exact",
        got: readBits(a),
        ref: readBits(b),
        nanClass: nc,
        cross: "skip",
      });
      const wantV = Float64Array.from(vc.v);
      for (let i = 0; i < t; ++i) for (let j = 0; j < hkv * d; ++j) wantV[r[i] * hkv * d + j] = vv[i * hkv * d + j];
      return [
        { name: "q", mode: "norm", got: readF64(q), ref: R.rotaryRef(qv, t, hq, d, p, rotDim, th), tol: rotaryTol(p, d, rotDim, th) },
        { name: "vcache", mode: "exact", got: readBits(vc.t), ref: bitsOf(cache, wantV), nanClass: cache },
        { name: "qkv unchanged", mode: "exact", got: readBits(qkv.t), ref: bitsOf(qkvType, qkv.v), nanClass: qkvType },
        same("q", q, q2.t, "f32"),
        same("kcache", kc.t, kc2.t, cache),
        same("vcache", vc.t, vc2.t, cache),
      ];
    },
  };
}

/**
 * Decode: one query at position `pos` over a cache whose rows 0..pos hold random values and whose rows beyond pos
 * hold NaN: a kernel that reads (even multiplies by zero) a row past pos fails, as it would on real uninitialized
 * memory. Rows 0 and pos get keys aligned with their group's queries (score ~ +4), so that dropping either of
 * them is a visible error even with the GPU threshold.
 */
function attentionDecodeCase(hq: number, hkv: number, d: number, pos: number, s: number, cache: "bf16" | "f32", outBf16 = false): OpCase {
  return {
    name: `attention(T=1,Hq=${hq},Hkv=${hkv},D=${d},pos=${pos},S=${s},cache=${cache}${outBf16 ? ",out=bf16" : ""})`,
    op: "attention",
    build(env) {
      const scale = Math.fround(1 / Math.sqrt(d));
      const q = env.randn("f32", [1, hq, d]);
      const per = hq / hkv;
      const kv = env.rng.normals(s * hkv * d);
      const vv = env.rng.normals(s * hkv * d);
      for (let g = 0; g < hkv; ++g) {
        const mean = new Float64Array(d);
        for (let h = g * per; h < (g + 1) * per; ++h) for (let x = 0; x < d; ++x) mean[x] += q.v[h * d + x] / per;
        let nn = 0;
        for (let x = 0; x < d; ++x) nn += mean[x] * mean[x];
        for (const row of pos > 0 ? [0, pos] : [0])
          for (let x = 0; x < d; ++x) kv[(row * hkv + g) * d + x] = (4 / scale) * (mean[x] / nn);
      }
      for (let i = (pos + 1) * hkv * d; i < s * hkv * d; ++i) kv[i] = vv[i] = NaN;
      const kc = env.floats(cache, [s, hkv, d], kv);
      const vc = env.floats(cache, [s, hkv, d], vv);
      const out = env.out("f32", [1, hq, d]);
      env.ctx.attention(out, q.t, kc.t, vc.t, env.ints([1], [pos]), scale, 0);
      const ref = R.attentionRef(q.v, 1, hq, d, kc.v, vc.v, hkv, [pos], scale);
      const outs: Output[] = [{ name: "out", mode: "norm", got: readF64(out), ref, tol: TOL.attention }];
      if (outBf16) {
        const outB = env.out("bf16", [1, hq, d]);
        env.ctx.attention(outB, q.t, kc.t, vc.t, env.ints([1], [pos]), scale, 0);
        outs.push(...bf16OutOutputs(outB, out, ref, TOL.attention));
      }
      return outs;
    },
  };
}

/**
 * Prefill of T tokens at positions start..start+T-1 through kv_write then attention. With start > 0, rows
 * 0..start-1 were written by an earlier kv_write (an earlier prefill). The caches start as NaN everywhere: every
 * row attention reads must have been written.
 */
function attentionPrefillCase(t: number, hq: number, hkv: number, d: number, start: number, s: number, cache: "bf16" | "f32", outBf16 = false): OpCase {
  return {
    name: `attention(T=${t},Hq=${hq},Hkv=${hkv},D=${d},pos=${start}..${start + t - 1},S=${s},cache=${cache}${outBf16 ? ",out=bf16" : ""})`,
    op: "attention",
    build(env) {
      const scale = Math.fround(1 / Math.sqrt(d));
      const kc = env.out(cache, [s, hkv, d]);
      const vc = env.out(cache, [s, hkv, d]);
      const row = hkv * d;
      const kAll = new Float64Array(s * row).fill(NaN);
      const vAll = new Float64Array(s * row).fill(NaN);
      const write = (t0: number, first: number) => {
        const k = env.randn("f32", [t0, hkv, d]);
        const v = env.randn("f32", [t0, hkv, d]);
        const p = Array.from({ length: t0 }, (_, i) => first + i);
        env.ctx.kvWrite(kc, vc, k.t, v.t, env.ints([t0], p));
        const kr = decodeFloats(cache, encodeFloats(cache, k.v));
        const vr = decodeFloats(cache, encodeFloats(cache, v.v));
        kAll.set(kr, first * row);
        vAll.set(vr, first * row);
      };
      if (start > 0) write(start, 0);
      const q = env.randn("f32", [t, hq, d]);
      write(t, start);
      const pos = Array.from({ length: t }, (_, i) => start + i);
      const out = env.out("f32", [t, hq, d]);
      env.ctx.attention(out, q.t, kc, vc, env.ints([t], pos), scale, 0);
      const ref = R.attentionRef(q.v, t, hq, d, kAll, vAll, hkv, pos, scale);
      const outs: Output[] = [
        { name: "out", mode: "norm", got: readF64(out), ref, tol: TOL.attention },
        { name: "kcache", mode: "exact", got: readBits(kc), ref: bitsOf(cache, kAll), nanClass: cache },
        { name: "vcache", mode: "exact", got: readBits(vc), ref: bitsOf(cache, vAll), nanClass: cache },
      ];
      if (outBf16) {
        const outB = env.out("bf16", [t, hq, d]);
        env.ctx.attention(outB, q.t, kc, vc, env.ints([t], pos), scale, 0);
        outs.push(...bf16OutOutputs(outB, out, ref, TOL.attention));
      }
      return outs;
    },
  };
}

/** One paged attention case: sequences of cached lengths `lens`, the last `t` positions of each as queries. */
interface PagedSpec {
  lens: number[];
  t: number;
  hq: number;
  hkv: number;
  d: number;
  /** Block size (a power of two in 16..256). */
  bs: number;
  cache: "bf16" | "f32";
  /** Pass sequence ids (several sequences); false: one sequence, no seq tensor (lens.length must be 1). */
  seq: boolean;
  /** Query order with several sequences: sequence by sequence, or round robin (tiles mixing sequences). */
  order?: "grouped" | "interleaved";
  /** Also into a bf16 out (bf16OutOutputs). */
  outBf16?: boolean;
}

/**
 * Attention through a block table (csrc/ops.h). The pool holds every sequence's blocks in a shuffled order, plus
 * spare blocks; rows that no query may read hold NaN: the tail of each sequence's last block, the spare blocks,
 * and a poison block that every unused table entry points to. A kernel that reads past a sequence's last
 * position, another sequence's rows, or a table entry it should not, meets NaN. Rows 0, len/2 and len-1 of each
 * sequence get a key aligned with the mean query (large scores), so that a wrong row is a visible error.
 * Outputs: vs float64; "paged == contiguous" (same device, bit for bit): with one sequence, the same queries
 * over a contiguous copy of it; with one query per sequence (a decode batch), each sequence's query alone over
 * a contiguous copy (the per-query arithmetic must not depend on the batch or on where the blocks are).
 */
function attentionPagedCase(sp: PagedSpec): OpCase {
  const { lens, t, hq, hkv, d, bs, cache } = sp;
  const order = sp.order ?? "grouped";
  const lensName = lens.length > 6 ? `${lens.slice(0, 6).join(";")};..(${lens.length})` : lens.join(";");
  return {
    name: `attention(paged: lens=${lensName},T/seq=${t},Hq=${hq},Hkv=${hkv},D=${d},bs=${bs},cache=${cache},${sp.seq ? `seq,${order}` : "one seq"}${sp.outBf16 ? ",out=bf16" : ""})`,
    op: "attention",
    build(env) {
      if (!sp.seq && lens.length !== 1) throw new Error("attentionPagedCase: one sequence without seq ids");
      const scale = Math.fround(1 / Math.sqrt(d));
      const B = lens.length, row = hkv * d, shift = Math.log2(bs);
      const nbs = lens.map((l) => Math.ceil(l / bs));
      const NB = Math.max(...nbs) + 1;
      const used = nbs.reduce((a, b) => a + b, 0);
      const blocks = used + 3; // 2 spare, 1 poison
      const perm = Array.from({ length: blocks }, (_, i) => i);
      for (let i = blocks - 1; i > 0; --i) {
        const j = env.rng.int(i + 1);
        [perm[i], perm[j]] = [perm[j], perm[i]];
      }
      const poisonBlock = perm[blocks - 1];
      const table = new Int32Array(B * NB).fill(poisonBlock);
      let next = 0;
      for (let b = 0; b < B; ++b) for (let i = 0; i < nbs[b]; ++i) table[b * NB + i] = perm[next++];
      const rowOfSeq = (b: number, p: number) => table[b * NB + (p >> shift)] * bs + (p & (bs - 1));
      const poolRows = blocks * bs;
      const kv = new Float64Array(poolRows * row).fill(NaN);
      const vv = new Float64Array(poolRows * row).fill(NaN);
      const q = env.randn("f32", [B * t, hq, d]);
      const mean = new Float64Array(d);
      for (let i = 0; i < B * t * hq; ++i) for (let x = 0; x < d; ++x) mean[x] += q.v[i * d + x] / (B * t * hq);
      let nn = 0;
      for (let x = 0; x < d; ++x) nn += mean[x] * mean[x];
      for (let b = 0; b < B; ++b) {
        const kr = env.rng.normals(lens[b] * row), vr = env.rng.normals(lens[b] * row);
        for (let p = 0; p < lens[b]; ++p) {
          const r = rowOfSeq(b, p);
          for (let j = 0; j < row; ++j) {
            kv[r * row + j] = kr[p * row + j];
            vv[r * row + j] = vr[p * row + j];
          }
        }
        for (const p of [0, Math.floor((lens[b] - 1) / 2), lens[b] - 1]) {
          const r = rowOfSeq(b, p);
          for (let g = 0; g < hkv; ++g) for (let x = 0; x < d; ++x) kv[(r * hkv + g) * d + x] = (6 / scale) * (mean[x] / nn);
        }
      }
      const kc = env.floats(cache, [poolRows, hkv, d], kv);
      const vc = env.floats(cache, [poolRows, hkv, d], vv);
      // Queries: sequence b's positions lens[b]-t .. lens[b]-1.
      const seqOf: number[] = [], pos: number[] = [];
      if (order === "grouped") {
        for (let b = 0; b < B; ++b)
          for (let i = 0; i < t; ++i) {
            seqOf.push(b);
            pos.push(lens[b] - t + i);
          }
      } else {
        for (let i = 0; i < t; ++i)
          for (let b = 0; b < B; ++b) {
            seqOf.push(b);
            pos.push(lens[b] - t + i);
          }
      }
      const T = B * t;
      const tbl = env.ints([B, NB], table);
      const out = env.out("f32", [T, hq, d]);
      env.ctx.attention(out, q.t, kc.t, vc.t, env.ints([T], pos), scale, bs, tbl, sp.seq ? env.ints([T], seqOf) : null);
      const ref = R.attentionRowsRef(q.v, T, hq, d, kc.v, vc.v, hkv, pos, scale, (i, p) => rowOfSeq(seqOf[i], p));
      const outs: Output[] = [{ name: "out", mode: "norm", got: readF64(out), ref, tol: TOL.attention }];
      if (sp.outBf16) {
        const outB = env.out("bf16", [T, hq, d]);
        env.ctx.attention(outB, q.t, kc.t, vc.t, env.ints([T], pos), scale, bs, tbl, sp.seq ? env.ints([T], seqOf) : null);
        outs.push(...bf16OutOutputs(outB, out, ref, TOL.attention));
      }
      // The same queries over contiguous copies of their sequences.
      const contiguous = (b: number, qi: number[]): NativeTensor => {
        const L = lens[b];
        const ck = new Float64Array((L + 1) * row).fill(NaN), cv = new Float64Array((L + 1) * row).fill(NaN);
        for (let p = 0; p < L; ++p)
          for (let j = 0; j < row; ++j) {
            ck[p * row + j] = kc.v[rowOfSeq(b, p) * row + j];
            cv[p * row + j] = vc.v[rowOfSeq(b, p) * row + j];
          }
        const qa = new Float64Array(qi.length * hq * d);
        qi.forEach((i, n) => qa.set(q.v.subarray(i * hq * d, (i + 1) * hq * d), n * hq * d));
        const o = env.out("f32", [qi.length, hq, d]);
        env.ctx.attention(o, env.floats("f32", [qi.length, hq, d], qa).t, env.floats(cache, [L + 1, hkv, d], ck).t, env.floats(cache, [L + 1, hkv, d], cv).t, env.ints([qi.length], qi.map((i) => pos[i])), scale, 0);
        return o;
      };
      if (!sp.seq || t === 1) {
        const parts = sp.seq ? seqOf.map((b, i) => readBits(contiguous(b, [i]))) : [readBits(contiguous(0, pos.map((_, i) => i)))];
        const alone = new Uint32Array(T * hq * d);
        let o = 0;
        for (const part of parts) {
          alone.set(part as Uint32Array, o);
          o += part.length;
        }
        // Up to 8 query rows the decode kernel's split rule depends on each sequence's length alone: every row equals
        // its solo decode bit for bit (the engine's 1..8-row steps rely on it). Wider steps take run5's ticket-tree
        // kernel with 256-key splits (attention_kernels.cuh, PlanKnobs big_t): each of them and each solo row is
        // within TOL.attention of float64 (the "out" check above; the solo shapes' own cases), so they differ by at
        // most 4x that in normalized squared error (triangle inequality on the norms).
        if (sp.seq && t === 1 && T > 8) {
          const f = new Float32Array(alone.buffer);
          outs.push({ name: "== each sequence alone, contiguous (same device; wider than 8 rows: within 4x TOL)", mode: "norm", got: readF64(out), ref: Float64Array.from(f), tol: { cpu: 4 * TOL.attention.cpu, gpu: 4 * TOL.attention.gpu }, cross: "skip" });
        } else outs.push({ name: sp.seq ? "== each sequence alone, contiguous (same device)" : "== contiguous (same device)", mode: "exact", got: readBits(out), ref: alone, nanClass: "f32", cross: "skip" });
      }
      return outs;
    },
  };
}

// ------------------------------------------------------------------ cases: elementwise

/**
 * swiglu on an f32 or a bf16 gate_up (the GEMM's bf16 output at T > 8). The float64 reference takes the stored values
 * (bf16 decoded exactly); a bf16 gate_up is also checked bit for bit against swiglu on its f32 copy (convert, exact)
 * on the same device: the op promises that a bf16 input changes nothing but the input's own rounding.
 */
function swigluCase(m: number, f: number, outBf16 = false, inBf16 = false): OpCase {
  return {
    name: `swiglu(M=${m},F=${f}${inBf16 ? ",gate_up=bf16" : ""}${outBf16 ? ",out=bf16" : ""})`,
    op: "swiglu",
    build(env) {
      const gu = env.randn(inBf16 ? "bf16" : "f32", [m, 2 * f], 2);
      const out = env.out("f32", [m, f]);
      env.ctx.swiglu(out, gu.t);
      const ref = R.swigluRef(gu.v, m, f);
      const outs: Output[] = [{ name: "out", mode: "norm", got: readF64(out), ref, tol: TOL.elementwise }];
      if (inBf16) {
        const gu32 = env.floats("f32", [m, 2 * f], gu.v);
        const out32 = env.out("f32", [m, f]);
        env.ctx.swiglu(out32, gu32.t);
        outs.push({ name: "out == swiglu(f32 copy of gate_up) (same device)", mode: "exact", got: readBits(out), ref: readBits(out32), nanClass: "f32", cross: "skip" });
      }
      if (outBf16) {
        const outB = env.out("bf16", [m, f]);
        env.ctx.swiglu(outB, gu.t);
        outs.push(...bf16OutOutputs(outB, out, ref, TOL.elementwise));
      }
      return outs;
    },
  };
}

function addCase(shape: number[], alias: "none" | "out=a" | "out=b" | "out=a=b"): OpCase {
  return {
    name: `add(shape=[${shape}]${alias === "none" ? "" : `,${alias}`})`,
    op: "add",
    build(env) {
      const a = env.randn("f32", shape);
      const b = alias === "out=a=b" ? a : env.randn("f32", shape);
      const out = alias === "none" ? env.out("f32", shape) : alias === "out=b" ? b.t : a.t;
      env.ctx.add(out, a.t, b.t);
      return [{ name: "out", mode: "norm", got: readF64(out), ref: R.addRef(a.v, b.v), tol: TOL.elementwise }];
    },
  };
}

// ------------------------------------------------------------------ cases: argmax, softmax, sample

function argmaxCase(m: number, v: number, ties = false): OpCase {
  return {
    name: `argmax(M=${m},V=${v}${ties ? ",ties" : ""})`,
    op: "argmax",
    build(env) {
      const xv = env.rng.normals(m * v, 2);
      if (ties) {
        // row 0: all equal -> 0; row 1: the max at 3 places; row 2: max at first and last; row 3: -Inf entries and
        // the max at the last index only; row 4: two maxima far apart in the second half.
        for (let j = 0; j < v; ++j) xv[j] = 0.5;
        xv[v + 17] = xv[v + 18] = xv[v + v - 1] = 9;
        xv[2 * v] = xv[2 * v + v - 1] = 9;
        for (let j = 0; j < v; j += 3) xv[3 * v + j] = -Infinity;
        xv[3 * v + v - 1] = 9;
        xv[4 * v + Math.floor(v / 2) + 1] = xv[4 * v + v - 2] = 9;
      }
      const x = env.floats("f32", [m, v], xv);
      const out = env.out("i32", [m]);
      env.ctx.argmax(out, x.t);
      return [{ name: "out", mode: "exact", got: out.read(), ref: R.argmaxRef(x.v, m, v) }];
    },
  };
}

function softmaxCase(m: number, v: number, temperature: number): OpCase {
  return {
    name: `softmax(M=${m},V=${v},T=${temperature})`,
    op: "softmax",
    build(env) {
      const x = env.randn("f32", [m, v], 2);
      const out = env.out("f32", [m, v]);
      env.ctx.softmax(out, x.t, temperature);
      const T = Math.fround(temperature);
      let mx = 0;
      for (const a of x.v) mx = Math.max(mx, Math.abs(a / T));
      return [{ name: "out", mode: "norm", got: readF64(out), ref: R.softmaxRef(x.v, m, v, T), tol: softmaxTol(mx) }];
    },
  };
}

/** Margin (probability units) that u and the top-p / min-p cuts keep from decision boundaries, for exact picks. */
const SAMPLE_MARGIN = 1e-4;

type SampleRow = R.SampleParams;

function sampleInputs(env: CaseEnv, rows: SampleRow[]): { params: NativeTensor; topK: NativeTensor } {
  const m = rows.length;
  const pv = new Float32Array(m * 4);
  rows.forEach((r, i) => pv.set([r.temperature, r.topP, r.minP, r.u], i * 4));
  return {
    params: env.track(env.ctx.fromBuffer("f32", [m, 4], pv)),
    topK: env.ints([m], rows.map((r) => r.topK)),
  };
}

function rowOf(x: Float64Array, i: number, v: number): Float64Array {
  return x.subarray(i * v, (i + 1) * v);
}

/** Float32-rounded params, as the op sees them. */
function f32Row(r: SampleRow): SampleRow {
  const f = Math.fround;
  return { temperature: f(r.temperature), topP: f(r.topP), minP: f(r.minP), u: f(r.u), topK: r.topK };
}

/** Greedy rows (temperature 0 or below) and top_k = 1 rows: the pick is the first maximum, whatever u. */
function sampleGreedyCase(m: number, v: number): OpCase {
  return {
    name: `sample(greedy: temperature<=0 or top_k=1,M=${m},V=${v})`,
    op: "sample",
    build(env) {
      const xv = env.rng.normals(m * v, 2);
      // rows 1 and 4: the maximum appears twice -> the first index.
      xv[v + 10] = xv[v + v - 3] = 12;
      if (m > 4) xv[4 * v + 2] = xv[4 * v + 3] = 12;
      const logits = env.floats("f32", [m, v], xv);
      const rows: SampleRow[] = Array.from({ length: m }, (_, i) => ({
        temperature: i % 3 === 0 ? 0 : i % 3 === 1 ? -1 : 0.5 + env.rng.uniform() * 1.5,
        topP: i % 2 ? 0.9 : 1,
        minP: i % 4 === 3 ? 0.1 : 0,
        u: env.rng.uniform() * 0.999,
        topK: i % 3 === 2 ? 1 : 0,
      }));
      const { params, topK } = sampleInputs(env, rows);
      const out = env.out("i32", [m]);
      env.ctx.sample(out, logits.t, params, topK);
      return [{ name: "picks", mode: "exact", got: out.read(), ref: R.argmaxRef(logits.v, m, v) }];
    },
  };
}

/**
 * Fixed u with top-k / top-p / min-p: the pick equals the TS reference of the documented algorithm. Parameters
 * are redrawn (deterministically) while u or a cut lies within SAMPLE_MARGIN of a decision boundary, so that a
 * float32 implementation must agree exactly.
 */
function sampleFixedCase(m: number, v: number, opts: { peaky?: number } = {}): OpCase {
  return {
    name: `sample(fixed u,top-k/top-p/min-p,M=${m},V=${v})`,
    op: "sample",
    build(env) {
      const xv = env.rng.normals(m * v, 1.5);
      if (opts.peaky) for (let i = 0; i < m; ++i) for (let j = 0; j < opts.peaky; ++j) xv[i * v + env.rng.int(v)] += 12;
      const logits = env.floats("f32", [m, v], xv);
      const draw = (): SampleRow => {
        const pick = <T>(a: T[]) => a[env.rng.int(a.length)];
        return {
          temperature: pick([0.6, 0.8, 1, 1.3]),
          topP: pick([1, 0.95, 0.8, 0.5, 0.2]),
          minP: pick([0, 0, 0.05, 0.2]),
          u: env.rng.uniform(),
          topK: pick([0, 0, 1, 5, 20, 50]),
        };
      };
      const rows: SampleRow[] = [];
      const want: number[] = [];
      for (let i = 0; i < m; ++i) {
        for (let tries = 0; ; ++tries) {
          if (tries > 1000) throw new Error(`case setup: no sampling parameters with margin for row ${i}`);
          const r = f32Row(draw());
          const pk = R.sampleRef(rowOf(logits.v, i, v), r);
          if (pk.uMargin < SAMPLE_MARGIN || pk.cutMargin < SAMPLE_MARGIN) continue;
          rows.push(r);
          want.push(pk.id);
          break;
        }
      }
      const { params, topK } = sampleInputs(env, rows);
      const out = env.out("i32", [m]);
      env.ctx.sample(out, logits.t, params, topK);
      return [{ name: "picks", mode: "exact", got: out.read(), ref: want }];
    },
  };
}

/**
 * Distribution over many u: M rows of the same small-vocab logits, u drawn uniformly; the counts must follow the
 * renormalized candidate probabilities (chi-square below 30 for <= 5 degrees of freedom: p < 1e-4 by chance,
 * and the seed is fixed) and tokens cut by top-k / top-p / min-p never appear.
 */
function sampleDistributionCase(m: number): OpCase {
  const v = 8;
  return {
    name: `sample(distribution,M=${m},V=${v},top_k=6,top_p=0.97,min_p=0.02)`,
    op: "sample",
    build(env) {
      const row = [1.2, -0.3, 0.4, 2.0, -2.5, 0.9, 0.0, -4.0];
      const xv = new Float64Array(m * v);
      for (let i = 0; i < m; ++i) xv.set(row, i * v);
      const logits = env.floats("f32", [m, v], xv);
      const base = f32Row({ temperature: 0.9, topP: 0.97, minP: 0.02, u: 0, topK: 6 });
      const cand = R.sampleCandidates(rowOf(logits.v, 0, v), base);
      if (cand.cutMargin < 1e-3) throw new Error("case setup: the cuts are too close to their thresholds");
      const rows = Array.from({ length: m }, () => ({ ...base, u: Math.fround(env.rng.uniform()) }));
      const { params, topK } = sampleInputs(env, rows);
      const out = env.out("i32", [m]);
      env.ctx.sample(out, logits.t, params, topK);
      const verify = (got: ArrayLike<number>): string | null => {
        const counts = new Array<number>(v).fill(0);
        for (let i = 0; i < got.length; ++i) {
          if (!(got[i] >= 0 && got[i] < v)) return `pick ${got[i]} at row ${i} is not a token id`;
          counts[got[i]]++;
        }
        let chi2 = 0;
        for (let j = 0; j < v; ++j) {
          const c = cand.ids.indexOf(j);
          if (c < 0) {
            if (counts[j]) return `token ${j} was cut by top-k/top-p/min-p but picked ${counts[j]} times`;
            continue;
          }
          const e = cand.probs[c] * m;
          chi2 += (counts[j] - e) ** 2 / e;
        }
        if (cand.ids.length - 1 > 5) return `case setup: ${cand.ids.length} candidates`;
        return chi2 < 30 ? null : `chi-square ${chi2.toFixed(2)} >= 30 (counts ${counts}, expected ${cand.ids.map((id, c) => `${id}:${(cand.probs[c] * m).toFixed(1)}`)})`;
      };
      return [{ name: "picks", mode: "stat", got: out.read(), verify }];
    },
  };
}

/** A repetition-penalty list as the op gets it: ids (padded to the case's L), the row's length (may be < 0 or > L). */
interface PenaltyList {
  ids: number[];
  len: number;
  penalty: number;
}

interface SampleCaseRow {
  p: SampleRow;
  pen?: PenaltyList;
}

/** Margin for exact picks on rows whose kept set or pick lies past the 2048 candidates (the CUDA "deep" path: masses
 *  before its window come from f32 exponentials summed in 2^-42 fixed point, ~3e-7 relative for these rows). */
const SAMPLE_MARGIN_DEEP = 1e-5;

/**
 * Rows of one sample call, each with its own settings and optional repetition-penalty list. Penalty lists are
 * padded to the longest with the row's first-maximum id (entries past a row's length, which the op must ignore:
 * penalizing the maximum would change most picks). check "exact": each row's settings are redrawn while u or a
 * cut lies within `margin` of a decision boundary, and the picks must equal the reference's; { delta }: every pick
 * must be acceptable with every boundary misjudged by up to delta (R.samplePickWithin).
 */
function sampleRowsCase(
  name: string,
  m: number,
  v: number,
  logits: (rng: Rng, i: number) => Float64Array,
  draw: (rng: Rng, i: number, row: Float64Array) => SampleCaseRow,
  check: { margin: number } | { delta: number } = { margin: SAMPLE_MARGIN },
): OpCase {
  return {
    name: `sample(${name},M=${m},V=${v})`,
    op: "sample",
    build(env) {
      const xv = new Float64Array(m * v);
      for (let i = 0; i < m; ++i) xv.set(logits(env.rng, i), i * v);
      const lg = env.floats("f32", [m, v], xv);
      const rows: SampleCaseRow[] = [];
      const refRows: Float64Array[] = [];
      const want: number[] = [];
      let L = 0;
      const listOf = (r: SampleCaseRow, row: Float64Array): number[] => {
        if (!r.pen) return [];
        const pad = R.argmaxRef(row, 1, v)[0];
        const padded = [...r.pen.ids];
        while (padded.length < L) padded.push(pad);
        return padded.slice(0, Math.min(Math.max(r.pen.len, 0), L));
      };
      // Lists first (L is the longest), then the margins, which depend on the penalized rows.
      const drawn: SampleCaseRow[] = [];
      const rowArr = Array.from({ length: m }, (_, i) => rowOf(lg.v, i, v));
      for (let i = 0; i < m; ++i) {
        drawn.push(draw(env.rng, i, rowArr[i]));
        L = Math.max(L, drawn[i].pen?.ids.length ?? 0);
      }
      for (let i = 0; i < m; ++i) {
        const row = rowArr[i];
        for (let tries = 0; ; ++tries) {
          if (tries > 1000) throw new Error(`case setup: no sampling parameters with margin for row ${i}`);
          const r: SampleCaseRow = tries === 0 ? drawn[i] : { ...draw(env.rng, i, row), pen: drawn[i].pen };
          const p = f32Row(r.p);
          const pr = r.pen ? R.penalizeRef(row, listOf(r, row), r.pen.penalty) : row;
          if ("margin" in check) {
            const pk = R.sampleRef(pr, p);
            if (pk.uMargin < check.margin || pk.cutMargin < check.margin) continue;
            want.push(pk.id);
          }
          rows.push({ ...r, p });
          refRows.push(pr);
          break;
        }
      }
      const anyPen = rows.some((r) => r.pen);
      const pc = anyPen ? 5 : 4;
      const pv = new Float32Array(m * pc);
      rows.forEach((r, i) => pv.set([r.p.temperature, r.p.topP, r.p.minP, r.p.u, ...(anyPen ? [r.pen?.penalty ?? 1] : [])], i * pc));
      const params = env.track(env.ctx.fromBuffer("f32", [m, pc], pv));
      const topK = env.ints([m], rows.map((r) => r.p.topK));
      let penIds: NativeTensor | null = null, penLen: NativeTensor | null = null;
      if (anyPen) {
        const ids = new Int32Array(m * Math.max(L, 1));
        rows.forEach((r, i) => {
          const pad = R.argmaxRef(rowOf(lg.v, i, v), 1, v)[0];
          for (let j = 0; j < Math.max(L, 1); ++j) ids[i * Math.max(L, 1) + j] = r.pen && j < r.pen.ids.length ? r.pen.ids[j] : pad;
        });
        penIds = env.track(env.ctx.fromBuffer("i32", [m, Math.max(L, 1)], ids));
        penLen = env.ints([m], rows.map((r) => (r.pen ? r.pen.len : 0)));
      }
      const out = env.out("i32", [m]);
      env.ctx.sample(out, lg.t, params, topK, penIds, penLen);
      if ("margin" in check) return [{ name: "picks", mode: "exact", got: out.read(), ref: want }];
      const verify = (got: ArrayLike<number>): string | null => {
        for (let i = 0; i < m; ++i) {
          const e = R.samplePickWithin(refRows[i], rows[i].p, got[i], check.delta);
          if (e) return `row ${i}: ${e}`;
        }
        return null;
      };
      return [{ name: "picks", mode: "stat", got: out.read(), verify }];
    },
  };
}

const sortedIds = new WeakMap<Float64Array, number[]>();
/** Ids of a row, largest logit first (the reference's order for a temperature > 0); memoized per row. */
function topIds(row: Float64Array, n: number): number[] {
  let ids = sortedIds.get(row);
  if (!ids) sortedIds.set(row, (ids = Array.from({ length: row.length }, (_, j) => j).sort((a, b) => row[b] - row[a] || a - b)));
  return ids.slice(0, n);
}

/** x jittered by up to +-5 % (cut margins depend on the threshold, not on u: a redraw must move it). */
function jitter(rng: Rng, x: number): number {
  return x * (1 + 0.1 * (rng.uniform() - 0.5));
}

/** LLM-like rows: normal(0, 2) logits with 30 tokens lifted by 12..18 (a head holding ~99 % of the mass over a long
 *  flat tail; with a lift of 6..12 the tail held most of it and no top-p cut kept a margin from its threshold). */
function peakyLogits(v: number) {
  return (rng: Rng): Float64Array => {
    const x = rng.normals(v, 2);
    for (let j = 0; j < 30; ++j) x[rng.int(v)] += 12 + 6 * rng.uniform();
    return x;
  };
}

/** The settings a server sees at once, one per row in turn (greedy, the usual cuts, a penalty with each). */
function batchSettings(rng: Rng, i: number, row: Float64Array): SampleCaseRow {
  const u = rng.uniform();
  const top = () => topIds(row, 8);
  const pen = (penalty: number): PenaltyList => {
    const ids = [...top().slice(0, 3), ...Array.from({ length: 12 }, () => rng.int(row.length))];
    return { ids, len: ids.length, penalty };
  };
  const base = { temperature: 1, topP: 1, minP: 0, u, topK: 0 };
  switch (i % 9) {
    case 0: return { p: { ...base, temperature: 0 } };
    case 1: return { p: { ...base, temperature: 0.8, topP: jitter(rng, 0.8) } };
    case 2: return { p: { ...base, topK: 40 } };
    case 3: return { p: { ...base, minP: jitter(rng, 0.05) } };
    case 4: return { p: { ...base, temperature: 0.7, topP: jitter(rng, 0.9), topK: 50, minP: jitter(rng, 0.02) } };
    case 5: return { p: base };
    case 6: return { p: { ...base, temperature: 0.6, topK: 1 } };
    case 7: return { p: { ...base, temperature: 1.1, topP: jitter(rng, 0.9) }, pen: pen(1.3) };
    default: return { p: { ...base, temperature: 0 }, pen: pen(1.2) };
  }
}

/** Repetition penalty: penalties above and below 1, positive and negative logits, greedy and sampled rows, repeats,
 *  ids outside [0, V), lengths below 0, shorter than the list (padding ignored) and longer than L (clamped). */
function penaltySettings(rng: Rng, i: number, row: Float64Array): SampleCaseRow {
  const v = row.length;
  const t = topIds(row, v);
  const u = rng.uniform();
  const base = { temperature: 1, topP: 1, minP: 0, u, topK: 0 };
  const some = (n: number) => Array.from({ length: n }, () => rng.int(v));
  switch (i % 8) {
    case 0: return { p: { ...base, temperature: 0 }, pen: { ids: [t[0], t[0], -1, 5], len: 4, penalty: 1.5 } };
    case 1: return { p: { ...base, temperature: 0 }, pen: { ids: [t[3], t[v - 1]], len: 2, penalty: 0.4 } };
    case 2: return { p: { ...base, temperature: 0.8, topP: jitter(rng, 0.9) }, pen: { ids: [...t.slice(0, 3), ...some(17)], len: 20, penalty: 1.3 } };
    case 3: return { p: { ...base, topK: 10 }, pen: { ids: [...t.slice(0, 4), ...some(26)], len: 33, penalty: 2 } };
    case 4: return { p: { ...base, temperature: 0.7, minP: jitter(rng, 0.1) }, pen: { ids: t.slice(0, 5), len: -3, penalty: 1.2 } };
    case 5: return { p: { ...base, temperature: 1.2 }, pen: { ids: t.slice(0, 5), len: 5, penalty: 1 } };
    case 6: return { p: { ...base, temperature: 0.9, topK: 5 }, pen: { ids: [v, v + 5, -7, t[0]], len: 4, penalty: 1.8 } };
    default: return { p: { ...base, topP: jitter(rng, 0.7) }, pen: { ids: [t[v - 1], t[v - 2], t[0], t[1]], len: 3, penalty: 1.25 } };
  }
}

/** NaN, +Inf and -Inf logits: the CPU's sum is NaN (NaN or +Inf present, or no logit above -Inf) and its loops pick
 *  (min_p > 0 ? 1 : top-k or V) - 1; greedy ignores NaN unless it is at index 0. */
function nanLogits(v: number) {
  return (rng: Rng, i: number): Float64Array => {
    const x = rng.normals(v, 2);
    const at = (f: number) => Math.min(v - 1, Math.floor(f * v));
    switch (i % 10) {
      case 0: x[at(0.5)] = NaN; break;
      case 1: x[0] = NaN; break;
      case 2: x[at(0.7)] = NaN; break;
      case 3: x[at(0.01)] = NaN; break;
      case 4: x[at(0.3)] = Infinity; break;
      case 5: x.fill(-Infinity); break;
      case 6: for (let j = 0; j < v; j += 2) x[j] = -Infinity; break;
      case 7: x[at(0.99)] = Infinity; break;
      case 8: x[at(0.95)] = NaN; x[at(0.2)] = Infinity; break;
      default: x[at(0.6)] = NaN; x[at(0.1)] = -Infinity; break;
    }
    return x;
  };
}
function nanSettings(rng: Rng, i: number): SampleCaseRow {
  const base = { temperature: 1, topP: 1, minP: 0, u: rng.uniform(), topK: 0 };
  const s: SampleRow[] = [
    { ...base, temperature: 0 },
    { ...base, temperature: 0 },
    base,
    { ...base, temperature: 0.8, minP: jitter(rng, 0.1) },
    { ...base, topK: 50 },
    { ...base, topP: jitter(rng, 0.9) },
    { ...base, topK: 20 },
    { ...base, temperature: 0 },
    { ...base, topK: 7, topP: 0.5 },
    { ...base, temperature: 0.5, topK: 3 },
  ];
  return { p: s[i % 10] };
}

/** Flat rows (normal(0, 0.5) logits): kept sets and picks thousands of tokens deep (the CUDA deep path). Row 3 has
 *  two clusters of 3000 (logits near 0 and near -3), so that a min-p cut between them keeps a margin. */
function flatLogits(v: number) {
  return (rng: Rng, i: number): Float64Array => {
    if (i % 6 !== 3) return rng.normals(v, 0.5);
    const x = rng.normals(v, 0.1);
    for (let j = 0; j < v; j += 2) x[j] -= 3;
    return x;
  };
}
function flatSettings(rng: Rng, i: number, row: Float64Array): SampleCaseRow {
  const base = { temperature: 1, topP: 1, minP: 0, u: 0.3 + 0.65 * rng.uniform(), topK: 0 };
  switch (i % 6) {
    case 0: return { p: base };
    case 1: return { p: { ...base, topK: 3000 } };
    case 2: return { p: { ...base, temperature: 0.9, topP: 0.85 + 0.1 * rng.uniform() } };
    case 3: return { p: { ...base, minP: jitter(rng, 0.15) } };
    case 4: return { p: { ...base, temperature: 1.1, topK: 2500, topP: jitter(rng, 0.7) } };
    default: {
      const ids = Array.from({ length: 100 }, () => rng.int(row.length));
      return { p: { ...base, topK: 4000 }, pen: { ids, len: 100, penalty: 1.5 } };
    }
  }
}

/** The GLM-4 vocabulary, flat: every pick needs the refinement by key digits; row 3 has one logit value only. */
function flatBigLogits(v: number) {
  return (rng: Rng, i: number): Float64Array => (i % 4 === 3 ? new Float64Array(v).fill(0.25) : rng.normals(v, 0.3));
}
function flatBigSettings(rng: Rng, i: number): SampleCaseRow {
  const base = { temperature: 1, topP: 1, minP: 0, u: rng.uniform(), topK: 0 };
  const s: SampleRow[] = [base, { ...base, topP: 0.9 }, { ...base, topK: 5000, minP: 0.3 }, { ...base, topK: 100000 }];
  return { p: s[i % 4] };
}


// ------------------------------------------------------------------ cases: convert, fill_random, copy

/** Interesting float32 inputs (as bits): specials, format boundaries, exact ties for bf16 and f16, random bits. */
function convertF32Inputs(rng: Rng): Uint32Array {
  const v: number[] = [0, -0, Infinity, -Infinity, NaN, -NaN, 1, -1, 3.4028234663852886e38, -3.4028234663852886e38];
  v.push(f32FromBits(1), f32FromBits(0x807fffff), 1.1754943508222875e-38);
  // bf16: ties (exactly half way between two bf16) in both parities, just above/below, and the overflow edge.
  for (const b of [0x3f80, 0x3f81, 0x4049, 0xc2f7, 0x0001, 0x0080, 0x7f7e, 0x7f7f]) {
    const tie = (b << 16) | 0x8000;
    v.push(f32FromBits(tie), f32FromBits(tie + 1), f32FromBits(tie - 1), f32FromBits(tie | 0x80000000));
  }
  // f16: max 65504, the overflow tie 65520, subnormal ties, smallest subnormal and its half.
  v.push(65504, 65519, 65519.99609375, 65520, 65536, -65520, 1e5, 6.103515625e-5, 6.097555160522461e-5);
  for (let m = 0; m < 8; ++m) v.push((m + 0.5) * 2 ** -24, -(m + 0.5) * 2 ** -24, (m + 0.25) * 2 ** -24, (m + 0.75) * 2 ** -24);
  v.push(2 ** -25, 2 ** -26, 3 * 2 ** -26, 2 ** -25 * (1 + 2 ** -20), 2 ** -14 - 2 ** -25);
  for (let e = -14; e <= 15; ++e) {
    const q = 2 ** (e - 10);
    for (const m of [1024, 1025, 1500, 2047]) v.push((m + 0.5) * q, -(m + 0.5) * q, (m + 0.5) * q * (1 + 2 ** -22));
  }
  // log-uniform magnitudes across both formats' ranges, and raw random bit patterns (NaN payloads, subnormals).
  for (let i = 0; i < 4000; ++i) v.push((rng.uniform() < 0.5 ? -1 : 1) * 2 ** (-30 + 50 * rng.uniform()));
  const bits = v.map(f32Bits);
  bits.push(0x7f800001, 0xffc00001, 0x7fbfffff); // NaN payloads, signalling and quiet
  for (let i = 0; i < 8000; ++i) bits.push(rng.u32()); // raw patterns: subnormals, NaNs, everything
  return Uint32Array.from(bits);
}

function convertCase(from: FloatDType, to: FloatDType): OpCase {
  return {
    name: `convert(${from}->${to})`,
    op: "convert",
    build(env) {
      let inBits: Uint16Array | Uint32Array;
      let inT: NativeTensor;
      if (from === "f32") {
        inBits = convertF32Inputs(env.rng);
        inT = env.track(env.ctx.fromBuffer("f32", [inBits.length], inBits));
      } else {
        // every bit pattern of the 16-bit format
        inBits = Uint16Array.from({ length: 65536 }, (_, i) => i);
        inT = env.track(env.ctx.fromBuffer(from, [256, 256], inBits));
      }
      const n = inBits.length;
      const values = from === "f32" ? Float64Array.from(new Float32Array(inBits.buffer)) : decodeFloats(from, inBits);
      const out = env.out(to, from === "f32" ? [n] : [65536]);
      env.ctx.convert(out, inT);
      // Conversion to a wider or equal format is exact; to a narrower one it rounds to nearest even. NaN stays NaN
      // (the payload and sign of a NaN are not specified).
      return [{ name: "out", mode: "exact", got: readBits(out), ref: bitsOf(to, values), nanClass: to }];
    },
  };
}

function fillRandomCase(dtype: "f32" | "bf16", n: number, mean: number, std: number, seed: number): OpCase {
  return {
    name: `fill_random(${dtype},n=${n},mean=${mean},std=${std},seed=${seed})`,
    op: "fill_random",
    build(env) {
      const a = env.out(dtype, [n]);
      const b = env.out(dtype, [n]);
      const prefix = env.out(dtype, [Math.min(n, 1000)]);
      const other = env.out(dtype, [n]);
      env.ctx.fillRandom(a, seed, mean, std);
      env.ctx.fillRandom(b, seed, mean, std);
      env.ctx.fillRandom(prefix, seed, mean, std);
      env.ctx.fillRandom(other, seed + 1, mean, std);
      const av = readF64(a);
      const ov = readF64(other);
      const stats = (got: ArrayLike<number>): string | null => {
        let s = 0;
        let s2 = 0;
        let within = 0;
        for (let i = 0; i < got.length; ++i) {
          if (!Number.isFinite(got[i])) return `non-finite ${got[i]} at ${i}`;
          s += got[i];
        }
        const m = s / got.length;
        for (let i = 0; i < got.length; ++i) {
          s2 += (got[i] - m) ** 2;
          if (Math.abs(got[i] - mean) <= std) ++within;
        }
        const sd = Math.sqrt(s2 / (got.length - 1));
        if (std === 0) return m === Math.fround(mean) && sd === 0 ? null : `std 0 should give the mean everywhere (got mean ${m}, sd ${sd})`;
        // 6-sigma bounds for a fixed seed (bf16 rounding adds < std * 2^-8 of bias at most)
        const tolMean = (6 * std) / Math.sqrt(got.length) + (dtype === "bf16" ? Math.abs(mean) * 2 ** -8 : 0);
        const tolSd = (6 * std) / Math.sqrt(2 * got.length) + (dtype === "bf16" ? std * 2 ** -7 : 0);
        const frac = within / got.length;
        const tolFrac = 6 * Math.sqrt((0.6827 * 0.3173) / got.length) + (dtype === "bf16" ? 0.05 : 0);
        if (Math.abs(m - mean) > tolMean) return `mean ${m} not within ${tolMean} of ${mean}`;
        if (Math.abs(sd - std) > tolSd) return `std ${sd} not within ${tolSd} of ${std}`;
        if (Math.abs(frac - 0.6827) > tolFrac) return `fraction within one std ${frac}, expected 0.6827 +- ${tolFrac}`;
        return null;
      };
      const outs: Output[] = [
        // CPU and CUDA share the counter-based generator; they may differ by libm's last bits (logf/cosf).
        { name: "stats", mode: "stat", got: av, verify: stats, cross: { cpu: 0, gpu: dtype === "f32" ? 1e-10 : 1e-6 } },
        { name: "same seed, same values", mode: "exact", got: readBits(b), ref: readBits(a), cross: "skip" },
        { name: "a shorter fill is a prefix", mode: "exact", got: readBits(prefix), ref: readBits(a).slice(0, Math.min(n, 1000)), cross: "skip" },
      ];
      if (std > 0)
        outs.push({
          name: "seed + 1 differs",
          mode: "stat",
          got: ov,
          verify: (got) => {
            let same = 0;
            for (let i = 0; i < got.length; ++i) if (got[i] === av[i]) ++same;
            // bf16 has few values within a few std of the mean: equal neighbours are common there
            const maxSame = dtype === "f32" ? got.length / 50 : got.length * 0.6;
            return same <= maxSame ? null : `${same} of ${got.length} values equal those of the previous seed`;
          },
        });
      return outs;
    },
  };
}

function copyCase(dtype: DType, shape: number[], dstShape: number[] = shape): OpCase {
  return {
    name: `copy(${dtype},[${shape}]->[${dstShape}])`,
    op: "copy",
    build(env) {
      const nb = dtype === "i4" ? Math.ceil(numel(shape) / 2) : numel(shape) * (dtype === "f32" || dtype === "i32" ? 4 : dtype === "u8" ? 1 : 2);
      // random bytes (for float dtypes that includes NaN payloads and subnormals: a copy moves bits, not values)
      const data = new Uint8Array(nb);
      for (let i = 0; i < nb; ++i) data[i] = env.rng.u32() & 0xff;
      const src = env.track(env.ctx.fromBuffer(dtype, shape, data));
      const dst = env.out(dtype, dstShape);
      env.ctx.copy(dst, src);
      return [{ name: "dst", mode: "exact", got: new Uint8Array(readBits(dst).buffer), ref: data }];
    },
  };
}

/** copy into a row range (slice0 view) of a bigger tensor: only those rows change. */
function copySliceCase(): OpCase {
  return {
    name: "copy(f32,[3,8]->rows 2..4 of [9,8])",
    op: "copy",
    build(env) {
      const big = env.randn("f32", [9, 8]);
      const src = env.randn("f32", [3, 8]);
      const view = env.track(big.t.slice0(2, 5));
      env.ctx.copy(view, src.t);
      const want = Float64Array.from(big.v);
      want.set(src.v, 16);
      return [{ name: "big", mode: "exact", got: readF64(big.t), ref: want }];
    },
  };
}

// ------------------------------------------------------------------ the table

const G_ALL = [32, 64, 128] as const;
const M_ALL = [1, 3, 17, 118];

function buildTable(): OpCase[] {
  const c: OpCase[] = [];
  // embedding (odd T; ids include 0, V-1 and a repeat)
  c.push(embeddingCase(1, 37, 64, "bf16"), embeddingCase(3, 1000, 200, "bf16"), embeddingCase(17, 37, 96, "f32"), embeddingCase(5, 151, 33, "f32"));
  // rmsnorm (odd T and M = 118; GLM-4's eps; aliasing)
  c.push(
    rmsnormCase(1, 128, "bf16", 1.5625e-7),
    rmsnormCase(3, 200, "f32", 1e-5),
    rmsnormCase(17, 96, "bf16", 1.5625e-7, { tinyRow: true }),
    rmsnormCase(118, 64, "f32", 1.5625e-7),
    rmsnormCase(17, 33, "bf16", 1e-6, { alias: true }),
    rmsnormCase(3, 4096, "f32", 1.5625e-7, { alias: true }), // CUDA's register form (H = 1024 V), out aliasing x
  );
  // add_rmsnorm: GLM-4's H and eps at decode and odd T, tiny and odd H, both weight dtypes, aliasing
  c.push(
    addRmsnormCase(1, 4096, "bf16", 1.5625e-7),
    addRmsnormCase(17, 4096, "f32", 1.5625e-7),
    addRmsnormCase(3, 33, "bf16", 1e-5),
    addRmsnormCase(118, 64, "f32", 1e-6),
    addRmsnormCase(5, 7, "bf16", 1.5625e-7, "out=x"),
    addRmsnormCase(3, 300, "f32", 1.5625e-7, "out=o"),
    addRmsnormCase(4, 2048, "bf16", 1e-6, "out=o"), // CUDA's register form with V = 2, out aliasing o
  );
  // quantize / dequantize: every group size, every input dtype
  c.push(
    quantizeCase(5, 256, 32, "bf16"),
    quantizeCase(3, 384, 128, "f32"),
    quantizeCase(7, 192, 64, "f16"),
    quantizeCase(5, 256, 64, "bf16", "special"),
    quantizeCase(5, 128, 32, "f32", "special"),
    quantizeCase(5, 256, 128, "f16", "special"),
    // the other schemes and activation-aware column factors (issue 15): every group size, bf16 and f32 weights
    quantizeCase(5, 256, 32, "bf16", "normal", 1),
    quantizeCase(3, 384, 128, "f32", "special", 1),
    quantizeCase(7, 192, 64, "bf16", "normal", 2),
    quantizeCase(5, 256, 32, "f32", "special", 2),
    quantizeCase(5, 384, 128, "f32", "special", 2),
    quantizeCase(5, 256, 64, "bf16", "normal", 0, true),
    quantizeCase(3, 256, 128, "f16", "normal", 1, true),
    quantizeCase(4, 192, 32, "f32", "normal", 2, true),
  );
  for (const g of G_ALL) c.push(dequantizeCase(5, 2 * g + 128, g, "f32"));
  c.push(dequantizeCase(3, 256, 64, "bf16"), dequantizeCase(2, 128, 128, "bf16"));
  // NF4 (codebook 1): the table itself (unit scales, every code appears), then scaled groups with some zeros
  c.push(dequantizeCase(2, 64, 32, "f32", 1, true), dequantizeCase(5, 384, 128, "f32", 1), dequantizeCase(3, 128, 64, "bf16", 1));
  // layout 1 (the CUDA kernel layout): repack both ways, dequantize from it (both codebooks)
  c.push(repackCase(16, 64, 64), repackCase(48, 192, 32), repackCase(80, 256, 128), repackCase(32, 384, 64, 1));
  c.push(
    dequantizeCase(48, 256, 128, "f32", 0, false, 1),
    dequantizeCase(16, 192, 32, "bf16", 0, false, 1),
    dequantizeCase(32, 128, 64, "bf16", 1, false, 1),
  );
  // matmul_int4: every M for every group size; N and K tails (odd N, K = 3 groups); biases; given codes; a GEMV
  for (const g of G_ALL) for (const m of M_ALL) c.push(matmulInt4Case(m, 96, 256, g));
  c.push(
    matmulInt4Case(3, 97, 96, 32, { bias: "f32" }),
    matmulInt4Case(17, 33, 192, 64, { bias: "bf16" }),
    matmulInt4Case(1, 101, 384, 128, { bias: "bf16" }),
    matmulInt4Case(17, 64, 128, 32, { given: true }),
    matmulInt4Case(118, 40, 256, 128, { given: true, bias: "f32" }),
    matmulInt4Case(1, 512, 1024, 128),
    matmulInt4Case(1, 96, 256, 128, { nf4: true }),
    matmulInt4Case(17, 33, 192, 64, { nf4: true, bias: "bf16" }),
  );
  // matmul_int4 through the layout-1 tensor-core GEMM (CUDA; M > 8): M no multiple of any tile (9, 17, 118, 2049),
  // one token tile exactly (64, 128), N a multiple of 16 only, K = 3 or 5 steps of 64, every group size, biases,
  // x given in bf16 (skipping the conversion), a K long enough for K splits.
  c.push(
    gemmInt4Case(9, 80, 192, 64),
    gemmInt4Case(17, 208, 320, 32, { bias: "bf16" }),
    gemmInt4Case(64, 48, 256, 128),
    gemmInt4Case(118, 272, 384, 64, { bias: "f32" }),
    gemmInt4Case(128, 96, 512, 128, { xbf16: true }),
    gemmInt4Case(33, 64, 2048, 128, { xbf16: true, bias: "bf16" }),
    gemmInt4Case(2049, 144, 192, 32),
    gemmInt4Case(40, 112, 256, 64, { nf4: true, bias: "bf16" }),
    gemmInt4Case(17, 208, 320, 32, { xbf16: true, outbf16: true, bias: "bf16" }),
    gemmInt4Case(33, 64, 2048, 128, { xbf16: true, outbf16: true }),
    gemmInt4Case(2049, 144, 192, 32, { outbf16: true }),
    linearInt4Case(17, 208, 320, 32, { mode: 1, xbf16: true, bias: "bf16" }),
    linearInt4Case(64, 48, 256, 128, { mode: 1, xbf16: true }),
    linearInt4Case(118, 272, 384, 64, { mode: 0, xbf16: true, bias: "f32" }),
    linearInt4Case(33, 64, 2048, 128, { mode: 1, xbf16: true }),
    linearInt4Case(2049, 144, 192, 32, { mode: 1, xbf16: true }),
  );
  // matmul_int4 through the layout-1 GEMV on CUDA: M = 1, 3, 8 and 17 (launches of 8, 8, 1), N a multiple of 16 but
  // not of 64, every group size, biases, NF4
  c.push(
    matmulInt4Case(1, 48, 256, 128, { layout1: true }),
    matmulInt4Case(3, 80, 192, 64, { layout1: true, bias: "bf16" }),
    matmulInt4Case(8, 208, 128, 32, { layout1: true, bias: "f32" }),
    matmulInt4Case(17, 48, 320, 64, { layout1: true }),
    matmulInt4Case(1, 512, 1024, 128, { layout1: true }),
    matmulInt4Case(3, 96, 256, 32, { nf4: true }),
  );
  // linear_int4: each mode with and without the norm prologue and bias; M = 1, 3, 8, 17; every group size; NF4;
  // N a multiple of 16 not of 64; swiglu with N/2 a multiple of 16
  c.push(
    linearInt4Case(1, 48, 256, 128, { mode: 0 }),
    linearInt4Case(3, 80, 256, 64, { mode: 0, norm: "bf16", bias: "bf16" }),
    linearInt4Case(8, 208, 192, 32, { mode: 0, norm: "f32", bias: "f32" }),
    linearInt4Case(1, 96, 512, 128, { mode: 1 }),
    linearInt4Case(8, 48, 320, 64, { mode: 1, bias: "f32" }),
    linearInt4Case(3, 160, 128, 32, { mode: 2, norm: "bf16" }),
    linearInt4Case(1, 224, 256, 128, { mode: 2, norm: "bf16" }),
    linearInt4Case(8, 96, 256, 64, { mode: 2, norm: "f32", bias: "bf16" }),
    linearInt4Case(17, 64, 192, 64, { mode: 1, norm: "bf16", bias: "bf16" }),
    linearInt4Case(3, 80, 256, 128, { mode: 0, norm: "bf16", nf4: true }),
    linearInt4Case(8, 96, 128, 32, { mode: 2, nf4: true }),
    // K long enough that the v3 GEMV (GLM4_GEMV_PLAN=v3, csrc/cuda/gemv_v3.cuh) splits K across blocks (C = 2, 4, 8
    // chunks: the workspace, the tickets and the chunk sums of x^2 of the norm)
    linearInt4Case(8, 48, 1024, 64, { mode: 1, bias: "f32" }),
    linearInt4Case(3, 64, 2048, 128, { mode: 0, norm: "bf16", bias: "bf16" }),
    linearInt4Case(1, 32, 8192, 32, { mode: 0, norm: "f32" }),
  );
  // matmul with bf16 / f32 weights, K and N tails, biases
  c.push(
    matmulCase(1, 96, 256, "bf16"),
    matmulCase(3, 97, 100, "f32", "f32"),
    matmulCase(17, 64, 33, "bf16", "bf16"),
    matmulCase(118, 96, 256, "bf16", "bf16"),
    matmulCase(118, 33, 129, "f32"),
    matmulCase(1, 5, 7, "f32", "bf16"),
    matmulCase(1, 64, 1000, "bf16"),
  );
  c.push(addBiasCase(1, 96, "bf16"), addBiasCase(17, 97, "f32"), addBiasCase(118, 64, "bf16"), addBiasCase(3, 5, "f32"));
  // rotary: GLM-4 (rot = D/2, theta 10000 * 500), full rotation, the smallest rot, deep positions
  c.push(
    rotaryCase(1, 2, 128, 64, 5e6, [1500]),
    rotaryCase(3, 4, 64, 32, 5e6, "causal"),
    rotaryCase(17, 2, 32, 16, 1e4, { below: 4096 }),
    rotaryCase(17, 3, 64, 64, 1e4, { below: 64 }),
    rotaryCase(5, 2, 128, 64, 5e6, [131071, 100000, 65536, 77777, 4097]),
    rotaryCase(3, 2, 32, 2, 5e6, [1, 2, 3]),
    rotaryCase(17, 32, 128, 64, 5e6, "causal"),
  );
  // rotary_kv_write: GLM-4 dims (D 128, rot 64, Hq 32, Hkv 2) at decode and odd prefill T; tiny and odd dims
  // (D = 7: a single-element last pair), full rotation; both cache dtypes
  c.push(
    rotaryKvWriteCase(1, 32, 2, 128, 64, 64, "bf16"),
    rotaryKvWriteCase(17, 32, 2, 128, 64, 40, "f32"),
    rotaryKvWriteCase(3, 32, 2, 128, 64, 9, "bf16"),
    rotaryKvWriteCase(5, 4, 2, 8, 4, 11, "f32", 1e4),
    rotaryKvWriteCase(3, 2, 1, 7, 2, 5, "bf16", 1e4),
    rotaryKvWriteCase(7, 6, 3, 16, 16, 13, "bf16", 1e4),
  );
  // rotary_kv_write_qkv (the packed form after the fused QKV GEMM of a prefill chunk or a batch > 8): GLM-4 dims at
  // decode and prefill T (130: past one launch's rows of 256-thread blocks), odd D, full rotation, both caches
  c.push(
    rotaryKvWriteQkvCase(1, 32, 2, 128, 64, 64, "bf16"),
    rotaryKvWriteQkvCase(17, 32, 2, 128, 64, 40, "f32"),
    rotaryKvWriteQkvCase(130, 32, 2, 128, 64, 300, "bf16"),
    rotaryKvWriteQkvCase(5, 4, 2, 8, 4, 11, "f32", 1e4),
    rotaryKvWriteQkvCase(3, 2, 1, 7, 2, 5, "bf16", 1e4),
    rotaryKvWriteQkvCase(7, 6, 3, 16, 16, 13, "bf16", 1e4),
    // rot_dim % 4 == 2 (CUDA's float4 form rotates the first pair of the last float4 only), f32 cache
    rotaryKvWriteQkvCase(9, 4, 2, 8, 6, 12, "f32", 1e4),
    rotaryKvWriteQkvCase(33, 32, 2, 128, 64, 70, "f32"),
    // a bf16 qkv (the QKV GEMM's bf16 output at T > 8): GLM-4 dims past 256 tokens (CUDA: 4 groups a thread) and at
    // decode T (2 a thread), rot % 4 == 2, odd D (CUDA's scalar form), both caches
    rotaryKvWriteQkvCase(300, 32, 2, 128, 64, 320, "bf16", 5e6, "bf16"),
    rotaryKvWriteQkvCase(17, 32, 2, 128, 64, 40, "f32", 5e6, "bf16"),
    rotaryKvWriteQkvCase(9, 4, 2, 8, 6, 12, "bf16", 1e4, "bf16"),
    rotaryKvWriteQkvCase(3, 2, 1, 7, 2, 5, "f32", 1e4, "bf16"),
  );
  // kv_write: odd T, scattered positions incl. 0 and S-1, both cache dtypes, the very last row
  c.push(kvWriteCase(3, 2, 64, 40, "bf16"), kvWriteCase(17, 4, 32, 64, "f32"), kvWriteCase(1, 2, 128, 2048, "bf16", [2047]), kvWriteCase(5, 1, 128, 9, "f32"));
  // attention decode: GQA 1, 4, 16; D 32, 64, 128; deep positions; both caches; the first token
  c.push(
    attentionDecodeCase(2, 2, 128, 1037, 1100, "bf16"),
    attentionDecodeCase(8, 2, 64, 700, 800, "f32"),
    attentionDecodeCase(32, 2, 128, 1500, 1600, "bf16"),
    attentionDecodeCase(16, 1, 32, 333, 400, "f32"),
    attentionDecodeCase(4, 4, 32, 0, 8, "bf16"),
    attentionDecodeCase(8, 2, 128, 4095, 4096, "bf16"),
    attentionDecodeCase(32, 2, 64, 2500, 2600, "f32"),
  );
  // attention prefill: causal from 0, and an offset start over a cache prefilled earlier
  c.push(
    attentionPrefillCase(17, 8, 2, 64, 0, 32, "bf16"),
    attentionPrefillCase(17, 32, 2, 128, 0, 17, "f32"),
    attentionPrefillCase(3, 2, 2, 32, 0, 8, "f32"),
    attentionPrefillCase(7, 8, 2, 64, 5, 16, "bf16"),
    attentionPrefillCase(9, 32, 2, 128, 5, 20, "f32"),
    attentionPrefillCase(5, 4, 4, 32, 5, 12, "bf16"),
    attentionPrefillCase(1, 16, 1, 64, 5, 8, "f32"),
  );
  // attention through a block table (issue 14): decode batches (one query per sequence) of B = 1, 3, 17 with lengths
  // around the tile and block edges up to 8192; GQA 1, 2, 3 (not a power of two), 16, 24 (two 16-head tiles);
  // D 32, 64, 128 and 80 (the plain fallback); both cache dtypes; every block size from 16 to 256.
  c.push(
    attentionPagedCase({ lens: [8192], t: 1, hq: 32, hkv: 2, d: 128, bs: 64, cache: "bf16", seq: false }),
    attentionPagedCase({ lens: [1, 64, 1000], t: 1, hq: 32, hkv: 2, d: 128, bs: 16, cache: "bf16", seq: true }),
    attentionPagedCase({ lens: Array.from({ length: 17 }, (_, i) => [1, 63, 64, 65, 1000, 8192][i % 6]), t: 1, hq: 16, hkv: 1, d: 64, bs: 64, cache: "bf16", seq: true }),
    attentionPagedCase({ lens: [65, 300, 7], t: 1, hq: 8, hkv: 4, d: 32, bs: 32, cache: "f32", seq: true }),
    attentionPagedCase({ lens: [129, 1], t: 1, hq: 2, hkv: 2, d: 128, bs: 256, cache: "bf16", seq: true }),
    attentionPagedCase({ lens: [500, 77], t: 1, hq: 6, hkv: 2, d: 80, bs: 16, cache: "bf16", seq: true }),
    attentionPagedCase({ lens: [3000], t: 1, hq: 48, hkv: 2, d: 64, bs: 128, cache: "bf16", seq: false }),
    // prefill: T = 17, 118 (a chunk over a cached prefix of 1000), 2049 (no multiple of any tile); a handful of
    // tokens (the decode kernel's range); chunks of several sequences, in order and interleaved (tiles that mix
    // sequences); GQA 1
    attentionPagedCase({ lens: [17], t: 17, hq: 32, hkv: 2, d: 128, bs: 16, cache: "bf16", seq: false }),
    attentionPagedCase({ lens: [1118], t: 118, hq: 8, hkv: 2, d: 64, bs: 64, cache: "bf16", seq: false }),
    attentionPagedCase({ lens: [2049], t: 2049, hq: 2, hkv: 1, d: 32, bs: 256, cache: "bf16", seq: false }),
    attentionPagedCase({ lens: [70], t: 3, hq: 16, hkv: 1, d: 128, bs: 32, cache: "bf16", seq: false }),
    attentionPagedCase({ lens: [150, 400, 130], t: 100, hq: 4, hkv: 2, d: 64, bs: 32, cache: "bf16", seq: true, order: "interleaved" }),
    attentionPagedCase({ lens: [40, 19], t: 12, hq: 32, hkv: 2, d: 128, bs: 16, cache: "bf16", seq: true }),
    attentionPagedCase({ lens: [200], t: 45, hq: 4, hkv: 4, d: 128, bs: 64, cache: "f32", seq: false }),
    attentionPagedCase({ lens: [200, 90], t: 45, hq: 4, hkv: 4, d: 128, bs: 64, cache: "bf16", seq: true, order: "interleaved" }),
  );
  for (const m of M_ALL) c.push(swigluCase(m, [96, 97, 64, 50][M_ALL.indexOf(m)]));
  // bf16 outs (the engine's act, h and attn on the GEMM path): the vectorized (F % 4 == 0) and scalar swiglu, rmsnorm
  // and add_rmsnorm at GLM-4's hidden size and odd ones, attention through each CUDA kernel: decode with one and two
  // merge levels, batched decode, prefill (one and several sequences), and the plain fallback (f32 cache, D = 80)
  c.push(swigluCase(17, 96, true), swigluCase(3, 97, true), swigluCase(118, 50, true));
  // a bf16 gate_up (the GEMM's bf16 output at T > 8): CUDA's 8-wide vector form (F % 8 == 0, GLM-4's F = 13696 at 3
  // rows), F % 4 == 0 only and odd F (the scalar form), both outs
  c.push(
    swigluCase(1, 96, false, true),
    swigluCase(17, 104, true, true),
    swigluCase(3, 13696, true, true),
    swigluCase(5, 100, true, true),
    swigluCase(3, 97, true, true),
    swigluCase(118, 50, false, true),
  );
  c.push(rmsnormCase(17, 4096, "bf16", 1.5625e-7, { outBf16: true }), rmsnormCase(3, 100, "f32", 1e-5, { outBf16: true, alias: true }));
  c.push(addRmsnormBf16Case(17, 4096, "bf16", 1.5625e-7), addRmsnormBf16Case(5, 97, "f32", 1e-5));
  c.push(
    attentionDecodeCase(8, 2, 128, 4095, 4096, "bf16", true),
    attentionDecodeCase(8, 2, 64, 700, 800, "f32", true),
    attentionPrefillCase(17, 8, 2, 64, 0, 32, "bf16", true),
    attentionPrefillCase(7, 8, 2, 64, 5, 16, "bf16", true),
    attentionPagedCase({ lens: [8192], t: 1, hq: 32, hkv: 2, d: 128, bs: 64, cache: "bf16", seq: false, outBf16: true }),
    attentionPagedCase({ lens: [1, 64, 1000], t: 1, hq: 32, hkv: 2, d: 128, bs: 16, cache: "bf16", seq: true, outBf16: true }),
    attentionPagedCase({ lens: [1118], t: 118, hq: 8, hkv: 2, d: 64, bs: 64, cache: "bf16", seq: false, outBf16: true }),
    attentionPagedCase({ lens: [150, 400, 130], t: 100, hq: 4, hkv: 2, d: 64, bs: 32, cache: "bf16", seq: true, order: "interleaved", outBf16: true }),
    attentionPagedCase({ lens: [500, 77], t: 1, hq: 6, hkv: 2, d: 80, bs: 16, cache: "bf16", seq: true, outBf16: true }),
  );
  c.push(addCase([17, 96], "none"), addCase([3, 5, 7], "none"), addCase([118, 33], "out=a"), addCase([1, 64], "out=b"), addCase([5, 5], "out=a=b"));
  c.push(argmaxCase(1, 151552), argmaxCase(3, 1000), argmaxCase(118, 37), argmaxCase(5, 300, true), argmaxCase(17, 64));
  c.push(argmaxCase(5, 151552, true), argmaxCase(64, 32000));
  c.push(
    softmaxCase(1, 151552, 1),
    softmaxCase(3, 1000, 0.7),
    softmaxCase(17, 64, 2.5),
    softmaxCase(118, 37, 0.1),
    softmaxCase(3, 100, 1.3),
  );
  c.push(
    sampleGreedyCase(9, 1000),
    sampleFixedCase(1, 1000),
    sampleFixedCase(17, 64),
    sampleFixedCase(118, 64),
    sampleFixedCase(3, 151552, { peaky: 60 }),
    sampleDistributionCase(4000),
    // each row its own settings, B = 1, 5, 64 (one cluster of blocks a row on sm_90)
    sampleRowsCase("batch of settings", 1, 151552, peakyLogits(151552), (rng, i, row) => batchSettings(rng, 1, row)),
    sampleRowsCase("batch of settings", 5, 151552, peakyLogits(151552), batchSettings),
    sampleRowsCase("batch of settings", 64, 16384, peakyLogits(16384), batchSettings),
    // even rows all negative (the penalty multiplies them), odd rows normal(0, 2)
    sampleRowsCase("repetition penalty", 8, 300, (rng, i) => rng.normals(300, 2, i % 2 ? 0 : -25), penaltySettings),
    sampleRowsCase("repetition penalty", 3, 151552, peakyLogits(151552), (rng, i, row) => penaltySettings(rng, [0, 2, 7][i], row)),
    sampleRowsCase("NaN and Inf rows", 10, 1000, nanLogits(1000), nanSettings),
    sampleRowsCase("NaN and Inf rows", 10, 151552, nanLogits(151552), nanSettings),
    sampleRowsCase("flat rows, deep picks", 6, 6000, flatLogits(6000), flatSettings, { margin: SAMPLE_MARGIN_DEEP }),
    // Each element of these rows holds ~7e-6 of the mass: no u keeps a margin, so the picks are checked within 1e-5.
    sampleRowsCase("flat rows, within 1e-5", 4, 151552, flatBigLogits(151552), flatBigSettings, { delta: 1e-5 }),
  );
  for (const from of ["f32", "bf16", "f16"] as const) for (const to of ["f32", "bf16", "f16"] as const) c.push(convertCase(from, to));
  c.push(
    fillRandomCase("f32", 65536, 0.5, 2, 1234),
    fillRandomCase("bf16", 40000, -1, 0.02, 7),
    fillRandomCase("f32", 1001, 3, 0, 99),
    fillRandomCase("f32", 20000, 0, 1, 2 ** 31 + 5),
  );
  c.push(
    copyCase("f32", [17, 33]),
    copyCase("bf16", [5, 7], [35]),
    copyCase("f16", [3, 3]),
    copyCase("i32", [13]),
    copyCase("u8", [31]),
    copyCase("i4", [6, 64], [3, 128]),
    copySliceCase(),
  );
  return c;
}

/** Every op case, in a fixed order. */
export const OP_CASES: readonly OpCase[] = buildTable();

/** The ops that the table covers (for a completeness check). */
export const OPS_COVERED: readonly string[] = [...new Set(OP_CASES.map((c) => c.op))];

// ------------------------------------------------------------------ a recorded decode step (capture / replay tests)

/**
 * A small decode step touching most ops: embedding -> rmsnorm -> q/k/v projections (bf16 and int4 weights, bias)
 * -> rotary -> kv_write -> attention -> o projection -> residual add -> rmsnorm -> gate|up -> swiglu -> down ->
 * residual -> final norm -> logits -> argmax and sample. Positions and ids are device tensors, so one recorded
 * plan serves every step.
 */
export interface DecodeStep {
  ids: NativeTensor;
  pos: NativeTensor;
  params: NativeTensor;
  topK: NativeTensor;
  logits: NativeTensor;
  next: NativeTensor;
  sampled: NativeTensor;
  kc: NativeTensor;
  record(): number; // records the ops, returns how many
  dispose(): void;
}

export function makeDecodeStep(c: NativeContext): DecodeStep {
  const rng = new Rng("capture/replay weights");
  const [V, H, HQ, HKV, D, F, S] = [50, 64, 4, 2, 32, 96, 12]; // D = 32: the CUDA attention supports head dims 32, 64, 128
  const owned: NativeTensor[] = [];
  const t = (x: NativeTensor) => (owned.push(x), x);
  const bf = (shape: number[], std: number) =>
    t(c.fromBuffer("bf16", shape, encodeFloats("bf16", rng.normals(shape.reduce((a, b) => a * b, 1), std))));
  const f = (shape: number[]) => t(c.empty("f32", shape));
  const table = bf([V, H], 1);
  const ln1 = bf([H], 0.1);
  const ln2 = bf([H], 0.1);
  const lnf = bf([H], 0.1);
  const wq = bf([HQ * D, H], 0.1);
  const bq = bf([HQ * D], 0.1);
  const wk = bf([HKV * D, H], 0.1);
  const wv = bf([HKV * D, H], 0.1);
  const wo = bf([H, HQ * D], 0.1);
  const quant = (n: number, k: number): QWeight => {
    const q: QWeight = { codes: t(c.empty("i4", [n, k])), scales: t(c.empty("bf16", [n, k / 32])), zeros: t(c.empty("bf16", [n, k / 32])), groupSize: 32 };
    c.quantizeInt4(q, bf([n, k], 0.1), 0);
    return q;
  };
  const wgu = quant(2 * F, H);
  const wd = quant(H, F);
  const wlm = bf([V, H], 0.2);
  const kc = t(c.fromBuffer("bf16", [S, HKV, D], new Uint16Array(S * HKV * D).fill(0x7fc0)));
  const vc = t(c.fromBuffer("bf16", [S, HKV, D], new Uint16Array(S * HKV * D).fill(0x7fc0)));
  const ids = t(c.fromBuffer("i32", [1], Int32Array.of(0)));
  const pos = t(c.fromBuffer("i32", [1], Int32Array.of(0)));
  const params = t(c.fromBuffer("f32", [1, 4], Float32Array.of(0.8, 0.9, 0.05, 0.5)));
  const topK = t(c.fromBuffer("i32", [1], Int32Array.of(10)));
  const h = f([1, H]);
  const hn = f([1, H]);
  const q = f([1, HQ * D]);
  const k = f([1, HKV * D]);
  const v = f([1, HKV * D]);
  const att = f([1, HQ, D]);
  const o = f([1, H]);
  const gu = f([1, 2 * F]);
  const act = f([1, F]);
  const logits = f([1, V]);
  const next = t(c.empty("i32", [1]));
  const sampled = t(c.empty("i32", [1]));
  const q3 = t(q.reshape([1, HQ, D]));
  const k3 = t(k.reshape([1, HKV, D]));
  const v3 = t(v.reshape([1, HKV, D]));
  const att2 = t(att.reshape([1, HQ * D]));
  c.flush();
  const record = (): number => {
    c.embedding(h, table, ids);
    c.rmsnorm(hn, h, ln1, 1.5625e-7);
    c.matmul(q, hn, wq, bq);
    c.matmul(k, hn, wk);
    c.matmul(v, hn, wv);
    c.rotary(q3, pos, D / 2, 5e6);
    c.rotary(k3, pos, D / 2, 5e6);
    c.kvWrite(kc, vc, k3, v3, pos);
    c.attention(att, q3, kc, vc, pos, 1 / Math.sqrt(D), 0);
    c.matmul(o, att2, wo);
    c.add(h, h, o);
    c.rmsnorm(hn, h, ln2, 1.5625e-7);
    c.matmulInt4(gu, hn, wgu);
    c.swiglu(act, gu);
    c.matmulInt4(o, act, wd);
    c.add(h, h, o);
    c.rmsnorm(hn, h, lnf, 1.5625e-7);
    c.matmul(logits, hn, wlm);
    c.argmax(next, logits);
    c.sample(sampled, logits, params, topK);
    return 20; // the op calls above
  };
  return { ids, pos, params, topK, logits, next, sampled, kc, record, dispose: () => owned.forEach((x) => x.dispose()) };
}


// ------------------------------------------------------------------ the numpy quantizer fixtures

/** One entry of fixtures/tiny-glm4/golden/quant_cases.json (written by scripts/int4_ref.py). */
export interface QuantFixtureFile {
  file: string;
  dtype: string;
  shape: number[];
}
export interface QuantFixtureCase {
  name: string;
  description: string;
  N: number;
  K: number;
  G: 32 | 64 | 128;
  input: QuantFixtureFile;
  packed: QuantFixtureFile;
  scales: QuantFixtureFile;
  zeros: QuantFixtureFile;
  dequant: QuantFixtureFile;
  stats: { codes_histogram: number[] };
}

const goldenDir = path.join(packageRoot(), "fixtures", "tiny-glm4", "golden");

export function quantFixtures(): { format: string; cases: QuantFixtureCase[] } {
  return JSON.parse(readFileSync(path.join(goldenDir, "quant_cases.json"), "utf8")) as { format: string; cases: QuantFixtureCase[] };
}

function loadFixtureFile(f: QuantFixtureFile): ArrayBuffer {
  const b = readFileSync(path.join(goldenDir, f.file));
  const per = f.dtype === "float32" ? 4 : f.dtype === "bf16" ? 2 : 1;
  const want = f.shape.reduce((a, c) => a * c, 1) * per;
  if (b.length !== want) throw new Error(`${f.file}: ${b.length} bytes, the listing says ${want}`);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.length);
}

/** The arrays of one fixture case: bf16 input bits, packed codes, bf16 scale/zero bits, float32 dequant bits. */
export function loadQuantFixture(fc: QuantFixtureCase): {
  N: number;
  K: number;
  G: 32 | 64 | 128;
  input: Uint16Array;
  packed: Uint8Array;
  scales: Uint16Array;
  zeros: Uint16Array;
  deq: Uint32Array;
} {
  return {
    N: fc.N,
    K: fc.K,
    G: fc.G,
    input: new Uint16Array(loadFixtureFile(fc.input)),
    packed: new Uint8Array(loadFixtureFile(fc.packed)),
    scales: new Uint16Array(loadFixtureFile(fc.scales)),
    zeros: new Uint16Array(loadFixtureFile(fc.zeros)),
    deq: new Uint32Array(loadFixtureFile(fc.dequant)),
  };
}
