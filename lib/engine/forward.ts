/**
 * The forward pass of GLM-4 recorded from the native ops: embedding rows in, N layers (RMSNorm, QKV with bias,
 * partial interleaved rotary, KV-cache write, GQA attention, output projection, residual, RMSNorm, fused
 * gate|up, SwiGLU, down, residual), final norm. The layer order is written once, here (`recordLayers`); the
 * engine records it for prefill chunks and captures it once per decode batch size.
 */
import type { Glm4Config } from "../checkpoint/config.js";
import type { NativeContext, NativeTensor } from "./native.js";
import { isTiled, type Linear, type ModelWeights } from "./weights.js";
import { native } from "./native-binary.js";
import type { KvAddress, KvCache } from "./kv-cache.js";

/**
 * How the unfused layers of T tokens run (recordLayers), from the weights alone:
 * - bf16: h, act and attn are bf16, the tensor-core GEMM's input, written by rmsnorm / add_rmsnorm, swiglu and
 *   attention directly (the f32 result rounded, the same values the convert inside matmul_int4 gave: results do
 *   not change). Where every layer linear is INT4 in the CUDA kernel layout and T > 8 (the GEMM path; T <= 8 takes
 *   the fused GEMVs). Elsewhere (the CPU backend, layout 0, dense weights) a non-GEMM reader needs f32: they stay f32.
 * - packedQkv: T > 8 (and 2..8 rows on the fused GEMVs): one GEMM (GEMV) of the fused QKV weight into qkv f32
 *   [T, (Hq + 2 Hkv) D], then rotary_kv_write_qkv
 *   reads q, k, v out of it (one weight pass and one launch instead of three; per-row results equal the three row
 *   views' on the CPU). Every loader places the fused weight (both namings and GPTQ imports, lib/engine/assembler.ts:
 *   q, k, v are row views of it); a layer without one keeps the three GEMMs.
 * - fusedAdd: with bf16 (the GEMM path), the residual adds of o_proj and down run in the GEMM's epilogue
 *   (linear_int4 mode 1 with a bf16 x: x += y, K pieces adding into x as it is) and the norms after them are plain
 *   rmsnorm: no f32 o buffer written and read back, no zeroing pass for K pieces. The add's order changes where K is
 *   split (x + p0 + p1 instead of x + (p0 + p1)): rounding only.
 * - gu16: with bf16, the gate_up GEMM writes its output in bf16 (the f32 result rounded once) and swiglu reads that:
 *   half the bytes of the largest activation (2F wide) written and read back.
 * - qkv16: with bf16 and packedQkv, the QKV GEMM writes bf16 and rotary_kv_write_qkv reads it (k and v land in the
 *   bf16 cache and q is rounded to bf16 by attention anyway: one more rounding of q and k before the rotation).
 */
export interface LayerPath {
  bf16: boolean;
  packedQkv: boolean;
  fusedAdd: boolean;
  gu16: boolean;
  qkv16: boolean;
}

/**
 * The LayerPath of T tokens for these weights. GLM4_LAYER_PATH (a measurement and test aid, read at each call: a
 * prefill chunk, a decode plan's capture) limits it: a comma list of the parts allowed, "bf16,packed,add,gu16" by default (qkv16: allowed
 * by naming it; H200 run16 measured no prefill gain for it and 1.7e-4 of logit error on a step row);
 * "" or "none" is the path before (f32 activations, three QKV GEMMs, separate residual adds).
 */
