/**
 * GPTQ checkpoints (AutoGPTQ, GPTQModel) of GLM-4, repacked into the canonical INT4 layout at load.
 *
 * On disk, for a linear layer y = x W^T with W [N, K] (N outputs, K inputs) and GPTQ group size G:
 *   <prefix>.qweight  I32 [K/8, N]   8 codes of 4 bits per int32 along K, low bits first:
 *                                    code(k, n) = (qweight[k/8, n] >> (4 * (k % 8))) & 15
 *   <prefix>.qzeros   I32 [ng, N/8]  8 zero points of 4 bits per int32 along N, low bits first:
 *                                    stored(g, n) = (qzeros[g, n/8] >> (4 * (n % 8))) & 15
 *   <prefix>.scales   F16 [ng, N]    scale of (group g, output n)
 *   <prefix>.g_idx    I32 [K]        the group of each input column (absent in some exports: k / G)
 *   W(n, k) = (code(k, n) - zero(g_idx[k], n)) * scale(g_idx[k], n)
 * with ng = ceil(K / G) (1 when G = -1). The zero point is stored minus one in the original format
 * (checkpoint_format "gptq", "v1"): zero = stored + 1, so 1..16 (a true zero of 0 cannot be written in v1;
 * its writers store 15, which every v1 reader, this one included, reads as 16). GPTQModel's "gptq_v2" stores
 * the zero itself: zero = stored, 0..15. Symmetric checkpoints (sym) are the same with zero 8.
 * The quantization settings come from config.json's "quantization_config" (transformers) or
 * quantize_config.json (AutoGPTQ / GPTQModel): bits, group_size, desc_act, sym, checkpoint_format, lm_head.
 * Tensor prefixes follow the checkpoint's naming (lib/checkpoint/namings.ts): original
 * `transformer.encoder.layers.N.self_attention.query_key_value`, ...; HF `model.layers.N.self_attn.q_proj`,
 * `k_proj`, `v_proj` (fused by rows after the repack), ...
 *
 * The repack: codes need no arithmetic at all. The canonical layout packs codes along K, two a byte, low
 * nibble first; GPTQ packs them along K, eight an int32, low bits first. Read as little-endian bytes, int32
 * (k/8, n) is exactly canonical bytes (n, k/2 .. k/2+3): the repack is a transpose of [K/8, N] 32-bit words.
 * Zero points are small integers, exact in bf16 (0..16).
 *
 * Decisions (README, "GPTQ import"):
 * - Scales are rounded f16 -> bf16 (round to nearest even): the canonical layout stores bf16 scales, and bf16
 *   keeps 8 significant bits where f16 keeps 11, so each group's scale moves by at most 2^-9 of itself (the
 *   exponent range is wider in bf16: nothing overflows or goes subnormal). Every weight of the group moves by
 *   the same factor: |dw| <= 2^-9 |w|, far below the 4-bit step itself (about 1/15 of the group's range).
 *   test/gptq.test.ts measures what it does to the tiny model's logits. Keeping f16 exactly would need a
 *   second scale dtype in every kernel; it is not worth it for a change smaller than the quantization noise.
 * - Groups must be contiguous runs of 32, 64 or 128 columns in the canonical layout. When g_idx is constant
 *   on every aligned block of 128 (or 64, or 32) columns, the repack is exact: that covers desc_act=false
 *   with G = 32, 64, 128, and also G = 256, ..., or -1 (one group per row), whose scale and zero are repeated
 *   per 128 columns. With act-order (desc_act=true) the columns of one group are scattered over K; honoring
 *   that would need the layer's input permuted, which is possible for down_proj (permute gate_up's rows)
 *   but not for layers fed by the residual stream or by attention. Those layers are dequantized exactly
 *   (f16 scales, float32: every product is exact) and re-quantized with this library's own quantizer at the
 *   load's group size, with a warning (process 'warning' event, code GLM4_GPTQ_REQUANTIZED) listing them.
 *   That adds a second rounding; it is not a repack, and the warning says so.
 * - Linear layers the checkpoint keeps in full precision (lm_head unless lm_head: true) are quantized at
 *   load like a BF16 checkpoint's, at the load's group size.
 */
