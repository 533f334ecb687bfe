/**
 * Activation-aware scaling (AWQ-style) for GLM-4, folded into the weights so that inference costs nothing extra.
 *
 * A linear y = x W^T equals (x / s) (W diag(s))^T for any per-input-channel s > 0. Quantizing W diag(s) instead of W
 * protects the columns whose inputs are large (s > 1 there: their weights get finer steps, relative to the group),
 * at the expense of the others. s = m^alpha with m the mean |x| of the channel over a calibration text, normalized
 * by sqrt(max(s) min(s)); alpha is searched on a grid (0 = plain rounding) for the smallest output error
 * ||(x / s) Q(W diag(s))^T - x W^T||^2 on the calibration inputs. The division by s is folded into what produces x:
 *   - QKV (fused [q; k; v], one s for all its rows) and gate|up (one s for gate and up rows): the preceding RMSNorm
 *     weight (attn_norm, ffn_norm) divided by s;
 *   - down: its input is silu(gate) * up, linear in up: the up rows of gate|up divided by s (before gate|up's own
 *     search, which then sees those rows);
 *   - O (attn_out): its input channel c = h D + d is head h's output, a mix of V rows (g D + d) of the head's KV group
 *     g = h / (Hq / Hkv) (GQA: 16 heads a group on GLM-4-9B): s must then be the same for the heads of a group, so it is
 *     computed from m averaged over the group's heads, and the V rows and the V bias are divided by s_(g, d).
 * The folded norms and QKV bias are stored in F32 (their source bf16 divided by s is not a bf16 any more). The searches
 * run one layer at a time on the full-precision model's inputs (a forward pass of the calibration windows, kept
 * layer by layer), on the device the context names; the chosen alphas and the errors are returned for the record.
 */
import { Glm4Error } from "../errors.js";
import type { Glm4Config } from "../checkpoint/config.js";
import { SCHEME_INFO, type Int4Settings } from "../checkpoint/int4-format.js";
import { parseTensorName, qkvRows } from "../checkpoint/tensors.js";
import { bf16ToF32, f16ToF32 } from "../util.js";
import type { NativeContext, NativeTensor, QWeight } from "../engine/native.js";
import type { HostEmbedding, Linear, ModelWeights } from "../engine/weights.js";

/** The alphas searched: 0 (plain rounding) to 1 in steps of 0.1. */
export const AWQ_GRID: readonly number[] = Array.from({ length: 11 }, (_, i) => i / 10);

/** The four input-scale vectors of one layer (lengths H, Hq D, H, F). */
export interface AwqLayerScales {
  qkv: Float32Array;
  attnOut: Float32Array;
  gateUp: Float32Array;
  down: Float32Array;
}

export interface AwqLinearResult {
  alpha: number;
  /** Output error ||y_q - y||^2 / ||y||^2 on the calibration inputs, with the chosen alpha and with plain rounding. */
  error: number;
  errorRtn: number;
}

export interface AwqPlan {
  layers: AwqLayerScales[];
  grid: number[];
  /** Per scaled linear (normalized name, e.g. "layers.3.qkv"). */
  results: Record<string, AwqLinearResult>;
  tokens: number;
}

/** s = max(m, 1e-5)^alpha, normalized so that max(s) min(s) = 1 (AWQ's normalization). alpha 0: all ones. */
export function awqScales(meanAbs: ArrayLike<number>, alpha: number): Float32Array {
  const K = meanAbs.length;
  const s = new Float64Array(K);
  let mx = 0, mn = Infinity;
  for (let j = 0; j < K; j++) {
    s[j] = Math.max(meanAbs[j], 1e-5) ** alpha;
    mx = Math.max(mx, s[j]);
    mn = Math.min(mn, s[j]);
  }
  const norm = Math.sqrt(mx * mn);
  return Float32Array.from(s, (v) => v / norm);
}