export function layerPath(w: ModelWeights, T: number, device = 0): LayerPath {
  const allow = allowedParts();
  return {
    bf16: allow.has("bf16") && T > kGemvRowsMax && tiledLayers(w),
    // 2..8 rows on the fused GEMVs take the packed QKV too: the k and v row views were two more launches of 256
    // rows each (10.7 us apiece at 8 rows on the H200, 0.86 ms of a 4.86 ms B = 8 step; run7's ncu).
    packedQkv: allow.has("packed") && (T > kGemvRowsMax || (T > 1 && tiledLayers(w))) && w.layers.every((L) => L.qkv !== undefined),
    fusedAdd: allow.has("add") && allow.has("bf16") && T > kGemvRowsMax && tiledLayers(w),
    gu16: allow.has("gu16") && allow.has("bf16") && T > kGemvRowsMax && tiledLayers(w) && wholeTiles(w.layers[0]?.gateUp, T, device),
    qkv16:
      allow.has("qkv16") && allow.has("bf16") && allow.has("packed") && T > kGemvRowsMax && tiledLayers(w) &&
      w.layers.every((L) => L.qkv !== undefined) && wholeTiles(w.layers[0]?.qkv, T, device),
  };
}

/**
 * Whether the tensor-core GEMM's own plan for this linear at T rows runs whole tiles (no K pieces): a bf16 out takes
 * whole tiles only, so gu16 / qkv16 are used only where that costs nothing (H200 run16: qkv16 at T = 64 forced
 * the qkv GEMM's 18 tiles onto 18 SMs, B = 64 steps 5.5 -> 7.0 ms). Asked of the addon (linearPath), cached.
 */
const wholeCache = new Map<string, boolean>();
function wholeTiles(l: Linear | undefined, T: number, device: number): boolean {
  if (!l || l.kind !== "int4" || (l.q.layout ?? 0) !== 1) return false;
  const key = `${T},${l.n},${l.k},${l.q.groupSize},${device}`;
  let v = wholeCache.get(key);
  if (v === undefined) {
    const label = native().linearPath(T, l.n, l.k, l.q.groupSize as 32 | 64 | 128, 1, device);
    v = /^wgmma /.test(label) && / splits=1$/.test(label);
    wholeCache.set(key, v);
  }
  return v;
}

function allowedParts(): Set<string> {
  const env = process.env.GLM4_LAYER_PATH;
  return new Set(env === undefined ? ["bf16", "packed", "add", "gu16"] : env.split(",").map((x) => x.trim()));
}

/** Rows up to which the INT4 linears run the GEMV (csrc/ops.h kInt4GemvMaxM); past it the tensor-core GEMM. */
const kGemvRowsMax = 8;