import path from "node:path";
import { Glm4Error } from "../errors.js";
import { FileProblem, readRegularFile } from "../files.js";
import type { Glm4Config } from "./config.js";
import { describeDims, isLinearName, shapesEqual } from "./tensors.js";
import { Checkpoint } from "./checkpoint.js";
import { detectNaming, isIgnoredTensor, onDiskLayout, type Naming } from "./namings.js";
import { assembleFromCheckpoint, type WeightLoadOptions } from "../engine/assembler.js";
import { checkHostFits } from "./checkpoint.js";
import { chunkRows, quantizeRows, uploadInt4 } from "../engine/upload.js";
import type { NativeContext } from "../engine/native.js";
import type { Linear, ModelWeights } from "../engine/weights.js";
import type { GroupSize } from "./int4-format.js";
import { bf16ToF32, f16ToF32, f32ToBf16, isPlainObject, show, u16View, u32View } from "../util.js";

export interface GptqConfig {
  /** The file the settings were read from. */
  file: string;
  bits: 4;
  /** Input columns per group; -1 = one group per row. */
  groupSize: number;
  descAct: boolean;
  sym: boolean;
  /** "gptq" (v1: zero stored minus one) or "gptq_v2" (zero stored as is). */
  format: "gptq" | "gptq_v2";
  /** Whether the output layer is quantized too. */
  lmHead: boolean;
}

function badQ(file: string, what: string, todo = "Use a 4-bit GPTQ checkpoint of GLM-4-9B, or the BF16 checkpoint (quantized at load)"): Glm4Error {
  return new Glm4Error("ERR_GLM4_BAD_QUANTIZATION", `${file}: ${what}. ${todo}`);
}

async function readJsonIfAny(file: string): Promise<unknown> {
  let text: string;
  try {
    text = (await readRegularFile(file, 16 * 2 ** 20)).toString("utf8");
  } catch (e) {
    if (!(e instanceof FileProblem)) throw e;
    if (e.reason === "missing") return undefined;
    throw badQ(file, e.message, e.reason === "io" ? "Check the file's permissions" : undefined);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Glm4Error("ERR_GLM4_BAD_CONFIG", `${file}: is not valid JSON (${(e as Error).message}). Fix the file or re-download it.`);
  }
}

/** Validate one GPTQ settings object (from quantize_config.json or config.json's quantization_config). */
export function parseGptqConfig(o: unknown, file: string): GptqConfig {
  if (!isPlainObject(o)) throw badQ(file, `the GPTQ settings must be a JSON object, got ${show(o)}`);
  const method = o.quant_method;
  if (method !== undefined && method !== "gptq") {
    throw new Glm4Error("ERR_GLM4_UNSUPPORTED", `${file}: the checkpoint is quantized with ${show(method)}; this library imports GPTQ checkpoints only. Use the BF16 checkpoint (quantized at load) or a GPTQ export.`);
  }
  if (typeof o.bits !== "number" || o.bits !== 4) {
    throw new Glm4Error("ERR_GLM4_UNSUPPORTED", `${file}: "bits" is ${show(o.bits)}; only 4-bit GPTQ checkpoints can be imported. Use a 4-bit export or the BF16 checkpoint.`);
  }
  const g = o.group_size;
  if (typeof g !== "number" || !Number.isSafeInteger(g) || (g !== -1 && (g < 1 || g > 1 << 20))) throw badQ(file, `"group_size" must be -1 or an integer in [1, ${1 << 20}], got ${show(g)}`);
  const bool = (key: string, def: boolean) => {
    const v = o[key];
    if (v === undefined || v === null) return def;
    if (typeof v !== "boolean") throw badQ(file, `"${key}" must be true or false, got ${show(v)}`);
    return v;
  };
  if (bool("is_marlin_format", false)) {
    throw new Glm4Error("ERR_GLM4_UNSUPPORTED", `${file}: "is_marlin_format" is true: the weights are packed for the Marlin kernel, not in the GPTQ layout. Use the plain GPTQ export of the model.`);
  }
  const fmt = o.checkpoint_format ?? o.format ?? "gptq";
  if (fmt !== "gptq" && fmt !== "gptq_v2") {
    throw new Glm4Error("ERR_GLM4_UNSUPPORTED", `${file}: checkpoint_format ${show(fmt)} is not supported (only "gptq" and "gptq_v2"): other formats store kernel-specific packings. Save the model in the gptq format.`);
  }
  const pack = o.pack_dtype ?? "int32";
  if (pack !== "int32") throw new Glm4Error("ERR_GLM4_UNSUPPORTED", `${file}: "pack_dtype" is ${show(pack)}; only int32 packing is supported. Save the model with pack_dtype int32.`);
  if (isPlainObject(o.dynamic) && Object.keys(o.dynamic).length > 0) {
    throw new Glm4Error("ERR_GLM4_UNSUPPORTED", `${file}: per-module overrides ("dynamic") are not supported: every layer must share one setting. Quantize without dynamic overrides.`);
  }
  return { file, bits: 4, groupSize: g as number, descAct: bool("desc_act", false), sym: bool("sym", true), format: fmt, lmHead: bool("lm_head", false) };
}