/** Mean |x| per column of x f32 [T, K]. */
export function meanAbs(x: Float32Array, T: number, K: number): Float64Array {
  const m = new Float64Array(K);
  for (let t = 0; t < T; t++) for (let j = 0; j < K; j++) m[j] += Math.abs(x[t * K + j]);
  for (let j = 0; j < K; j++) m[j] /= T;
  return m;
}

/** O's statistics made equal across the heads of a KV group (mean over the group's heads), so that s folds into V. */
export function tieToKvGroups(m: Float64Array, cfg: { numHeads: number; numKvHeads: number; headDim: number }): Float64Array {
  const { numHeads: Hq, numKvHeads: Hkv, headDim: D } = cfg;
  const per = Hq / Hkv;
  const out = new Float64Array(m.length);
  for (let g = 0; g < Hkv; g++) {
    for (let d = 0; d < D; d++) {
      let s = 0;
      for (let h = g * per; h < (g + 1) * per; h++) s += m[h * D + d];
      for (let h = g * per; h < (g + 1) * per; h++) out[h * D + d] = s / per;
    }
  }
  return out;
}

/**
 * The alpha of the grid with the smallest output error for y = x W^T: x f32 [T, K] and w f32 [N, K] on the host, `mean`
 * the per-channel statistics (tied where the fold needs it). Quantization as `settings` (group, scheme) by
 * quantize_int4 with the column factors, so that what is measured is exactly what `quantize --awq` writes.
 */
export async function searchLinear(
  ctx: NativeContext,
  x: Float32Array,
  T: number,
  w: Float32Array,
  N: number,
  K: number,
  mean: ArrayLike<number>,
  settings: Pick<Int4Settings, "groupSize" | "scheme">,
  grid: readonly number[] = AWQ_GRID,
): Promise<AwqLinearResult & { scales: Float32Array }> {
  const G = settings.groupSize;
  if (K % G !== 0) throw new Glm4Error("ERR_GLM4_SHAPE_MISMATCH", `awq: a linear of ${K} input columns cannot be quantized with group ${G}`);
  const { code, codebook } = SCHEME_INFO[settings.scheme];
  const owned: NativeTensor[] = [];
  const own = <T extends NativeTensor>(t: T) => (owned.push(t), t);
  try {
    const wt = own(await ctx.fromBufferAsync("f32", [N, K], w));
    const xt = own(await ctx.fromBufferAsync("f32", [T, K], x));
    const y = own(ctx.empty("f32", [T, N]));
    ctx.matmul(y, xt, wt, null);
    await ctx.flushAsync();
    const yref = y.read() as Float32Array;
    let den = 0;
    for (const v of yref) den += v * v;
    const q: QWeight = { codes: own(ctx.empty("i4", [N, K])), scales: own(ctx.empty("bf16", [N, K / G])), zeros: own(ctx.empty("bf16", [N, K / G])), groupSize: G, ...(codebook ? { codebook } : {}) };
    const deq = own(ctx.empty("f32", [N, K]));
    const xs = own(ctx.empty("f32", [T, K]));
    const st = own(ctx.empty("f32", [K]));
    const xsh = new Float32Array(T * K);
    let best: (AwqLinearResult & { scales: Float32Array }) | undefined;
    let rtn = NaN;
    for (const alpha of grid) {
      const s = awqScales(mean, alpha);
      for (let t = 0; t < T; t++) for (let j = 0; j < K; j++) xsh[t * K + j] = x[t * K + j] / s[j];
      st.write(s);
      xs.write(xsh);
      ctx.quantizeInt4(q, wt, code, st);
      ctx.dequantizeInt4(deq, q); // dequantize + dense matmul: every backend, every codebook, no bf16 rounding of x
      ctx.matmul(y, xs, deq, null);
      await ctx.flushAsync();
      const yq = y.read() as Float32Array;
      let num = 0;
      for (let i = 0; i < yq.length; i++) num += (yq[i] - yref[i]) ** 2;
      const err = den > 0 ? num / den : num;
      if (!Number.isFinite(err)) throw new Glm4Error("ERR_GLM4_BAD_OUTPUT", `awq: the output error at alpha ${alpha} is not finite; the calibration activations or the weights hold NaN or Inf`);
      if (alpha === 0) rtn = err;
      if (!best || err < best.error) best = { alpha, error: err, errorRtn: NaN, scales: s };
    }
    best!.errorRtn = Number.isNaN(rtn) ? best!.error : rtn;
    return best!;
  } finally {
    for (const t of owned) t.dispose();
  }
}