/** Scratch activations for T tokens (a prefill chunk, or the rows of a captured decode step). */
export class Scratch {
  readonly x: NativeTensor; // f32 [T, H] residual stream
  readonly h: NativeTensor; // f32 | bf16 (path.bf16) [T, H] normed
  readonly q: NativeTensor; // f32 [T, Hq, D]
  readonly k: NativeTensor; // f32 [T, Hkv, D]
  readonly v: NativeTensor; // f32 [T, Hkv, D]
  readonly attn: NativeTensor; // f32 | bf16 (path.bf16) [T, Hq, D]
  readonly o: NativeTensor; // f32 [T, H]
  readonly gu: NativeTensor; // f32 | bf16 (path.gu16) [T, 2F]
  readonly act: NativeTensor; // f32 | bf16 (path.bf16) [T, F]
  readonly pos: NativeTensor; // i32 [T]
  /**
   * T = 1: f32 [1, (Hq + 2 Hkv) D], the fused QKV output; q, k, v are views of its three segments.
   * path.packedQkv: f32 [T, (Hq + 2 Hkv) D], the fused QKV GEMM's output (q, k, v separate buffers).
   */
  readonly qkv: NativeTensor | null;
  readonly path: LayerPath;
  constructor(ctx: NativeContext, cfg: Glm4Config, readonly t: number, path?: Partial<LayerPath>) {
    const { hiddenSize: H, numHeads: Hq, numKvHeads: Hkv, headDim: D, ffnSize: F } = cfg;
    const bf16 = path?.bf16 ?? false;
    const packedQkv = t > 1 && (path?.packedQkv ?? false);
    this.path = {
      bf16,
      packedQkv,
      fusedAdd: bf16 && (path?.fusedAdd ?? false),
      gu16: bf16 && (path?.gu16 ?? false),
      qkv16: bf16 && packedQkv && (path?.qkv16 ?? false),
    };
    const act = this.path.bf16 ? "bf16" : "f32";
    this.x = ctx.empty("f32", [t, H]);
    this.h = ctx.empty(act, [t, H]);
    if (t === 1) {
      const qkv = ctx.empty("f32", [(Hq + 2 * Hkv) * D]);
      this.q = qkv.slice0(0, Hq * D).reshape([1, Hq, D]);
      this.k = qkv.slice0(Hq * D, (Hq + Hkv) * D).reshape([1, Hkv, D]);
      this.v = qkv.slice0((Hq + Hkv) * D, (Hq + 2 * Hkv) * D).reshape([1, Hkv, D]);
      this.qkv = qkv.reshape([1, (Hq + 2 * Hkv) * D]);
      qkv.dispose();
    } else {
      this.qkv = this.path.packedQkv ? ctx.empty(this.path.qkv16 ? "bf16" : "f32", [t, (Hq + 2 * Hkv) * D]) : null;
      this.q = ctx.empty("f32", [t, Hq, D]);
      this.k = ctx.empty("f32", [t, Hkv, D]);
      this.v = ctx.empty("f32", [t, Hkv, D]);
    }
    this.attn = ctx.empty(act, [t, Hq, D]);
    this.o = ctx.empty("f32", [t, H]);
    this.gu = ctx.empty(this.path.gu16 ? "bf16" : "f32", [t, 2 * F]);
    this.act = ctx.empty(act, [t, F]);
    this.pos = ctx.empty("i32", [t]);
  }
  dispose(): void {
    for (const t of [this.x, this.h, this.q, this.k, this.v, this.attn, this.o, this.gu, this.act, this.pos]) t.dispose();
    this.qkv?.dispose();
  }
}

/**
 * x (f32 [T, H]) = the embedding rows of `ids`. On CUDA (a bf16 or f32 table) the device gathers them itself from
 * the table's copy in mapped page-locked host memory (HostEmbedding.onDevice; the embedding op, exact). Elsewhere,
 * or with GLM4_EMBED_GATHER=host (a measurement aid; "js": the older JS loop), a bf16 or f16 table's rows are copied on the host in their own dtype
 * (HostEmbedding.gatherRaw: a memcpy a row) into a staging tensor, uploaded straight from that buffer (writeAsync:
 * no second host copy), and widened on the device by a recorded convert: exact (every bf16 and f16 value is an f32),
 * so x holds the same bits as HostEmbedding.gather gives. An f32 table's rows are uploaded as they are. Runs what was
 * recorded before (writeAsync flushes first). `staged` receives the staging tensor: the caller frees it after the
 * flush that runs the convert.
 */
export async function writeEmbeddings(ctx: NativeContext, w: ModelWeights, x: NativeTensor, ids: readonly number[], staged: NativeTensor[]): Promise<void> {
  const e = w.embed;
  if (process.env.GLM4_EMBED_GATHER === "js") {
    // The path before (a measurement aid): rows widened to f32 in a JS loop, written with a host copy.
    x.write(e.gather(ids));
    return;
  }
  const table = process.env.GLM4_EMBED_GATHER !== "host" && ctx.device.startsWith("cuda") ? e.onDevice(ctx) : null;
  if (table) {
    // The device gathers the rows from the table in mapped host memory (HostEmbedding.onDevice): 8 KB of ids go up
    // instead of 16 MB of rows a 2048-token chunk gathered in JS and copied from pageable memory (~8 ms of host time
    // while the device idled, run7). Exact: bf16 -> f32 as the convert below.
    const t = ctx.fromBuffer("i32", [ids.length], Int32Array.from(ids));
    staged.push(t);
    ctx.embedding(x, table, t);
    return;
  }
  const rows = e.gatherRaw(ids);
  if (e.dtype === "F32") {
    await x.writeAsync(rows);
    return;
  }
  const t = ctx.empty(e.dtype === "BF16" ? "bf16" : "f16", [ids.length, e.cols]);
  staged.push(t);
  await t.writeAsync(rows);
  ctx.convert(x, t);
}

