/**
 * The op perf cases: every op of csrc/op_list.h at the shapes GLM-4-9B gives it (decode M = 1..8, prefill
 * M = 512 / 2048, attention at several context lengths, sampling over the 151552-token vocabulary, the load-time
 * quantization), with the bytes each call must move and the FLOP it must do. The perf mode of the op case table
 * (test/helpers/cases.ts holds the correctness cases at small and odd shapes; this table the shapes that matter
 * for speed): bench/ops/run.ts checks each case against the float64 reference (test/helpers/reference.ts) on
 * sampled rows before it times it.
 *
 * `tiny` dimensions keep every case cheap enough for the CPU backend (test/bench-ops.test.ts runs them there so
 * that the harness cannot rot); the figures only mean something on CUDA at the GLM-4-9B dimensions.
 */
import type { DType, NativeContext, NativeTensor, QWeight } from "../../lib/engine/native.js";
import { TOL, rotaryTol, softmaxTol } from "../../test/helpers/cases.js";
import * as R from "../../test/helpers/reference.js";
import { Rng, decodeFloats, roundBf16 } from "../../test/helpers/rng.js";

/** Model dimensions the cases are built from. */
export interface Dims {
  hidden: number; // H
  ffn: number; // F (gate|up is 2F)
  qHeads: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
  group: 32 | 64 | 128;
  /** Decode batch sizes (rows of the GEMV path). */
  decodeM: number[];
  /** Prefill chunk sizes (rows of the GEMM path). */
  prefillM: number[];
  /** Context lengths for decode attention. */
  contexts: number[];
}

/** GLM-4-9B (config.json): 40 layers of these. */
export const GLM4_9B: Dims = {
  hidden: 4096,
  ffn: 13696,
  qHeads: 32,
  kvHeads: 2,
  headDim: 128,
  vocab: 151552,
  group: 128,
  decodeM: [1, 2, 4, 8],
  prefillM: [512, 2048],
  contexts: [512, 4096, 32768],
};

/** Small enough for the CPU backend in a test; every shape rule of the real one kept (K % G, head dims). */
export const TINY: Dims = {
  hidden: 256,
  ffn: 384,
  qHeads: 8,
  kvHeads: 2,
  headDim: 32,
  vocab: 3001,
  group: 128,
  decodeM: [1, 3],
  prefillM: [20],
  contexts: [40, 130],
};

const EPS = 1.5625e-7; // GLM-4's RMSNorm eps
const ROPE_THETA = 10000 * 500; // glm-4-9b-chat: base 10000 * rope_ratio 500

/** Tensors of one case, its seeded random source, and how many copies make an input cold in L2. */
export class PerfEnv {
  private readonly owned: NativeTensor[] = [];
  constructor(
    readonly ctx: NativeContext,
    readonly rng: Rng,
    /** L2 size of the device (0 on the CPU): cold inputs are rotated through copies totalling twice this. */
    readonly l2Bytes: number,
    readonly backend: "cpu" | "gpu",
  ) {}

  track<T extends NativeTensor>(t: T): T {
    this.owned.push(t);
    return t;
  }
  /** normal(mean, std) values filled on the device (fill_random: no host data to move for the big weights). */
  randn(dtype: "f32" | "bf16", shape: number[], std = 1, mean = 0): NativeTensor {
    const t = this.track(this.ctx.empty(dtype, shape));
    this.ctx.fillRandom(t, this.rng.u32(), mean, std);
    return t;
  }
  ints(values: ArrayLike<number>): NativeTensor {
    return this.track(this.ctx.fromBuffer("i32", [values.length], Int32Array.from(values as ArrayLike<number>)));
  }
  floats(values: ArrayLike<number>, shape: number[]): NativeTensor {
    return this.track(this.ctx.fromBuffer("f32", shape, Float32Array.from(values as ArrayLike<number>)));
  }
  empty(dtype: DType, shape: number[]): NativeTensor {
    return this.track(this.ctx.empty(dtype, shape));
  }
  /** A device copy of t (the same values, its own memory). */
  copyOf(t: NativeTensor): NativeTensor {
    const c = this.empty(t.dtype, t.shape);
    this.ctx.copy(c, t);
    return c;
  }
  /**
   * Copies of an input that a decode step reads once (weights, the KV cache), so that back-to-back timed calls do
   * not find it in L2: enough copies to cover twice the L2 size, at most 64. The first is the input itself.
   */
  coldCopies<T>(bytes: number, first: T, copy: (x: T) => T): T[] {
    const n = this.l2Bytes > 0 ? Math.min(64, Math.max(1, Math.ceil((2 * this.l2Bytes) / bytes))) : 1;
    const out = [first];
    for (let i = 1; i < n; ++i) out.push(copy(first));
    return out;
  }
  tol(t: { cpu: number; gpu: number }): number {
    return t[this.backend];
  }
  dispose(): void {
    for (const t of this.owned) t.dispose();
    this.owned.length = 0;
  }
}