/** A device weight (dense Linear or norm) as f32 on the host. */
function hostF32(t: NativeTensor): Float32Array {
  const v = t.read();
  if (v instanceof Float32Array) return v;
  if (v instanceof Uint16Array) return Float32Array.from(v, t.dtype === "f16" ? f16ToF32 : bf16ToF32);
  throw new Glm4Error("ERR_GLM4_INTERNAL", `awq: unexpected weight dtype ${t.dtype}`);
}

function denseOf(l: Linear, name: string): NativeTensor {
  if (l.kind !== "dense") throw new Glm4Error("ERR_GLM4_INTERNAL", `awq: ${name} must be loaded in full precision for the calibration pass`);
  return l.w;
}

/**
 * Searches every layer's four input scales on `windows` of calibration tokens, with the full-precision weights `w`
 * (loaded with quantization "none" on ctx). Windows are carried through the layers together: the layer's inputs of
 * all windows form one calibration set per linear.
 */
export async function searchAwq(
  ctx: NativeContext,
  cfg: Glm4Config,
  w: ModelWeights,
  windows: readonly (readonly number[])[],
  settings: Pick<Int4Settings, "groupSize" | "scheme">,
  opts: { grid?: readonly number[]; onLayer?: (layer: number) => void; signal?: AbortSignal } = {},
): Promise<AwqPlan> {
  const grid = opts.grid ?? AWQ_GRID;
  const { hiddenSize: H, numHeads: Hq, numKvHeads: Hkv, headDim: D, ffnSize: F } = cfg;
  const { q: nq, kv: nkv } = qkvRows(cfg);
  if (windows.length === 0 || windows.some((win) => win.length === 0)) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", "awq: the calibration text has no tokens");
  const embed = w.embed as HostEmbedding;
  const owned: NativeTensor[] = [];
  const own = <T extends NativeTensor>(t: T) => (owned.push(t), t);
  // Per window: residual stream and scratch.
  const st = windows.map((ids) => {
    const T = ids.length;
    const x = own(ctx.fromBuffer("f32", [T, H], embed.gather(ids as number[])));
    const pos = own(ctx.fromBuffer("i32", [T], Int32Array.from({ length: T }, (_, i) => i)));
    return {
      T,
      x,
      pos,
      h: own(ctx.empty("f32", [T, H])),
      q: own(ctx.empty("f32", [T, Hq, D])),
      k: own(ctx.empty("f32", [T, Hkv, D])),
      v: own(ctx.empty("f32", [T, Hkv, D])),
      attn: own(ctx.empty("f32", [T, Hq, D])),
      o: own(ctx.empty("f32", [T, H])),
      gu: own(ctx.empty("f32", [T, 2 * F])),
      act: own(ctx.empty("f32", [T, F])),
    };
  });
  const Ttot = st.reduce((a, s) => a + s.T, 0);
  const cat = (parts: Float32Array[]) => {
    const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
    let o = 0;
    for (const p of parts) (out.set(p, o), (o += p.length));
    return out;
  };
  const plan: AwqPlan = { layers: [], grid: [...grid], results: {}, tokens: Ttot };
  try {
    for (let i = 0; i < cfg.numLayers; i++) {
      if (opts.signal?.aborted) throw new Glm4Error("ERR_GLM4_ABORTED", "awq calibration was aborted", { cause: opts.signal.reason });
      const L = w.layers[i];
      const xs: Record<"qkv" | "o" | "gu" | "down", Float32Array[]> = { qkv: [], o: [], gu: [], down: [] };
      for (const s of st) {
        const T = s.T;
        const q2 = s.q.reshape([T, Hq * D]), k2 = s.k.reshape([T, Hkv * D]), v2 = s.v.reshape([T, Hkv * D]), a2 = s.attn.reshape([T, Hq * D]);
        try {
          ctx.rmsnorm(s.h, s.x, L.attnNorm, cfg.rmsEps);
          await ctx.flushAsync();
          xs.qkv.push(s.h.read() as Float32Array);
          ctx.matmul(q2, s.h, denseOf(L.q, "q"), L.qBias ?? null);
          ctx.matmul(k2, s.h, denseOf(L.k, "k"), L.kBias ?? null);
          ctx.matmul(v2, s.h, denseOf(L.v, "v"), L.vBias ?? null);
          ctx.rotary(s.q, s.pos, cfg.rotaryDim, cfg.ropeTheta);
          ctx.rotary(s.k, s.pos, cfg.rotaryDim, cfg.ropeTheta);
          ctx.attention(s.attn, s.q, s.k, s.v, s.pos, 1 / Math.sqrt(D), 0);
          await ctx.flushAsync();
          xs.o.push(a2.read() as Float32Array);
          ctx.matmul(s.o, a2, denseOf(L.attnOut, "attn_out"), null);
          ctx.add(s.x, s.x, s.o);
          ctx.rmsnorm(s.h, s.x, L.ffnNorm, cfg.rmsEps);
          await ctx.flushAsync();
          xs.gu.push(s.h.read() as Float32Array);
          ctx.matmul(s.gu, s.h, denseOf(L.gateUp, "gate_up"), null);
          ctx.swiglu(s.act, s.gu);
          await ctx.flushAsync();
          xs.down.push(s.act.read() as Float32Array);
          ctx.matmul(s.o, s.act, denseOf(L.down, "down"), null);
          ctx.add(s.x, s.x, s.o);
        } finally {
          for (const t of [q2, k2, v2, a2]) t.dispose();
        }
      }
      await ctx.flushAsync();
      const X = { qkv: cat(xs.qkv), o: cat(xs.o), gu: cat(xs.gu), down: cat(xs.down) };
      // down first: its scales divide gate|up's up rows, which gate|up's search then sees; O before QKV likewise (V rows).
      const wDown = hostF32(denseOf(L.down, "down"));
      const down = await searchLinear(ctx, X.down, Ttot, wDown, H, F, meanAbs(X.down, Ttot, F), settings, grid);
      const wGu = hostF32(denseOf(L.gateUp, "gate_up"));
      for (let r = 0; r < F; r++) for (let j = 0; j < H; j++) wGu[(F + r) * H + j] /= down.scales[r];
      const gu = await searchLinear(ctx, X.gu, Ttot, wGu, 2 * F, H, meanAbs(X.gu, Ttot, H), settings, grid);
      const wO = hostF32(denseOf(L.attnOut, "attn_out"));
      const o = await searchLinear(ctx, X.o, Ttot, wO, H, Hq * D, tieToKvGroups(meanAbs(X.o, Ttot, Hq * D), cfg), settings, grid);
      const wQkv = hostF32(denseOf(L.qkv, "qkv"));
      const sv = vScales(o.scales, cfg);
      for (let r = 0; r < nkv; r++) for (let j = 0; j < H; j++) wQkv[(nq + nkv + r) * H + j] /= sv[r];
      const qkv = await searchLinear(ctx, X.qkv, Ttot, wQkv, nq + 2 * nkv, H, meanAbs(X.qkv, Ttot, H), settings, grid);
      plan.layers.push({ qkv: qkv.scales, attnOut: o.scales, gateUp: gu.scales, down: down.scales });
      for (const [part, r] of [["qkv", qkv], ["attn_out", o], ["gate_up", gu], ["down", down]] as const) plan.results[`layers.${i}.${part}`] = { alpha: r.alpha, error: r.error, errorRtn: r.errorRtn };
      opts.onLayer?.(i);
    }
    return plan;
  } finally {
    for (const t of owned) t.dispose();
  }
}