/** out = x W^T (+ bias) for an INT4 or a dense weight. */
export function recordLinear(ctx: NativeContext, out: NativeTensor, x: NativeTensor, l: Linear, bias?: NativeTensor): void {
  if (l.kind === "int4") ctx.matmulInt4(out, x, l.q, bias ?? null);
  else ctx.matmul(out, x, l.w, bias ?? null);
}

/**
 * Records the layers for the embedded tokens in s.x; leaves the final hidden states in s.x. Rotary and attention
 * take the sequence positions s.pos; the KV write takes the cache rows of `addr` (i32 [T]) and attention reads
 * through its block table. `addr` null (a cache of one sequence, lib/engine/kv-cache.ts): the positions are the
 * rows and attention reads the cache as one contiguous sequence.
 *
 * Each residual add is fused with the RMSNorm that follows it (add_rmsnorm: the FFN norm, the next layer's
 * attention norm) and rotary(q) + rotary(k) + kv_write are one op (rotary_kv_write): 4 launches a layer fewer,
 * with results bit-identical to the unfused sequence. s.path (layerPath) picks bf16 activations for the GEMMs and
 * the packed QKV GEMM + rotary_kv_write_qkv for T > 8. With `final` (out f32 or bf16 [T, H], the final norm's weight),
 * the last residual add is fused with the final norm too, written to final.out (s.x still ends as the final
 * hidden states).
 */