/** One case set up on a context. */
export interface PerfRun {
  /** Records one call; call i of a timed plan uses input copy i % copies (cold inputs). */
  record(i: number): void;
  /** Input copies rotated through (1 = none). */
  copies: number;
  /** After exactly one call has run: what disagrees with the float64 reference ([] = ok). */
  check(): string[];
}

export interface PerfCase {
  /** e.g. `matmul_int4 gate_up (M=1,N=27392,K=4096,G=128)` */
  name: string;
  /** The op's C++ name (opList()). */
  op: string;
  /** decode | prefill | load | sampling: which ceiling to read the figure against. */
  phase: "decode" | "prefill" | "load" | "sampling";
  /** Bytes one call must move at least (reads + writes), and its FLOP (multiply-add = 2). */
  bytes: number;
  flop: number;
  /** [M, N, K] of the same product in BF16, for the cuBLAS ceiling measured through torch. */
  gemm?: [number, number, number];
  /** The same attention through torch's scaled_dot_product_attention (bf16), for a peer figure. */
  sdpa?: { t: number; hq: number; hkv: number; d: number; past: number };
  setup(env: PerfEnv): PerfRun;
}

// ------------------------------------------------------------------ reading back

function readF64(t: NativeTensor): Float64Array {
  const d = t.read();
  return t.dtype === "f32" || t.dtype === "bf16" || t.dtype === "f16" ? decodeFloats(t.dtype, d) : Float64Array.from(d);
}
/** Rows [r, r + 1) of dimension 0 of t, as float64. */
function row(t: NativeTensor, r: number): Float64Array {
  const v = t.slice0(r, r + 1);
  try {
    return readF64(v);
  } finally {
    v.dispose();
  }
}
function rowsOf(t: NativeTensor, rs: number[]): Float64Array {
  const parts = rs.map((r) => row(t, r));
  const out = new Float64Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
function bitsRow(t: NativeTensor, r: number): Uint8Array | Uint16Array {
  const v = t.slice0(r, r + 1);
  try {
    return v.read() as Uint8Array | Uint16Array;
  } finally {
    v.dispose();
  }
}
/** Distinct sorted sample indices in [0, n): the first, the last, the middle and `extra` seeded picks. */
function sample(rng: Rng, n: number, extra: number): number[] {
  const s = new Set([0, n - 1, n >> 1]);
  for (let i = 0; i < extra && s.size < n; ++i) s.add(rng.int(n));
  return [...s].sort((a, b) => a - b);
}
function fmt(x: number): string {
  return x.toExponential(2);
}
function normCheck(what: string, got: ArrayLike<number>, ref: ArrayLike<number>, tol: number): string[] {
  const e = R.normError(got, ref);
  if (e.badIndex >= 0) return [`${what}: non-finite output ${got[e.badIndex]} at ${e.badIndex}`];
  return e.err <= tol ? [] : [`${what}: normalized squared error ${fmt(e.err)} > ${fmt(tol)}`];
}

// ------------------------------------------------------------------ linears

interface Linear {
  label: string;
  n: number;
  k: number;
}
function linears(d: Dims): Linear[] {
  const qkv = (d.qHeads + 2 * d.kvHeads) * d.headDim;
  return [
    { label: "qkv", n: qkv, k: d.hidden },
    { label: "o_proj", n: d.hidden, k: d.qHeads * d.headDim },
    { label: "gate_up", n: 2 * d.ffn, k: d.hidden },
    { label: "down", n: d.hidden, k: d.ffn },
    { label: "output", n: d.vocab, k: d.hidden },
  ];
}

function int4Bytes(n: number, k: number, g: number): number {
  return (n * k) / 2 + 2 * 2 * n * (k / g);
}

/** A canonical INT4 weight [n, k] quantized on the device from normal(0, 0.02) values. */
function int4Weight(env: PerfEnv, n: number, k: number, g: 32 | 64 | 128): QWeight {
  const w = env.randn("bf16", [n, k], 0.02);
  const q: QWeight = { codes: env.empty("i4", [n, k]), scales: env.empty("bf16", [n, k / g]), zeros: env.empty("bf16", [n, k / g]), groupSize: g };
  env.ctx.quantizeInt4(q, w, 0);
  return q;
}

/**
 * layout 1: the weight repacked into the CUDA kernel layout by repack_int4(dst, src) (when the addon has that op:
 * what the engine loads on CUDA); the reference still reads the canonical rows.
 */
function matmulInt4Case(lin: Linear, m: number, g: 32 | 64 | 128, phase: "decode" | "prefill", layout: 0 | 1 = 0): PerfCase {
  const { n, k } = lin;
  return {
    name: `matmul_int4 ${lin.label} (M=${m},N=${n},K=${k},G=${g}${layout ? ",layout=1" : ""})`,
    op: "matmul_int4",
    phase,
    bytes: int4Bytes(n, k, g) + 4 * m * k + 4 * m * n,
    flop: 2 * m * n * k,
    gemm: [m, n, k],
    setup(env) {
      const q0 = int4Weight(env, n, k, g);
      let qt = q0;
      if (layout === 1) {
        qt = { ...q0, codes: env.empty("i4", [n, k]), scales: env.empty("bf16", [n, k / g]), zeros: env.empty("bf16", [n, k / g]), layout: 1 };
        (env.ctx as unknown as { repackInt4(dst: QWeight, src: QWeight): void }).repackInt4(qt, q0);
      }
      const qs = env.coldCopies(int4Bytes(n, k, g), qt, (q) => ({ ...q, codes: env.copyOf(q.codes), scales: env.copyOf(q.scales), zeros: env.copyOf(q.zeros) }));
      const x = env.randn("f32", [m, k]);
      const out = env.empty("f32", [m, n]);
      return {
        copies: qs.length,
        record: (i) => env.ctx.matmulInt4(out, x, qs[i % qs.length]),
        check() {
          // Sampled rows of x times sampled output features, against the dequantized codes in float64.
          const ms = sample(env.rng, m, 2);
          const ns = sample(env.rng, n, 61);
          const got: number[] = [];
          const ref: number[] = [];
          const xr = ms.map((r) => row(x, r));
          const yr = ms.map((r) => row(out, r));
          for (const c of ns) {
            const w = R.dequantizeInt4Ref(bitsRow(q0.codes, c), bitsRow(q0.scales, c), bitsRow(q0.zeros, c), 1, k, g);
            ms.forEach((_, i) => {
              let acc = 0;
              for (let j = 0; j < k; ++j) acc += xr[i][j] * w[j];
              ref.push(acc);
              got.push(yr[i][c]);
            });
          }
          return normCheck("out (sampled)", got, ref, env.tol(TOL.matmul));
        },
      };
    },
  };
}

function matmulBf16Case(lin: Linear, m: number, phase: "decode" | "prefill"): PerfCase {
  const { n, k } = lin;
  return {
    name: `matmul bf16 ${lin.label} (M=${m},N=${n},K=${k})`,
    op: "matmul",
    phase,
    bytes: 2 * n * k + 4 * m * k + 4 * m * n,
    flop: 2 * m * n * k,
    gemm: [m, n, k],
    setup(env) {
      const w0 = env.randn("bf16", [n, k], 0.02);
      const ws = env.coldCopies(2 * n * k, w0, (w) => env.copyOf(w));
      const x = env.randn("f32", [m, k]);
      const out = env.empty("f32", [m, n]);
      return {
        copies: ws.length,
        record: (i) => env.ctx.matmul(out, x, ws[i % ws.length]),
        check() {
          const ms = sample(env.rng, m, 2);
          const ns = sample(env.rng, n, 61);
          const w = rowsOf(w0, ns);
          const xs = rowsOf(x, ms);
          const ref = R.matmulRef(xs, ms.length, k, w, ns.length);
          const got = ms.flatMap((r) => {
            const y = row(out, r);
            return ns.map((c) => y[c]);
          });
          return normCheck("out (sampled)", got, ref, env.tol(TOL.matmul));
        },
      };
    },
  };
}

// ------------------------------------------------------------------ attention

/**
 * Decode attention: B sequences at context L, one query token each (B > 1: slots of one shared pool of S' rows
 * each, S' = L rounded up to blocks of 64, read through a block table as the engine does); or prefill: T tokens
 * at positions 0..T-1 of one sequence (causal, contiguous cache).
 */
function attentionCase(d: Dims, kind: "decode" | "prefill", b: number, len: number): PerfCase {
  const { qHeads: hq, kvHeads: hkv, headDim: hd } = d;
  const t = kind === "decode" ? b : len; // query tokens
  const paged = kind === "decode" && b > 1;
  const bs = 64; // block size through the table (lib/engine/kv-cache.ts KV_BLOCK)
  const s = paged ? Math.ceil(len / bs) * bs : len; // cache rows a sequence
  const rows = kind === "decode" ? b * s : s;
  const kvRead = kind === "decode" ? b * len * hkv * hd * 2 * 2 : len * hkv * hd * 2 * 2;
  const scoreCount = kind === "decode" ? b * len : (len * (len + 1)) / 2; // (query, key) pairs per head
  return {
    name:
      kind === "decode"
        ? `attention decode (B=${b},L=${len},Hq=${hq},Hkv=${hkv},D=${hd},cache=bf16)`
        : `attention prefill causal (T=${len},Hq=${hq},Hkv=${hkv},D=${hd},cache=bf16)`,
    op: "attention",
    phase: kind,
    bytes: kvRead + 2 * 4 * t * hq * hd,
    flop: 4 * hq * hd * scoreCount,
    ...(kind === "prefill" ? { sdpa: { t: len, hq, hkv, d: hd, past: 0 } } : {}),
    setup(env) {
      const kc0 = env.randn("bf16", [rows, hkv, hd]);
      const vc0 = env.randn("bf16", [rows, hkv, hd]);
      const caches = env.coldCopies(kvRead, [kc0, vc0], ([k, v]) => [env.copyOf(k), env.copyOf(v)]);
      const q = env.randn("f32", [t, hq, hd]);
      const out = env.empty("f32", [t, hq, hd]);
      // Cache rows of each query's last key and first key (for the reference); the op takes sequence positions.
      const posv = kind === "decode" ? Array.from({ length: b }, (_, i) => i * s + len - 1) : Array.from({ length: len }, (_, i) => i);
      const startv = paged ? Array.from({ length: b }, (_, i) => i * s) : null;
      const pos = env.ints(paged ? Array.from({ length: b }, () => len - 1) : posv);
      const table = paged ? env.track(env.ctx.fromBuffer("i32", [b, s / bs], Int32Array.from({ length: (b * s) / bs }, (_, i) => i))) : null;
      const seq = paged ? env.ints(Array.from({ length: b }, (_, i) => i)) : null;
      const scale = 1 / Math.sqrt(hd);
      return {
        copies: caches.length,
        record: (i) => {
          const [kc, vc] = caches[i % caches.length];
          env.ctx.attention(out, q, kc, vc, pos, scale, paged ? bs : 0, table, seq);
        },
        check() {
          // Sampled query tokens, every head, against the float64 attention over their cache rows.
          const ts = sample(env.rng, t, 1);
          const k = readF64(kc0);
          const v = readF64(vc0);
          const got: number[] = [];
          const ref: number[] = [];
          for (const ti of ts) {
            const r = R.attentionRef(row(q, ti), 1, hq, hd, k, v, hkv, [posv[ti]], scale, startv ? [startv[ti]] : undefined);
            ref.push(...r);
            got.push(...row(out, ti));
          }
          return normCheck("out (sampled tokens)", got, ref, env.tol(TOL.attention));
        },
      };
    },
  };
}

// ------------------------------------------------------------------ small ops of a layer

function rmsnormCase(d: Dims, m: number, phase: "decode" | "prefill", fused: boolean): PerfCase {
  const h = d.hidden;
  return {
    name: `${fused ? "add_rmsnorm" : "rmsnorm"} (T=${m},H=${h},w=bf16)`,
    op: fused ? "add_rmsnorm" : "rmsnorm",
    phase,
    bytes: (fused ? 4 * 4 : 2 * 4) * m * h + 2 * h,
    flop: (fused ? 4 : 3) * m * h,
    setup(env) {
      const x = env.randn("f32", [m, h], 3);
      const o = env.randn("f32", [m, h], 1);
      const w = env.randn("bf16", [h], 0.5, 1);
      const out = env.empty("f32", [m, h]);
      const ms = sample(env.rng, m, 2);
      env.ctx.flush();
      const x0 = rowsOf(x, ms);
      const o0 = rowsOf(o, ms);
      const wv = readF64(w);
      return {
        copies: 1,
        record: () => (fused ? env.ctx.addRmsnorm(out, x, o, w, EPS) : env.ctx.rmsnorm(out, x, w, EPS)),
        check() {
          const xin = fused ? x0.map((a, i) => Math.fround(a + o0[i])) : x0;
          const fails = fused ? normCheck("x += o (sampled rows)", rowsOf(x, ms), xin, env.tol(TOL.elementwise)) : [];
          return [...fails, ...normCheck("out (sampled rows)", rowsOf(out, ms), R.rmsnormRef(xin, ms.length, h, wv, EPS), env.tol(TOL.rmsnorm))];
        },
      };
    },
  };
}

function rotaryKvWriteCase(d: Dims, m: number, phase: "decode" | "prefill"): PerfCase {
  const { qHeads: hq, kvHeads: hkv, headDim: hd } = d;
  const rot = hd / 2;
  const s = 4096;
  return {
    name: `rotary_kv_write (T=${m},Hq=${hq},Hkv=${hkv},D=${hd},rot=${rot},cache=bf16)`,
    op: "rotary_kv_write",
    phase,
    bytes: 2 * 4 * m * (hq + hkv) * hd + 4 * m * hkv * hd + 2 * 2 * m * hkv * hd,
    flop: 6 * m * (hq + hkv) * (rot / 2),
    setup(env) {
      const q = env.randn("f32", [m, hq, hd]);
      const k = env.randn("f32", [m, hkv, hd]);
      const v = env.randn("f32", [m, hkv, hd]);
      const kc = env.empty("bf16", [s, hkv, hd]);
      const vc = env.empty("bf16", [s, hkv, hd]);
      const posv = Array.from({ length: m }, (_, i) => 1000 + i);
      const rowv = Array.from({ length: m }, (_, i) => (7 + 3 * i) % s);
      const pos = env.ints(posv);
      const rows = env.ints(rowv);
      const ts = sample(env.rng, m, 1);
      env.ctx.flush();
      const q0 = rowsOf(q, ts);
      const k0 = rowsOf(k, ts);
      const v0 = rowsOf(v, ts);
      return {
        copies: 1,
        record: () => env.ctx.rotaryKvWrite(q, k, v, kc, vc, pos, rows, rot, ROPE_THETA),
        check() {
          const p = ts.map((i) => posv[i]);
          const tol = env.tol(rotaryTol(p, hd, rot, ROPE_THETA));
          const kref = R.rotaryRef(k0, ts.length, hkv, hd, p, rot, ROPE_THETA);
          return [
            ...normCheck("q (sampled tokens)", rowsOf(q, ts), R.rotaryRef(q0, ts.length, hq, hd, p, rot, ROPE_THETA), tol),
            ...normCheck("k (sampled tokens)", rowsOf(k, ts), kref, tol),
            // the cache holds bf16: the rounding of the rotated k and of v (relative 2^-9, squared ~4e-6)
            ...normCheck("kcache rows", rowsOf(kc, ts.map((i) => rowv[i])), kref, 1e-5),
            ...normCheck("vcache rows", rowsOf(vc, ts.map((i) => rowv[i])), v0, 1e-5),
          ];
        },
      };
    },
  };
}

function swigluCase(d: Dims, m: number, phase: "decode" | "prefill"): PerfCase {
  const f = d.ffn;
  return {
    name: `swiglu (M=${m},F=${f})`,
    op: "swiglu",
    phase,
    bytes: 3 * 4 * m * f,
    flop: 5 * m * f,
    setup(env) {
      const gu = env.randn("f32", [m, 2 * f], 2);
      const out = env.empty("f32", [m, f]);
      return {
        copies: 1,
        record: () => env.ctx.swiglu(out, gu),
        check() {
          const ms = sample(env.rng, m, 1);
          return normCheck("out (sampled rows)", rowsOf(out, ms), R.swigluRef(rowsOf(gu, ms), ms.length, f), env.tol(TOL.elementwise));
        },
      };
    },
  };
}

function addCase(d: Dims, m: number, phase: "decode" | "prefill"): PerfCase {
  const h = d.hidden;
  return {
    name: `add (M=${m},H=${h})`,
    op: "add",
    phase,
    bytes: 3 * 4 * m * h,
    flop: m * h,
    setup(env) {
      const a = env.randn("f32", [m, h]);
      const b = env.randn("f32", [m, h]);
      const out = env.empty("f32", [m, h]);
      return {
        copies: 1,
        record: () => env.ctx.add(out, a, b),
        check() {
          const ms = sample(env.rng, m, 1);
          return normCheck("out (sampled rows)", rowsOf(out, ms), R.addRef(rowsOf(a, ms), rowsOf(b, ms)), env.tol(TOL.elementwise));
        },
      };
    },
  };
}

function addBiasCase(d: Dims, m: number, phase: "decode" | "prefill"): PerfCase {
  const n = (d.qHeads + 2 * d.kvHeads) * d.headDim;
  return {
    name: `add_bias qkv (M=${m},N=${n},bias=bf16)`,
    op: "add_bias",
    phase,
    bytes: 2 * 4 * m * n + 2 * n,
    flop: m * n,
    setup(env) {
      const x = env.randn("f32", [m, n]);
      const b = env.randn("bf16", [n], 0.3);
      const ms = sample(env.rng, m, 1);
      env.ctx.flush();
      const x0 = rowsOf(x, ms);
      return {
        copies: 1,
        record: () => env.ctx.addBias(x, b),
        check: () => normCheck("x (sampled rows)", rowsOf(x, ms), R.addBiasRef(x0, ms.length, n, readF64(b)), env.tol(TOL.elementwise)),
      };
    },
  };
}

function rotaryCase(d: Dims, m: number, phase: "decode" | "prefill"): PerfCase {
  const { qHeads: hq, headDim: hd } = d;
  const rot = hd / 2;
  return {
    name: `rotary q (T=${m},H=${hq},D=${hd},rot=${rot})`,
    op: "rotary",
    phase,
    bytes: 2 * 4 * m * hq * hd,
    flop: 6 * m * hq * (rot / 2),
    setup(env) {
      const x = env.randn("f32", [m, hq, hd]);
      const posv = Array.from({ length: m }, (_, i) => 2000 + i);
      const pos = env.ints(posv);
      const ts = sample(env.rng, m, 1);
      env.ctx.flush();
      const x0 = rowsOf(x, ts);
      return {
        copies: 1,
        record: () => env.ctx.rotary(x, pos, rot, ROPE_THETA),
        check() {
          const p = ts.map((i) => posv[i]);
          return normCheck("x (sampled tokens)", rowsOf(x, ts), R.rotaryRef(x0, ts.length, hq, hd, p, rot, ROPE_THETA), env.tol(rotaryTol(p, hd, rot, ROPE_THETA)));
        },
      };
    },
  };
}

function kvWriteCase(d: Dims, m: number, phase: "decode" | "prefill"): PerfCase {
  const { kvHeads: hkv, headDim: hd } = d;
  const s = 4096;
  return {
    name: `kv_write (T=${m},Hkv=${hkv},D=${hd},cache=bf16)`,
    op: "kv_write",
    phase,
    bytes: 2 * (4 + 2) * m * hkv * hd,
    flop: 0,
    setup(env) {
      const k = env.randn("f32", [m, hkv, hd]);
      const v = env.randn("f32", [m, hkv, hd]);
      const kc = env.empty("bf16", [s, hkv, hd]);
      const vc = env.empty("bf16", [s, hkv, hd]);
      const rowv = Array.from({ length: m }, (_, i) => (11 + 5 * i) % s);
      const pos = env.ints(rowv);
      return {
        copies: 1,
        record: () => env.ctx.kvWrite(kc, vc, k, v, pos),
        check() {
          const ts = sample(env.rng, m, 1);
          const r = ts.map((i) => rowv[i]);
          return [...normCheck("kcache rows", rowsOf(kc, r), rowsOf(k, ts), 1e-5), ...normCheck("vcache rows", rowsOf(vc, r), rowsOf(v, ts), 1e-5)];
        },
      };
    },
  };
}

function embeddingCase(d: Dims, m: number, phase: "decode" | "prefill"): PerfCase {
  const { vocab: v, hidden: h } = d;
  return {
    name: `embedding (T=${m},V=${v},H=${h},table=bf16)`,
    op: "embedding",
    phase,
    bytes: (2 + 4) * m * h + 4 * m,
    flop: 0,
    setup(env) {
      const table = env.randn("bf16", [v, h]);
      const idv = Array.from({ length: m }, () => env.rng.int(v));
      const ids = env.ints(idv);
      const out = env.empty("f32", [m, h]);
      return {
        copies: 1,
        record: () => env.ctx.embedding(out, table, ids),
        check() {
          const ts = sample(env.rng, m, 1);
          return normCheck("rows (exact)", rowsOf(out, ts), rowsOf(table, ts.map((i) => idv[i])), 0);
        },
      };
    },
  };
}

// ------------------------------------------------------------------ the output row: argmax, softmax, sample

function argmaxCase(d: Dims, m: number): PerfCase {
  const v = d.vocab;
  return {
    name: `argmax (M=${m},V=${v})`,
    op: "argmax",
    phase: "sampling",
    bytes: 4 * m * v,
    flop: 0,
    setup(env) {
      const x = env.randn("f32", [m, v], 2);
      const out = env.empty("i32", [m]);
      return {
        copies: 1,
        record: () => env.ctx.argmax(out, x),
        check() {
          const want = R.argmaxRef(readF64(x), m, v);
          const got = out.read();
          const bad = [...want].findIndex((w, i) => got[i] !== w);
          return bad < 0 ? [] : [`row ${bad}: argmax ${got[bad]}, expected ${want[bad]}`];
        },
      };
    },
  };
}

function softmaxCase(d: Dims, m: number): PerfCase {
  const v = d.vocab;
  return {
    name: `softmax (M=${m},V=${v},T=0.8)`,
    op: "softmax",
    phase: "sampling",
    bytes: 2 * 4 * m * v,
    flop: 3 * m * v,
    setup(env) {
      const x = env.randn("f32", [m, v], 2);
      const out = env.empty("f32", [m, v]);
      return {
        copies: 1,
        record: () => env.ctx.softmax(out, x, 0.8),
        check() {
          const xv = readF64(x);
          let mx = 0;
          for (const a of xv) mx = Math.max(mx, Math.abs(a / Math.fround(0.8)));
          return normCheck("out", readF64(out), R.softmaxRef(xv, m, v, Math.fround(0.8)), env.tol(softmaxTol(mx)));
        },
      };
    },
  };
}

function sampleCase(d: Dims, m: number): PerfCase {
  const v = d.vocab;
  return {
    name: `sample (M=${m},V=${v},temperature 0.8,top-k 40,top-p 0.8)`,
    op: "sample",
    phase: "sampling",
    bytes: 4 * m * v,
    flop: 0,
    setup(env) {
      const x = env.randn("f32", [m, v], 2);
      const us = Array.from({ length: m }, () => Math.fround(env.rng.uniform()));
      const params = env.floats(us.flatMap((u) => [0.8, 0.8, 0, u]), [m, 4]);
      const topK = env.ints(Array.from({ length: m }, () => 40));
      const out = env.empty("i32", [m]);
      return {
        copies: 1,
        record: () => env.ctx.sample(out, x, params, topK),
        check() {
          const xv = readF64(x);
          const got = out.read();
          const fails: string[] = [];
          for (let i = 0; i < m; ++i) {
            const p = { temperature: Math.fround(0.8), topP: Math.fround(0.8), minP: 0, u: us[i], topK: 40 };
            const ref = R.sampleRef(xv.subarray(i * v, (i + 1) * v), p);
            // Where u or a cut lies within float rounding of a boundary, either neighbour is right.
            if (ref.uMargin > 1e-4 && ref.cutMargin > 1e-4 && got[i] !== ref.id) fails.push(`row ${i}: picked ${got[i]}, expected ${ref.id}`);
          }
          return fails;
        },
      };
    },
  };
}

// ------------------------------------------------------------------ load-time and utility ops

function quantizeCase(lin: Linear, g: 32 | 64 | 128): PerfCase {
  const { n, k } = lin;
  return {
    name: `quantize_int4 ${lin.label} (N=${n},K=${k},G=${g},w=bf16)`,
    op: "quantize_int4",
    phase: "load",
    bytes: 2 * n * k + int4Bytes(n, k, g),
    flop: 0,
    setup(env) {
      const w = env.randn("bf16", [n, k], 0.02);
      const q: QWeight = { codes: env.empty("i4", [n, k]), scales: env.empty("bf16", [n, k / g]), zeros: env.empty("bf16", [n, k / g]), groupSize: g };
      return {
        copies: 1,
        record: () => env.ctx.quantizeInt4(q, w, 0),
        check() {
          // Sampled rows quantized on the host (float32 arithmetic of the layout) must match bit for bit.
          const fails: string[] = [];
          for (const r of sample(env.rng, n, 3)) {
            const want = R.quantizeInt4Ref(row(w, r), 1, k, g);
            const same = (a: ArrayLike<number>, b: ArrayLike<number>) => a.length === b.length && Array.prototype.every.call(a, (x: number, i: number) => x === b[i]);
            if (!same(bitsRow(q.codes, r), want.packed) || !same(bitsRow(q.scales, r), want.scales) || !same(bitsRow(q.zeros, r), want.zeros))
              fails.push(`row ${r}: codes, scales or zeros differ from the reference quantizer`);
          }
          return fails;
        },
      };
    },
  };
}

function dequantizeCase(lin: Linear, g: 32 | 64 | 128): PerfCase {
  const { n, k } = lin;
  return {
    name: `dequantize_int4 ${lin.label} (N=${n},K=${k},G=${g},out=bf16)`,
    op: "dequantize_int4",
    phase: "load",
    bytes: int4Bytes(n, k, g) + 2 * n * k,
    flop: 0,
    setup(env) {
      const q = int4Weight(env, n, k, g);
      const out = env.empty("bf16", [n, k]);
      return {
        copies: 1,
        record: () => env.ctx.dequantizeInt4(out, q),
        check() {
          const rs = sample(env.rng, n, 3);
          const ref = rs.flatMap((r) => [...R.dequantizeInt4Ref(bitsRow(q.codes, r), bitsRow(q.scales, r), bitsRow(q.zeros, r), 1, k, g)].map(roundBf16));
          return normCheck("rows (bf16 of the exact products)", rowsOf(out, rs), ref, 0);
        },
      };
    },
  };
}

function convertCase(m: number, n: number): PerfCase {
  return {
    name: `convert f32 -> bf16 (${m}x${n})`,
    op: "convert",
    phase: "load",
    bytes: (4 + 2) * m * n,
    flop: 0,
    setup(env) {
      const x = env.randn("f32", [m, n]);
      const out = env.empty("bf16", [m, n]);
      return {
        copies: 1,
        record: () => env.ctx.convert(out, x),
        check() {
          const rs = sample(env.rng, m, 2);
          return normCheck("rows (round to nearest even)", rowsOf(out, rs), [...rowsOf(x, rs)].map(roundBf16), 0);
        },
      };
    },
  };
}

function fillRandomCase(n: number): PerfCase {
  return {
    name: `fill_random f32 (${n})`,
    op: "fill_random",
    phase: "load",
    bytes: 4 * n,
    flop: 0,
    setup(env) {
      const out = env.empty("f32", [n]);
      return {
        copies: 1,
        record: () => env.ctx.fillRandom(out, 1234, 0.5, 2),
        check() {
          // mean 0.5 and std 2 within 5 standard errors
          const v = readF64(out);
          let s = 0;
          let s2 = 0;
          for (const a of v) {
            s += a;
            s2 += a * a;
          }
          const mean = s / v.length;
          const sd = Math.sqrt(s2 / v.length - mean * mean);
          const se = 2 / Math.sqrt(v.length);
          return Math.abs(mean - 0.5) < 5 * se && Math.abs(sd - 2) < 10 * se ? [] : [`mean ${mean} / std ${sd}, expected 0.5 / 2`];
        },
      };
    },
  };
}

function copyCase(bytes: number): PerfCase {
  const n = bytes / 4;
  return {
    name: `copy (${(bytes / 2 ** 20).toFixed(0)} MiB)`,
    op: "copy",
    phase: "load",
    bytes: 2 * bytes,
    flop: 0,
    setup(env) {
      const a = env.randn("f32", [n]);
      const b = env.empty("f32", [n]);
      return {
        copies: 1,
        record: () => env.ctx.copy(b, a),
        check: () => normCheck("copy (exact)", readF64(b), readF64(a), 0),
      };
    },
  };
}

// ------------------------------------------------------------------ the table

/**
 * Every perf case for dimensions d, in a fixed order. repacked: the INT4 linears are timed in the CUDA kernel layout
 * (layout 1, through repack_int4) as the engine loads them on CUDA, instead of the canonical one.
 */
export function perfCases(d: Dims, opts: { repacked?: boolean } = {}): PerfCase[] {
  const c: PerfCase[] = [];
  const lins = linears(d);
  const g = d.group;
  const layout = opts.repacked ? 1 : 0;
  for (const m of d.decodeM) for (const l of lins) c.push(matmulInt4Case(l, m, g, "decode", layout));
  for (const m of d.prefillM) for (const l of lins) c.push(matmulInt4Case(l, m, g, "prefill", layout));
  const [, oProj, , , output] = lins;
  for (const m of [1, d.prefillM[0]]) for (const l of [oProj, output]) c.push(matmulBf16Case(l, m, m === 1 ? "decode" : "prefill"));
  for (const len of d.contexts) c.push(attentionCase(d, "decode", 1, len));
  c.push(attentionCase(d, "decode", d.decodeM[d.decodeM.length - 1], d.contexts[1]));
  for (const t of d.prefillM) c.push(attentionCase(d, "prefill", 1, t));
  const steps: [number, "decode" | "prefill"][] = [
    [1, "decode"],
    [d.prefillM[0], "prefill"],
  ];
  for (const [m, ph] of steps) {
    c.push(rmsnormCase(d, m, ph, false), rmsnormCase(d, m, ph, true), rotaryKvWriteCase(d, m, ph), swigluCase(d, m, ph), addCase(d, m, ph));
    c.push(addBiasCase(d, m, ph), rotaryCase(d, m, ph), kvWriteCase(d, m, ph), embeddingCase(d, m, ph));
  }
  c.push(argmaxCase(d, 1), argmaxCase(d, d.decodeM[d.decodeM.length - 1]), softmaxCase(d, 1), sampleCase(d, 1), sampleCase(d, d.decodeM[d.decodeM.length - 1]));
  c.push(quantizeCase(lins[2], g), dequantizeCase(lins[2], g), convertCase(d.prefillM[0], d.hidden), fillRandomCase(d.hidden * d.hidden));
  c.push(copyCase(d === GLM4_9B ? 256 * 2 ** 20 : 2 ** 20));
  return c;
}