export const QUANTIZE_CONFIG_FILE = "quantize_config.json";

/**
 * The GPTQ settings of `dir`: config.json's quantization_config, else quantize_config.json; null when the
 * checkpoint is not quantized. Another quantization method (awq, bitsandbytes, ...) throws ERR_GLM4_UNSUPPORTED.
 */
export async function readGptqConfig(dir: string): Promise<GptqConfig | null> {
  const cfgFile = path.join(dir, "config.json");
  const qcFile = path.join(dir, QUANTIZE_CONFIG_FILE);
  const cfg = await readJsonIfAny(cfgFile);
  const inCfg = isPlainObject(cfg) ? cfg.quantization_config : undefined;
  const qc = await readJsonIfAny(qcFile);
  if (inCfg === undefined || inCfg === null) return qc === undefined ? null : parseGptqConfig(qc, qcFile);
  const a = parseGptqConfig(inCfg, cfgFile);
  if (qc !== undefined) {
    const b = parseGptqConfig(qc, qcFile);
    for (const k of ["groupSize", "descAct", "sym", "format", "lmHead"] as const) {
      if (a[k] !== b[k]) throw badQ(cfgFile, `quantization_config says ${k} ${show(a[k])} but ${QUANTIZE_CONFIG_FILE} says ${show(b[k])}`, "Keep the files of one export together");
    }
  }
  return a;
}

// ---------------------------------------------------------------------------------------------------------
// Repacking (pure functions on host arrays; little-endian host)
// ---------------------------------------------------------------------------------------------------------

/** One GPTQ linear (or one of HF's q/k/v parts) in host memory. */
export interface GptqTensors {
  /** Tensor prefix, for messages. */
  name: string;
  n: number;
  k: number;
  /** [K/8, N] words. */
  qweight: Uint32Array;
  /** [ng, N/8] words. */
  qzeros: Uint32Array;
  /** [ng, N], the stored scales' exact values. */
  scales: Float32Array;
  /** [K], the group of each input column. */
  gIdx: Int32Array;
  ng: number;
  /** v1 ("gptq"): zero = stored + 1. */
  v1: boolean;
}

/** The group index of each input column when g_idx is absent: k / G (G = -1: all 0). */
export function defaultGIdx(k: number, groupSize: number): Int32Array {
  const g = new Int32Array(k);
  if (groupSize > 0) for (let i = 0; i < k; i++) g[i] = Math.floor(i / groupSize);
  return g;
}

/**
 * The largest canonical group (128, 64, 32) such that g_idx is constant on every aligned block of that many
 * columns, i.e. GPTQ's groups can be written as canonical groups exactly; null when none (act-order).
 */
export function canonicalGroupOf(gIdx: Int32Array, k: number): GroupSize | null {
  for (const G of [128, 64, 32] as const) {
    if (k % G !== 0) continue;
    let ok = true;
    for (let b = 0; b < k && ok; b += G) {
      const g0 = gIdx[b];
      for (let i = b + 1; i < b + G; i++) if (gIdx[i] !== g0) { ok = false; break; }
    }
    if (ok) return G;
  }
  return null;
}

/** The zero point of (group g, output n) as a number (v1: stored + 1). */
function zeroOf(t: GptqTensors, g: number, n: number): number {
  const nib = (t.qzeros[g * (t.n >>> 3) + (n >>> 3)] >>> ((n & 7) * 4)) & 15;
  return t.v1 ? nib + 1 : nib;
}