export function recordLayers(ctx: NativeContext, cfg: Glm4Config, w: ModelWeights, s: Scratch, kv: KvCache, addr: KvAddress | null, final?: { out: NativeTensor; norm: NativeTensor }, afterLayer?: (i: number) => void): void {
  if (fusedDecode(w, s.t)) {
    recordLayersFused(ctx, cfg, w, s, kv, addr, afterLayer);
    if (final) ctx.rmsnorm(final.out, s.x, final.norm, cfg.rmsEps);
    return;
  }
  const T = s.t;
  const rows = addr?.rows ?? s.pos;
  const kcache = kv.k, vcache = kv.v;
  const scale = 1 / Math.sqrt(cfg.headDim);
  const q2 = s.q.reshape([T, cfg.numHeads * cfg.headDim]);
  const k2 = s.k.reshape([T, cfg.numKvHeads * cfg.headDim]);
  const v2 = s.v.reshape([T, cfg.numKvHeads * cfg.headDim]);
  const a2 = s.attn.reshape([T, cfg.numHeads * cfg.headDim]);
  // Layer 0's attention norm stands alone; every later one is fused with the previous layer's last residual add.
  if (cfg.numLayers > 0) ctx.rmsnorm(s.h, s.x, w.layers[0].attnNorm, cfg.rmsEps);
  else if (final) ctx.rmsnorm(final.out, s.x, final.norm, cfg.rmsEps);
  for (let i = 0; i < cfg.numLayers; i++) {
    const L = w.layers[i];
    if (s.qkv && L.qkv && s.path.packedQkv) {
      // T > 8: one GEMM of the fused QKV weight, rotary + KV write reading q, k, v out of its packed rows.
      recordLinear(ctx, s.qkv, s.h, L.qkv, L.qkvBias);
      ctx.rotaryKvWriteQkv(s.q, s.qkv, kcache[i], vcache[i], s.pos, rows, cfg.rotaryDim, cfg.ropeTheta);
    } else {
      if (s.qkv && L.qkv && T === 1) {
        // One token: one launch for the fused QKV weight (per-row arithmetic is the same as the three views').
        recordLinear(ctx, s.qkv, s.h, L.qkv, L.qkvBias);
      } else {
        recordLinear(ctx, q2, s.h, L.q, L.qBias);
        recordLinear(ctx, k2, s.h, L.k, L.kBias);
        recordLinear(ctx, v2, s.h, L.v, L.vBias);
      }
      ctx.rotaryKvWrite(s.q, s.k, s.v, kcache[i], vcache[i], s.pos, rows, cfg.rotaryDim, cfg.ropeTheta);
    }
    if (addr) ctx.attention(s.attn, s.q, kcache[i], vcache[i], s.pos, scale, kv.blockSize, addr.table, addr.seq);
    else ctx.attention(s.attn, s.q, kcache[i], vcache[i], s.pos, scale, 0);
    if (s.path.fusedAdd && L.attnOut.kind === "int4" && L.down.kind === "int4") {
      // The residual adds in the GEMM epilogues (x += a W^T), then plain norms.
      ctx.linearInt4(s.x, a2, L.attnOut.q, cfg.rmsEps, 1, null, null); // x += attn Wo^T
      ctx.rmsnorm(s.h, s.x, L.ffnNorm, cfg.rmsEps);
      recordLinear(ctx, s.gu, s.h, L.gateUp);
      ctx.swiglu(s.act, s.gu);
      ctx.linearInt4(s.x, s.act, L.down.q, cfg.rmsEps, 1, null, null); // x += act Wd^T
      if (i + 1 < cfg.numLayers) ctx.rmsnorm(s.h, s.x, w.layers[i + 1].attnNorm, cfg.rmsEps);
      else if (final) ctx.rmsnorm(final.out, s.x, final.norm, cfg.rmsEps);
      afterLayer?.(i);
      continue;
    }
    recordLinear(ctx, s.o, a2, L.attnOut);
    ctx.addRmsnorm(s.h, s.x, s.o, L.ffnNorm, cfg.rmsEps);
    recordLinear(ctx, s.gu, s.h, L.gateUp);
    ctx.swiglu(s.act, s.gu);
    recordLinear(ctx, s.o, s.act, L.down);
    if (i + 1 < cfg.numLayers) ctx.addRmsnorm(s.h, s.x, s.o, w.layers[i + 1].attnNorm, cfg.rmsEps);
    else if (final) ctx.addRmsnorm(final.out, s.x, s.o, final.norm, cfg.rmsEps);
    else ctx.add(s.x, s.x, s.o);
    afterLayer?.(i);
  }
  for (const t of [q2, k2, v2, a2]) t.dispose();
}

/**
 * Whether the layers of T tokens take the fused decode path: T <= 8 (one launch of the tensor-core GEMV) and every
 * linear INT4 in the CUDA kernel layout (repackForKernels at load on CUDA).
 */
export function fusedDecode(w: ModelWeights, T: number): boolean {
  return T <= kGemvRowsMax && tiledLayers(w);
}

/** Whether every layer linear is INT4 in the CUDA kernel layout (layout 1: only CUDA contexts repack to it). */
function tiledLayers(w: ModelWeights): boolean {
  return w.layers.every((L) => isTiled(L.q) && isTiled(L.k) && isTiled(L.v) && (!L.qkv || isTiled(L.qkv)) && isTiled(L.attnOut) && isTiled(L.gateUp) && isTiled(L.down));
}

/**
 * The decode layers on linear_int4 (csrc/op_list.h): a layer is [QKV GEMV with the attention RMSNorm as its
 * prologue and the bias] [rotary + KV write] [attention] [O GEMV adding into the residual stream] [gate|up GEMV
 * with the FFN RMSNorm prologue and SwiGLU epilogue] [down GEMV adding into the residual stream]: 6 launches a layer
 * (the unfused path: 9). s.x holds the residual stream throughout and the final hidden states at the end.
 * Rows stay independent of the batch: linear_int4's per-row arithmetic depends on the weight's K only, so the packed
 * QKV rows of T = 2..8 (or q, k, v through the row views, GLM4_LAYER_PATH without "packed") equal the fused QKV
 * launch of T = 1 bit for bit, and rotary_kv_write_qkv equals rotary_kv_write bit for bit (op cases).
 */