/** The V-row scales (Hkv D) of O's input scales, which are equal across the heads of a group (head g * per). */
export function vScales(oScales: Float32Array, cfg: { numHeads: number; numKvHeads: number; headDim: number }): Float32Array {
  const { numHeads: Hq, numKvHeads: Hkv, headDim: D } = cfg;
  const per = Hq / Hkv;
  const out = new Float32Array(Hkv * D);
  for (let g = 0; g < Hkv; g++) for (let d = 0; d < D; d++) out[g * D + d] = oScales[g * per * D + d];
  return out;
}

/** A host tensor's values as f32 (BF16, F16, F32 sources). */
export function toF32(t: { dtype: string; data: Uint8Array }): Float32Array {
  const d = t.data;
  if (t.dtype === "F32") return new Float32Array(d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength));
  const u = new Uint16Array(d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength));
  if (t.dtype === "BF16") return Float32Array.from(u, bf16ToF32);
  if (t.dtype === "F16") return Float32Array.from(u, f16ToF32);
  throw new Glm4Error("ERR_GLM4_UNKNOWN_DTYPE", `awq: cannot fold into a ${t.dtype} tensor`);
}

/** Which tensors the fold touches, and how (for the record's "folded"). */
export const AWQ_FOLDS: Readonly<Record<string, string>> = {
  qkv: "input scales divided out of attn_norm; V rows (and the V bias) divided by attn_out's scales",
  attn_out: "input scales divided out of the V rows of qkv and the V bias (per KV group)",
  gate_up: "input scales divided out of ffn_norm; up rows divided by down's scales",
  down: "input scales divided out of the up rows of gate_up",
};