/** Throws unless every scale is finite and > 0 and every g_idx entry names a group. */
export function checkGptqTensors(t: GptqTensors, file: string): void {
  for (let i = 0; i < t.scales.length; i++) {
    const s = t.scales[i];
    if (!(s > 0) || !Number.isFinite(s)) {
      throw badQ(file, `tensor ${JSON.stringify(`${t.name}.scales`)} group ${Math.floor(i / t.n)}, output ${i % t.n} holds ${s}; scales must be finite and > 0. The file is damaged`, "Re-download the checkpoint");
    }
  }
  for (let i = 0; i < t.k; i++) {
    const g = t.gIdx[i];
    if (!(g >= 0 && g < t.ng)) {
      throw badQ(file, `tensor ${JSON.stringify(`${t.name}.g_idx`)} puts input column ${i} in group ${g}, but there are ${t.ng} groups. The file is damaged`, "Re-download the checkpoint");
    }
  }
}

/**
 * GPTQ -> canonical rows [N, K] at group G (canonicalGroupOf(gIdx) must be a multiple of G): codes by a
 * transpose of 32-bit words, scales rounded f16 -> bf16, zeros exact.
 */
export function repackGptq(t: GptqTensors, G: GroupSize): { codes: Uint8Array; scales: Uint16Array; zeros: Uint16Array } {
  const { n, k } = t;
  const k8 = k >>> 3;
  const codes = new Uint8Array((n * k) / 2);
  const c32 = new Uint32Array(codes.buffer);
  const qw = t.qweight;
  // Blocked transpose [K/8, N] -> [N, K/8]: 64 x 64 word tiles keep both sides in cache.
  const B = 64;
  for (let r0 = 0; r0 < k8; r0 += B) {
    const r1 = Math.min(k8, r0 + B);
    for (let c0 = 0; c0 < n; c0 += B) {
      const c1 = Math.min(n, c0 + B);
      for (let r = r0; r < r1; r++) {
        const src = r * n;
        for (let c = c0; c < c1; c++) c32[c * k8 + r] = qw[src + c];
      }
    }
  }
  const ngc = k / G;
  const scales = new Uint16Array(n * ngc);
  const zeros = new Uint16Array(n * ngc);
  for (let b = 0; b < ngc; b++) {
    const g = t.gIdx[b * G];
    for (let r = 0; r < n; r++) {
      scales[r * ngc + b] = f32ToBf16(t.scales[g * n + r]);
      zeros[r * ngc + b] = f32ToBf16(zeroOf(t, g, r));
    }
  }
  return { codes, scales, zeros };
}

