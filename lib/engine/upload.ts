/**
 * Weights onto the device: a tensor as stored, and a linear layer quantized to INT4 chunk by chunk (the one path
 * shared by load-time quantization, the synthetic model, GPTQ's desc_act import and `quantize`, so that all of
 * them give the same codes bit for bit). Copies and quantization run off the JS thread (fromBufferAsync,
 * flushAsync): a load never blocks the event loop for a tensor's worth of work.
 */
import { Glm4Error } from "../errors.js";
import type { DType, NativeContext, NativeTensor } from "./native.js";
import type { Linear } from "./weights.js";
import { SCHEME_INFO, type Int4Scheme } from "../checkpoint/int4-format.js";

/** The safetensors dtypes a weight may have, as device dtypes. */
export const DISK_DTYPE: Readonly<Record<string, DType>> = { BF16: "bf16", F16: "f16", F32: "f32" };

/** Uploads one on-disk tensor, converting f16 to f32 (the ops take bf16 or f32 weights). */
export async function upload(ctx: NativeContext, t: { dtype: string; shape: number[]; data: Buffer }): Promise<NativeTensor> {
  const dt = DISK_DTYPE[t.dtype];
  if (!dt) throw new Glm4Error("ERR_GLM4_UNKNOWN_DTYPE", `tensor dtype ${t.dtype} cannot be loaded (BF16, F16, F32 only)`);
  const raw = await ctx.fromBufferAsync(dt, t.shape, t.data);
  if (dt !== "f16") return raw;
  try {
    const f = ctx.empty("f32", t.shape);
    ctx.convert(f, raw);
    await ctx.flushAsync();
    return f;
  } finally {
    raw.dispose();
  }
}

/** Rows per upload chunk: at most 64 MiB of full-precision weight on the device at a time. */
export function chunkRows(k: number, bytesPerElement: number): number {
  return Math.max(1, Math.floor((64 * 2 ** 20) / (k * bytesPerElement)));
}

/**
 * An INT4 linear [n, k] quantized on the device, chunk by chunk: `chunk(r0, r1)` gives rows [r0, r1) in full
 * precision on the device (the caller's upload or a random fill); it is quantized into those rows of the codes
 * and freed before the next chunk, so the device never holds more than one chunk of full-precision weight.
 */
export async function quantizeRows(
  ctx: NativeContext,
  n: number,
  k: number,
  group: 32 | 64 | 128,
  rows: number,
  chunk: (r0: number, r1: number) => NativeTensor | Promise<NativeTensor>,
  scheme: Int4Scheme = "asym",
  colScale?: Float32Array,
): Promise<Linear> {
  if (k % group !== 0) throw new Glm4Error("ERR_GLM4_SHAPE_MISMATCH", `a linear weight [${n}, ${k}] cannot be quantized with group ${group}: ${k} is not a multiple of ${group}; use a group size that divides ${k}`);
  const { code, codebook } = SCHEME_INFO[scheme];
  if (colScale && colScale.length !== k) throw new Glm4Error("ERR_GLM4_INTERNAL", `column scales of length ${colScale.length} for a weight of ${k} columns`);
  const q = { codes: ctx.empty("i4", [n, k]), scales: ctx.empty("bf16", [n, k / group]), zeros: ctx.empty("bf16", [n, k / group]), groupSize: group, ...(codebook ? { codebook } : {}) };
  const cs = colScale ? await ctx.fromBufferAsync("f32", [k], colScale) : null;
  try {
    for (let r0 = 0; r0 < n; r0 += rows) {
      const r1 = Math.min(n, r0 + rows);
      const w = await chunk(r0, r1);
      const part = { codes: q.codes.slice0(r0, r1), scales: q.scales.slice0(r0, r1), zeros: q.zeros.slice0(r0, r1), groupSize: group, ...(codebook ? { codebook } : {}) };
      try {
        ctx.quantizeInt4(part, w, code, cs);
        await ctx.flushAsync();
      } finally {
        w.dispose();
        part.codes.dispose();
        part.scales.dispose();
        part.zeros.dispose();
      }
    }
  } catch (e) {
    q.codes.dispose();
    q.scales.dispose();
    q.zeros.dispose();
    throw e;
  } finally {
    cs?.dispose();
  }
  return { kind: "int4", q, n, k };
}

/** A full-precision weight on the device -> an INT4 Linear (the full-precision copy is freed). */
export async function quantizeOnDevice(ctx: NativeContext, w: NativeTensor, group: 32 | 64 | 128, scheme: Int4Scheme = "asym"): Promise<Linear> {
  const [n, k] = w.shape;
  try {
    return await quantizeRows(ctx, n, k, group, n, () => w, scheme);
  } finally {
    w.dispose();
  }
}

/**
 * A full-precision linear weight in host memory -> INT4 on ctx, quantized by row chunks (at most 64 MiB of
 * full precision on the device at a time).
 */
export async function quantizeHostLinear(
  ctx: NativeContext,
  t: { name: string; dtype: string; shape: number[]; data: Buffer },
  group: 32 | 64 | 128,
  scheme: Int4Scheme = "asym",
  colScale?: Float32Array,
): Promise<Linear> {
  const dt = DISK_DTYPE[t.dtype];
  if (!dt) throw new Glm4Error("ERR_GLM4_UNKNOWN_DTYPE", `tensor ${t.name}: dtype ${t.dtype} cannot be loaded (BF16, F16, F32 only)`);
  const [n, k] = t.shape;
  const rowBytes = k * (dt === "f32" ? 4 : 2);
  return quantizeRows(ctx, n, k, group, chunkRows(k, dt === "f32" ? 4 : 2), (r0, r1) => ctx.fromBufferAsync(dt, [r1 - r0, k], t.data.subarray(r0 * rowBytes, r1 * rowBytes)), scheme, colScale);
}

/** Uploads a linear layer already in the canonical INT4 layout (an INT4 checkpoint, a GPTQ repack). */
export async function uploadInt4(ctx: NativeContext, n: number, k: number, group: 32 | 64 | 128, codes: Uint8Array, scales: Uint16Array, zeros: Uint16Array, codebook: 0 | 1 = 0): Promise<Linear> {
  const parts: NativeTensor[] = [];
  try {
    parts.push(await ctx.fromBufferAsync("i4", [n, k], codes));
    parts.push(await ctx.fromBufferAsync("bf16", [n, k / group], scales));
    parts.push(await ctx.fromBufferAsync("bf16", [n, k / group], zeros));
  } catch (e) {
    for (const p of parts) p.dispose();
    throw e;
  }
  return { kind: "int4", q: { codes: parts[0], scales: parts[1], zeros: parts[2], groupSize: group, ...(codebook ? { codebook } : {}) }, n, k };
}