/**
 * The fold of `plan` applied to one normalized tensor from disk: norms and the QKV bias come back as F32 with the
 * scales divided out; linear weights come back as F32 with rows divided (V rows of qkv, up rows of gate_up) and their
 * column factors (to multiply in at quantization: quantize_int4's col_scale); other tensors unchanged.
 */
export function foldAwq(
  t: { name: string; dtype: string; shape: number[]; data: Buffer },
  plan: AwqPlan,
  cfg: Glm4Config,
): { tensor: { name: string; dtype: string; shape: number[]; data: Buffer }; colScale?: Float32Array } {
  const p = parseTensorName(t.name);
  if (!p || p.layer === null) return { tensor: t };
  const S = plan.layers[p.layer];
  if (!S) throw new Glm4Error("ERR_GLM4_INTERNAL", `awq: no scales for layer ${p.layer}`);
  const H = cfg.hiddenSize, F = cfg.ffnSize;
  const { q: nq, kv: nkv } = qkvRows(cfg);
  const out = (v: Float32Array) => ({ name: t.name, dtype: "F32", shape: t.shape, data: Buffer.from(v.buffer, v.byteOffset, v.byteLength) });
  switch (p.part) {
    case "attn_norm":
    case "ffn_norm": {
      const s = p.part === "attn_norm" ? S.qkv : S.gateUp;
      return { tensor: out(toF32(t).map((x, j) => x / s[j])) };
    }
    case "qkv_bias": {
      const v = toF32(t), sv = vScales(S.attnOut, cfg);
      for (let r = 0; r < nkv; r++) v[nq + nkv + r] /= sv[r];
      return { tensor: out(v) };
    }
    case "qkv": {
      const v = toF32(t), sv = vScales(S.attnOut, cfg);
      for (let r = 0; r < nkv; r++) for (let j = 0; j < H; j++) v[(nq + nkv + r) * H + j] /= sv[r];
      return { tensor: out(v), colScale: S.qkv };
    }
    case "gate_up": {
      const v = toF32(t);
      for (let r = 0; r < F; r++) for (let j = 0; j < H; j++) v[(F + r) * H + j] /= S.down[r];
      return { tensor: out(v), colScale: S.gateUp };
    }
    case "attn_out":
      return { tensor: out(toF32(t)), colScale: S.attnOut };
    case "down":
      return { tensor: out(toF32(t)), colScale: S.down };
    default:
      return { tensor: t };
  }
}