/** The exact weights [N, K] in float32: (code - zero) * scale with the stored (f16) scale; every product is exact. */
export function dequantGptq(t: GptqTensors, out = new Float32Array(t.n * t.k), rowOffset = 0): Float32Array {
  const { n, k } = t;
  const zs = new Float32Array(t.ng * n);
  for (let g = 0; g < t.ng; g++) for (let r = 0; r < n; r++) zs[g * n + r] = zeroOf(t, g, r);
  for (let kk = 0; kk < k; kk++) {
    const g = t.gIdx[kk];
    const row = (kk >>> 3) * n, shift = (kk & 7) * 4;
    for (let r = 0; r < n; r++) {
      const code = (t.qweight[row + r] >>> shift) & 15;
      out[(rowOffset + r) * k + kk] = (code - zs[g * n + r]) * t.scales[g * n + r];
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Checking and loading a checkpoint
// ---------------------------------------------------------------------------------------------------------

interface GptqPartPlan {
  prefix: string;
  n: number;
  ng: number;
  hasGIdx: boolean;
}

export type GptqEntry =
  | { kind: "gptq"; name: string; n: number; k: number; parts: GptqPartPlan[] }
  | { kind: "full"; name: string; shape: number[]; dtype: string; parts: string[] };

/**
 * Check a GPTQ checkpoint's headers against the config and the GPTQ settings, before any data is read.
 * Returns the normalized tensors in model order, and the naming.
 */
export function checkGptqCheckpoint(ckpt: Checkpoint, cfg: Glm4Config, gcfg: GptqConfig): { naming: Naming; entries: GptqEntry[] } {
  const dir = ckpt.dir;
  const naming = detectNaming(ckpt.tensors.keys(), dir);
  const used = new Set<string>();
  const where = (t: string) => ckpt.tensors.get(t)?.file ?? dir;
  const need = (t: string, of: string) => {
    const info = ckpt.tensors.get(t);
    if (info === undefined) {
      throw new Glm4Error("ERR_GLM4_MISSING_TENSOR", `${dir}: tensor ${JSON.stringify(t)} (GPTQ, part of ${of}) is missing; the config describes ${describeDims(cfg)}. Re-download the incomplete checkpoint.`);
    }
    used.add(t);
    return info;
  };
  const expectT = (t: string, dtypes: string[], shape: number[], of: string) => {
    const info = need(t, of);
    if (!dtypes.includes(info.dtype)) {
      throw new Glm4Error("ERR_GLM4_DTYPE_MISMATCH", `${where(t)}: tensor ${JSON.stringify(t)} is ${info.dtype}; a GPTQ checkpoint stores it as ${dtypes.join(" or ")}. Re-download or re-export the checkpoint.`);
    }
    if (!shapesEqual(info.shape, shape)) {
      throw new Glm4Error("ERR_GLM4_SHAPE_MISMATCH", `${where(t)}: tensor ${JSON.stringify(t)} has shape [${info.shape.join(", ")}], but the config (${describeDims(cfg)}) with GPTQ group_size ${gcfg.groupSize} needs [${shape.join(", ")}] for ${of}. Check that config.json and the quantization settings belong to these weights.`);
    }
    return info;
  };
  const entries: GptqEntry[] = [];
  for (const e of onDiskLayout(cfg, naming)) {
    const prefixes = e.parts.map((p) => p.onDisk.replace(/\.weight$/, ""));
    const quantized = isLinearName(e.name) && prefixes.map((p) => ckpt.tensors.has(`${p}.qweight`));
    if (quantized && quantized.some((q) => q)) {
      if (!quantized.every((q) => q)) throw new Glm4Error("ERR_GLM4_UNSUPPORTED", `${dir}: ${prefixes.filter((_, i) => !quantized[i]).join(", ")} is not quantized but ${prefixes.filter((_, i) => quantized[i]).join(", ")} is; they are fused into ${e.name} and must be stored alike.`);
      const k = e.shape[1];
      if (k % 8 !== 0) throw badQ(dir, `${e.name} has ${k} input columns, not a multiple of 8: it cannot be GPTQ-packed`);
      const ng = gcfg.groupSize === -1 ? 1 : Math.ceil(k / gcfg.groupSize);
      const parts: GptqPartPlan[] = [];
      for (let i = 0; i < prefixes.length; i++) {
        const p = prefixes[i], n = e.parts[i].shape[0];
        if (n % 8 !== 0) throw badQ(dir, `${p} has ${n} outputs, not a multiple of 8: its zero points cannot be GPTQ-packed`);
        expectT(`${p}.qweight`, ["I32", "U32"], [k / 8, n], e.name);
        const sc = need(`${p}.scales`, e.name);
        if (sc.shape.length === 2 && sc.shape[1] === n && sc.shape[0] !== ng) {
          throw badQ(gcfg.file, `group_size ${gcfg.groupSize} means ${ng} groups of the ${k} input columns of ${e.name}, but tensor ${JSON.stringify(`${p}.scales`)} in ${where(`${p}.scales`)} holds ${sc.shape[0]}`, "Keep the quantization settings of this export with its weights");
        }
        expectT(`${p}.scales`, ["F16", "BF16", "F32"], [ng, n], e.name);
        expectT(`${p}.qzeros`, ["I32", "U32"], [ng, n / 8], e.name);
        const hasGIdx = ckpt.tensors.has(`${p}.g_idx`);
        if (hasGIdx) expectT(`${p}.g_idx`, ["I32"], [k], e.name);
        else if (gcfg.descAct) throw new Glm4Error("ERR_GLM4_MISSING_TENSOR", `${dir}: tensor ${JSON.stringify(`${p}.g_idx`)} is missing, but desc_act (act-order) checkpoints need it to know each column's group. Re-download the checkpoint.`);
        parts.push({ prefix: p, n, ng, hasGIdx });
      }
      entries.push({ kind: "gptq", name: e.name, n: e.shape[0], k, parts });
    } else {
      let dtype = "";
      for (const p of e.parts) {
        const info = need(p.onDisk, e.name);
        if (info.dtype !== "BF16" && info.dtype !== "F16" && info.dtype !== "F32") {
          throw new Glm4Error("ERR_GLM4_UNKNOWN_DTYPE", `${where(p.onDisk)}: tensor ${JSON.stringify(p.onDisk)} is ${info.dtype}; full-precision tensors load from BF16, F16 or F32 only.`);
        }
        if (!shapesEqual(info.shape, p.shape)) {
          throw new Glm4Error("ERR_GLM4_SHAPE_MISMATCH", `${where(p.onDisk)}: tensor ${JSON.stringify(p.onDisk)} has shape [${info.shape.join(", ")}], but the config (${describeDims(cfg)}) expects [${p.shape.join(", ")}] for ${e.name}. Check that config.json belongs to these weights.`);
        }
        if (dtype && info.dtype !== dtype) throw new Glm4Error("ERR_GLM4_DTYPE_MISMATCH", `${dir}: the parts of ${e.name} mix ${dtype} and ${info.dtype}; they are fused and must share a dtype.`);
        dtype = info.dtype;
      }
      entries.push({ kind: "full", name: e.name, shape: [...e.shape], dtype, parts: e.parts.map((p) => p.onDisk) });
    }
  }
  const unused = [...ckpt.tensors.keys()].filter((t) => !used.has(t) && !isIgnoredTensor(t));
  if (unused.length > 0) {
    throw new Glm4Error("ERR_GLM4_UNEXPECTED_TENSOR", `${where(unused[0])}: tensor ${JSON.stringify(unused[0])}${unused.length > 1 ? ` and ${unused.length - 1} more` : ""} are not used by the model the config describes (${describeDims(cfg)}, GPTQ). Check that config.json belongs to these weights.`);
  }
  return { naming, entries };
}

/** Reads one GPTQ part's tensors into host arrays. */
async function readPart(ckpt: Checkpoint, p: GptqPartPlan, k: number, gcfg: GptqConfig): Promise<GptqTensors> {
  const qweight = u32View((await ckpt.read(`${p.prefix}.qweight`)).data);
  const qzeros = u32View((await ckpt.read(`${p.prefix}.qzeros`)).data);
  const sc = await ckpt.read(`${p.prefix}.scales`);
  const scales = new Float32Array(p.ng * p.n);
  if (sc.dtype === "F32") scales.set(new Float32Array(new Uint8Array(sc.data).buffer));
  else {
    const u = u16View(sc.data);
    for (let i = 0; i < u.length; i++) scales[i] = sc.dtype === "F16" ? f16ToF32(u[i]) : bf16ToF32(u[i]);
  }
  let gIdx: Int32Array;
  if (p.hasGIdx) {
    const v = u32View((await ckpt.read(`${p.prefix}.g_idx`)).data);
    gIdx = new Int32Array(v.buffer, v.byteOffset, k);
  } else gIdx = defaultGIdx(k, gcfg.groupSize);
  const t: GptqTensors = { name: p.prefix, n: p.n, k, qweight, qzeros, scales, gIdx, ng: p.ng, v1: gcfg.format === "gptq" };
  checkGptqTensors(t, ckpt.tensors.get(`${p.prefix}.scales`)!.file);
  return t;
}

/** What an import did, layer by layer. */
export interface GptqImportReport {
  naming: Naming;
  /** Linear layers repacked exactly, with their canonical group size. */
  repacked: { name: string; groupSize: GroupSize }[];
  /** Linear layers dequantized and re-quantized (act-order groups that are not contiguous). */
  requantized: string[];
  /** Linear layers stored in full precision, quantized at load. */
  quantizedAtLoad: string[];
}

/**
 * Loads a GPTQ checkpoint onto ctx: every quantized linear repacked to the canonical layout (or re-quantized,
 * see the header), the rest as from a BF16 checkpoint. `opts.groupSize` is the group of layers quantized here.
 */
export async function loadGptqWeights(dir: string, cfg: Glm4Config, ctx: NativeContext, opts: WeightLoadOptions, gcfg: GptqConfig, onReport?: (r: GptqImportReport) => void): Promise<ModelWeights> {
  if (opts.quantization !== "int4") {
    throw badQ(gcfg.file, `this is a GPTQ (4-bit) checkpoint, so quantization "${opts.quantization}" cannot load it: its full-precision weights are not in it`, `Load it with quantization "int4" (the default), or load the BF16 checkpoint with quantization "none"`);
  }
  return assembleFromCheckpoint(dir, cfg, ctx, opts, { quantization: "int4", groupSize: opts.groupSize }, async ({ ckpt, asm, advance, checkAbort }) => {
    const { naming, entries } = checkGptqCheckpoint(ckpt, cfg, gcfg);
    checkHostFits(ckpt);
    const report: GptqImportReport = { naming, repacked: [], requantized: [], quantizedAtLoad: [] };
    for (const e of entries) {
      checkAbort();
      if (e.kind === "gptq") {
        const parts: GptqTensors[] = [];
        for (const p of e.parts) parts.push(await readPart(ckpt, p, e.k, gcfg));
        const groups = parts.map((t) => canonicalGroupOf(t.gIdx, e.k));
        let lin: Linear;
        if (groups.every((g) => g !== null)) {
          const G = Math.min(...(groups as number[])) as GroupSize;
          lin = await uploadCanonical(ctx, e.n, e.k, G, parts.map((t) => repackGptq(t, G)));
          report.repacked.push({ name: e.name, groupSize: G });
        } else {
          const w = new Float32Array(e.n * e.k);
          let row = 0;
          for (const t of parts) {
            dequantGptq(t, w, row);
            row += t.n;
          }
          const wb = Buffer.from(w.buffer);
          const rowBytes = e.k * 4;
          lin = await quantizeRows(ctx, e.n, e.k, opts.groupSize, chunkRows(e.k, 4), (r0, r1) => ctx.fromBufferAsync("f32", [r1 - r0, e.k], wb.subarray(r0 * rowBytes, r1 * rowBytes)));
          report.requantized.push(e.name);
        }
        asm.addLinear(e.name, lin);
        let bytes = 0;
        for (const p of e.parts) for (const s of ["qweight", "qzeros", "scales", "g_idx"]) bytes += ckpt.tensors.get(`${p.prefix}.${s}`)?.byteLength ?? 0;
        advance(bytes, e.name);
      } else {
        const bytes = e.parts.reduce((a, p) => a + ckpt.info(p).byteLength, 0);
        const data = Buffer.allocUnsafe(bytes);
        let off = 0;
        for (const p of e.parts) {
          await ckpt.readInto(p, data, off);
          off += ckpt.info(p).byteLength;
        }
        if (isLinearName(e.name)) report.quantizedAtLoad.push(e.name);
        await asm.addHost({ name: e.name, dtype: e.dtype, shape: e.shape, data });
        advance(bytes, e.name);
      }
    }
    if (report.requantized.length > 0) {
      process.emitWarning(
        `${dir}: ${report.requantized.length} GPTQ layer(s) use act-order (desc_act) groups that are not contiguous runs of input columns (${report.requantized.slice(0, 3).join(", ")}${report.requantized.length > 3 ? ", ..." : ""}); they were dequantized and re-quantized to INT4 at group ${opts.groupSize} by this library's quantizer, which adds a second rounding. Export with desc_act=false for an exact import.`,
        { type: "Glm4Warning", code: "GLM4_GPTQ_REQUANTIZED" },
      );
    }
    onReport?.(report);
  });
}

/** Canonical parts (row blocks of one linear, same group) -> one INT4 Linear on ctx. */
function uploadCanonical(ctx: NativeContext, n: number, k: number, G: GroupSize, parts: { codes: Uint8Array; scales: Uint16Array; zeros: Uint16Array }[]): Promise<Linear> {
  const cat = <T extends Uint8Array | Uint16Array>(xs: T[], make: (len: number) => T): T => {
    if (xs.length === 1) return xs[0];
    const out = make(xs.reduce((a, x) => a + x.length, 0));
    let off = 0;
    for (const x of xs) {
      out.set(x, off);
      off += x.length;
    }
    return out;
  };
  const codes = cat(parts.map((p) => p.codes), (l) => new Uint8Array(l));
  const scales = cat(parts.map((p) => p.scales), (l) => new Uint16Array(l));
  const zeros = cat(parts.map((p) => p.zeros), (l) => new Uint16Array(l));
  return uploadInt4(ctx, n, k, G, codes, scales, zeros);
}