function recordLayersFused(ctx: NativeContext, cfg: Glm4Config, w: ModelWeights, s: Scratch, kv: KvCache, addr: KvAddress | null, afterLayer?: (i: number) => void): void {
  const T = s.t, eps = cfg.rmsEps;
  const rows = addr?.rows ?? s.pos;
  const scale = 1 / Math.sqrt(cfg.headDim);
  const q2 = s.q.reshape([T, cfg.numHeads * cfg.headDim]);
  const k2 = s.k.reshape([T, cfg.numKvHeads * cfg.headDim]);
  const v2 = s.v.reshape([T, cfg.numKvHeads * cfg.headDim]);
  const a2 = s.attn.reshape([T, cfg.numHeads * cfg.headDim]);
  const q = (l: Linear) => (l as Extract<Linear, { kind: "int4" }>).q;
  for (let i = 0; i < cfg.numLayers; i++) {
    const L = w.layers[i];
    if (s.qkv && L.qkv && T > 1 && s.path.packedQkv) {
      // 2..8 rows: one launch into the packed [T, (Hq + 2 Hkv) D] rows, rotary + KV write reading q, k, v out of them
      ctx.linearInt4(s.qkv, s.x, q(L.qkv), eps, 0, L.qkvBias ?? null, L.attnNorm);
      ctx.rotaryKvWriteQkv(s.q, s.qkv, kv.k[i], kv.v[i], s.pos, rows, cfg.rotaryDim, cfg.ropeTheta);
    } else {
      if (s.qkv && L.qkv) {
        ctx.linearInt4(s.qkv, s.x, q(L.qkv), eps, 0, L.qkvBias ?? null, L.attnNorm);
      } else {
        ctx.linearInt4(q2, s.x, q(L.q), eps, 0, L.qBias ?? null, L.attnNorm);
        ctx.linearInt4(k2, s.x, q(L.k), eps, 0, L.kBias ?? null, L.attnNorm);
        ctx.linearInt4(v2, s.x, q(L.v), eps, 0, L.vBias ?? null, L.attnNorm);
      }
      ctx.rotaryKvWrite(s.q, s.k, s.v, kv.k[i], kv.v[i], s.pos, rows, cfg.rotaryDim, cfg.ropeTheta);
    }
    if (addr) ctx.attention(s.attn, s.q, kv.k[i], kv.v[i], s.pos, scale, kv.blockSize, addr.table, addr.seq);
    else ctx.attention(s.attn, s.q, kv.k[i], kv.v[i], s.pos, scale, 0);
    ctx.linearInt4(s.x, a2, q(L.attnOut), eps, 1); // x += attn Wo^T
    ctx.linearInt4(s.act, s.x, q(L.gateUp), eps, 2, null, L.ffnNorm); // act = silu(gate) * up of rmsnorm(x)
    ctx.linearInt4(s.x, s.act, q(L.down), eps, 1); // x += act Wd^T
    afterLayer?.(i);
  }
  for (const t of [q2, k2, v2, a2]) t.dispose();
}

/**
 * Logits of the hidden states x (f32 [T, H]): the final RMSNorm and the output layer, fused into one launch when the
 * output layer is in the CUDA kernel layout and T <= 8; else rmsnorm into h (f32 [T, H]) and the output linear.
 */
export function recordLogits(ctx: NativeContext, cfg: Glm4Config, w: ModelWeights, logits: NativeTensor, x: NativeTensor, h: NativeTensor): void {
  if (isTiled(w.output) && x.shape[0] <= 8) ctx.linearInt4(logits, x, w.output.q, cfg.rmsEps, 0, null, w.finalNorm);
  else {
    ctx.rmsnorm(h, x, w.finalNorm, cfg.rmsEps);
    recordLinear(ctx, logits, h, w.output);
  }
}
