/**
 * The INT4 checkpoint that `glm4-int4 quantize` writes and `loadGlm4` loads without a full-precision step.
 *
 * A directory with config.json (copied from the source), the tokenizer files, safetensors shards with
 * model.safetensors.index.json, and the quantization record `glm4_int4.json`. Tensors use the normalized
 * names of lib/checkpoint/namings.ts:
 *   linear layers (layers.N.{qkv, attn_out, gate_up, down}, output), weight [N, K]:
 *     <name>.qweight  U8   [N, K/2]   canonical codes (csrc/core/int4_layout.h): per output row, groups of G
 *                                     consecutive k, code in 0..15, two codes a byte, low nibble = even k
 *     <name>.scales   BF16 [N, K/G]   scale of (row, group), finite and > 0
 *     <name>.zeros    BF16 [N, K/G]   zero point of (row, group) in code units, a real number
 *     W(n, k) = (code(n, k) - zeros(n, k/G)) * scales(n, k/G)
 *   everything else (embed, layers.N.{attn_norm, qkv_bias, ffn_norm}, final_norm): <name>, bytes and dtype
 *   exactly as in the source checkpoint (BF16, F16 or F32).
 * glm4_int4.json (version 1: asymmetric integer codes, every linear layer INT4, nothing folded):
 *   { format: "glm4-int4-native", version: 1, bits: 4, group_size: 32|64|128, zero_point: "asymmetric-bf16",
 *     layout: CANONICAL_LAYOUT, quantized: [linear names], full_precision: [other names], source: {...},
 *     quantizer: {...} }
 * version 2 (written whenever version 1 cannot describe the checkpoint; a release that reads only version 1 then
 * refuses it instead of misreading NF4 codes):
 *   version 1's fields, plus scheme: "asym" | "sym" | "nf4" (csrc/core/int4_layout.h; zero_point
 *   "asymmetric-bf16" | "symmetric-8" | "none" to match), codebook: 0 | 1 (NF4: W = NF4[code] * scale),
 *   output_layer: "int4" | "bf16" (bf16: `output` is a full-precision tensor listed in full_precision), and
 *   awq: null | { calibration, tokens, alphas, ... } when activation-aware scales were folded into the weights
 *   (lib/quant/awq.ts: the norms and the QKV bias are then F32 tensors that differ from the source's).
 * Everything read here is treated as hostile: the record is validated field by field, tensor dtypes and
 * shapes are checked against the config and the record before any data is read, and scales/zeros are
 * checked on the host (finite, scales > 0) while loading, naming the tensor, row and group.
 */
import path from "node:path";
import { Glm4Error } from "../errors.js";
import { FileProblem, readRegularFile } from "../files.js";
import type { Glm4Config } from "./config.js";
import { describeDims, expectedShapes, isLinearName, shapesEqual } from "./tensors.js";
import { bf16ToF32, show } from "../util.js";

export const INT4_RECORD_FILE = "glm4_int4.json";
export const INT4_FORMAT = "glm4-int4-native";
export const INT4_VERSION = 1;
/** The newest record version this release reads and writes (see the header). */
export const INT4_MAX_VERSION = 2;
export const INT4_ZERO_POINT = "asymmetric-bf16";

/** Quantization schemes (csrc/core/int4_layout.h): asymmetric min/max, symmetric absmax with zero 8, NF4 absmax. */
export type Int4Scheme = "asym" | "sym" | "nf4";
export const INT4_SCHEMES: readonly Int4Scheme[] = ["asym", "sym", "nf4"];
/** The output layer quantized like the others, or kept in bf16 (its source dtype). */
export type OutputLayer = "int4" | "bf16";
/** Per scheme: quantizeInt4's scheme number, the codebook it writes, the record's zero_point. */
export const SCHEME_INFO: Readonly<Record<Int4Scheme, { code: 0 | 1 | 2; codebook: 0 | 1; zeroPoint: string }>> = {
  asym: { code: 0, codebook: 0, zeroPoint: INT4_ZERO_POINT },
  sym: { code: 1, codebook: 0, zeroPoint: "symmetric-8" },
  nf4: { code: 2, codebook: 1, zeroPoint: "none" },
};

/** The quantization settings of a checkpoint or a load: group size, scheme, and the output layer's precision. */
export interface Int4Settings {
  groupSize: GroupSize;
  scheme: Int4Scheme;
  outputLayer: OutputLayer;
}
export const DEFAULT_INT4_SETTINGS: Int4Settings = { groupSize: 128, scheme: "asym", outputLayer: "int4" };

/** Checks user-given settings (TypeError/RangeError) and fills the defaults. */
export function int4Settings(o: { groupSize?: number; scheme?: string; outputLayer?: string } = {}): Int4Settings {
  const groupSize = o.groupSize ?? 128;
  if (groupSize !== 32 && groupSize !== 64 && groupSize !== 128) throw new RangeError(`groupSize must be 32, 64 or 128, got ${String(groupSize)}`);
  const scheme = o.scheme ?? "asym";
  if (!INT4_SCHEMES.includes(scheme as Int4Scheme)) throw new RangeError(`scheme must be "asym", "sym" or "nf4", got ${JSON.stringify(scheme)}`);
  const outputLayer = o.outputLayer ?? "int4";
  if (outputLayer !== "int4" && outputLayer !== "bf16") throw new RangeError(`outputLayer must be "int4" or "bf16", got ${JSON.stringify(outputLayer)}`);
  return { groupSize, scheme: scheme as Int4Scheme, outputLayer };
}

/** A short name of the settings: "asym g128", "nf4 g64 out-bf16". */
export function describeSettings(s: Int4Settings): string {
  return `${s.scheme} g${s.groupSize}${s.outputLayer === "bf16" ? " out-bf16" : ""}`;
}

/** The settings a record describes (version 1: asymmetric, every linear INT4). */
export function recordSettings(r: Int4Record): Int4Settings {
  return { groupSize: r.group_size, scheme: r.scheme ?? "asym", outputLayer: r.output_layer ?? "int4" };
}

/** What the record says about activation-aware scaling (lib/quant/awq.ts). */
export interface AwqRecord {
  /** The calibration text's file name, sha256 and token count. */
  calibration: string;
  sha256: string;
  tokens: number;
  /** The grid searched, and the alpha chosen for each scaled linear (normalized name). */
  grid: number[];
  alphas: Record<string, number>;
  /** Where each linear's input scales were folded. */
  folded: Record<string, string>;
  /** Output error (relative, on the calibration inputs) per linear: plain rounding and with the chosen scales. */
  errors?: Record<string, { rtn: number; awq: number }>;
}
export const CANONICAL_LAYOUT = "canonical: per output row, groups of G along K, q in 0..15, w = (q - zero) * scale, two codes a byte, low nibble = even k";

export type GroupSize = 32 | 64 | 128;

export interface Int4Record {
  format: typeof INT4_FORMAT;
  version: 1 | 2;
  bits: 4;
  group_size: GroupSize;
  zero_point: string;
  /** Version 2 (absent in version 1: "asym", 0, "int4", null). */
  scheme?: Int4Scheme;
  codebook?: 0 | 1;
  output_layer?: OutputLayer;
  awq?: AwqRecord | null;
  layout: string;
  /** Normalized names of the quantized linear layers. */
  quantized?: string[];
  /** Normalized names of the tensors stored as they were in the source (embedding, norms, biases). */
  full_precision: string[];
  source?: Record<string, unknown>;
  quantizer?: Record<string, unknown>;
}

/** The three tensors of a quantized linear layer. */
export function int4Names(name: string): { qweight: string; scales: string; zeros: string } {
  return { qweight: `${name}.qweight`, scales: `${name}.scales`, zeros: `${name}.zeros` };
}

function badQ(file: string, what: string, todo: string): Glm4Error {
  return new Glm4Error("ERR_GLM4_BAD_QUANTIZATION", `${file}: ${what}. ${todo}`);
}

const REQUANTIZE = "Re-quantize the model with `glm4-int4 quantize --model <bf16 checkpoint> --out <dir>` of this release";

/** Validate the parsed text of glm4_int4.json (`file` is used in messages). */
export function parseInt4Record(text: string, file: string): Int4Record {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch (e) {
    throw badQ(file, `is not valid JSON (${(e as Error).message})`, REQUANTIZE);
  }
  if (typeof o !== "object" || o === null || Array.isArray(o)) throw badQ(file, `must hold a JSON object, got ${show(o)}`, REQUANTIZE);
  const r = o as Record<string, unknown>;
  if (r.format !== INT4_FORMAT) {
    throw badQ(file, `"format" is ${show(r.format)}, not "${INT4_FORMAT}": this is not a checkpoint written by glm4-int4 quantize`, `Remove ${INT4_RECORD_FILE} if the directory holds a plain BF16 checkpoint; otherwise re-quantize the model with this release's \`glm4-int4 quantize\``);
  }
  if (typeof r.version !== "number" || !Number.isSafeInteger(r.version) || r.version < 1) {
    throw badQ(file, `"version" must be a positive integer, got ${show(r.version)}`, REQUANTIZE);
  }
  if (r.version !== 1 && r.version !== 2) {
    throw badQ(file, `${INT4_RECORD_FILE} version ${r.version} is not supported by this release (${INT4_VERSION} or ${INT4_MAX_VERSION})`, `${REQUANTIZE}, or load it with the release that wrote it`);
  }
  if (r.bits !== 4) throw badQ(file, `"bits" is ${show(r.bits)}; this format stores 4-bit codes only`, REQUANTIZE);
  if (r.group_size !== 32 && r.group_size !== 64 && r.group_size !== 128) {
    throw badQ(file, `"group_size" is ${show(r.group_size)}; it must be 32, 64 or 128`, REQUANTIZE);
  }
  if (r.version === 1) {
    for (const key of ["scheme", "codebook", "output_layer", "awq"]) {
      if (r[key] !== undefined) throw badQ(file, `version 1 has no "${key}" (version 2 does)`, REQUANTIZE);
    }
  } else {
    if (!INT4_SCHEMES.includes(r.scheme as Int4Scheme)) throw badQ(file, `"scheme" is ${show(r.scheme)}; it must be "asym", "sym" or "nf4"`, REQUANTIZE);
    const info = SCHEME_INFO[r.scheme as Int4Scheme];
    if (r.codebook !== info.codebook) throw badQ(file, `"codebook" is ${show(r.codebook)}, but scheme "${String(r.scheme)}" writes codebook ${info.codebook}`, REQUANTIZE);
    if (r.output_layer !== "int4" && r.output_layer !== "bf16") throw badQ(file, `"output_layer" is ${show(r.output_layer)}; it must be "int4" or "bf16"`, REQUANTIZE);
    if (r.awq !== undefined && r.awq !== null && (typeof r.awq !== "object" || Array.isArray(r.awq))) throw badQ(file, `"awq" must be null or an object, got ${show(r.awq)}`, REQUANTIZE);
  }
  const zp = SCHEME_INFO[(r.scheme as Int4Scheme | undefined) ?? "asym"].zeroPoint;
  if (r.zero_point !== zp) {
    throw badQ(file, `"zero_point" is ${show(r.zero_point)}; scheme "${String(r.scheme ?? "asym")}" stores "${zp}" zero points`, REQUANTIZE);
  }
  if (typeof r.layout !== "string") throw badQ(file, `"layout" must be a string, got ${show(r.layout)}`, REQUANTIZE);
  for (const key of ["full_precision", "quantized"] as const) {
    const v = r[key];
    if (v === undefined && key === "quantized") continue;
    if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) throw badQ(file, `"${key}" must be a list of tensor names, got ${show(v)}`, REQUANTIZE);
  }
  for (const name of r.full_precision as string[]) {
    if (name === "output" && r.output_layer === "bf16") continue;
    if (isLinearName(name)) {
      throw badQ(file, `"full_precision" lists the linear layer ${JSON.stringify(name)}; this release loads every linear layer of an INT4 checkpoint as INT4`, REQUANTIZE);
    }
  }
  for (const key of ["source", "quantizer"] as const) {
    const v = r[key];
    if (v !== undefined && (typeof v !== "object" || v === null || Array.isArray(v))) throw badQ(file, `"${key}" must be an object, got ${show(v)}`, REQUANTIZE);
  }
  return r as unknown as Int4Record;
}

/** Reads `dir/glm4_int4.json`: null when there is none; throws ERR_GLM4_BAD_QUANTIZATION when it is malformed. */
export async function readInt4Record(dir: string): Promise<Int4Record | null> {
  const file = path.join(dir, INT4_RECORD_FILE);
  let text: string;
  try {
    text = (await readRegularFile(file, 16 * 2 ** 20)).toString("utf8"); // a quantization record is a few kilobytes
  } catch (e) {
    if (!(e instanceof FileProblem)) throw e;
    if (e.reason === "missing") return null;
    throw badQ(file, e.message, e.reason === "io" ? "Check the file's permissions" : REQUANTIZE);
  }
  return parseInt4Record(text, file);
}

/** What checkInt4Checkpoint needs from a checkpoint (lib/safetensors Checkpoint is one). */
export interface Int4Source {
  readonly dir?: string;
  readonly tensors: ReadonlyMap<string, { readonly dtype: string; readonly shape: readonly number[]; readonly byteLength: number; readonly file?: string }>;
}

/** One normalized tensor of an INT4 checkpoint and where its data is. */
export type Int4Entry =
  | { kind: "int4"; name: string; n: number; k: number; groupSize: GroupSize; codebook: 0 | 1; qweight: string; scales: string; zeros: string }
  | { kind: "full"; name: string; shape: number[]; dtype: "BF16" | "F16" | "F32"; tensor: string };

/**
 * Check an INT4 checkpoint's tensors against the config and the record (headers only): every tensor
 * present with its dtype and shape, the scales' shape consistent with the record's group size, nothing else.
 * Returns the tensors in model order. Throws MISSING_TENSOR, DTYPE_MISMATCH, SHAPE_MISMATCH,
 * BAD_QUANTIZATION (group size vs shapes) or UNEXPECTED_TENSOR.
 */
export function checkInt4Checkpoint(src: Int4Source, cfg: Glm4Config, record: Int4Record, recordFile = INT4_RECORD_FILE): Int4Entry[] {
  const dir = src.dir ?? "checkpoint";
  const G = record.group_size;
  const where = (t: string) => src.tensors.get(t)?.file ?? dir;
  const used = new Set<string>();
  const get = (t: string, of: string) => {
    const info = src.tensors.get(t);
    if (info === undefined) {
      throw new Glm4Error("ERR_GLM4_MISSING_TENSOR", `${dir}: tensor ${JSON.stringify(t)} (part of ${of}) is missing; the config describes ${describeDims(cfg)}. The INT4 checkpoint is incomplete: quantize it again.`);
    }
    used.add(t);
    return info;
  };
  const fullPrecision = new Set(record.full_precision);
  const settings = recordSettings(record);
  const codebook = SCHEME_INFO[settings.scheme].codebook;
  const out: Int4Entry[] = [];
  for (const [name, shape] of expectedShapes(cfg)) {
    if (isLinearName(name) && !(name === "output" && settings.outputLayer === "bf16")) {
      const [n, k] = shape;
      if (k % G !== 0) throw badQ(recordFile, `group_size ${G} does not divide the ${k} input columns of ${name} [${n}, ${k}] that config.json implies`, REQUANTIZE);
      const names = int4Names(name);
      const qw = get(names.qweight, name);
      if (qw.dtype !== "U8") throw new Glm4Error("ERR_GLM4_DTYPE_MISMATCH", `${where(names.qweight)}: tensor ${JSON.stringify(names.qweight)} is ${qw.dtype}; INT4 codes are stored as U8 [N, K/2] (two codes a byte). ${REQUANTIZE}.`);
      if (!shapesEqual(qw.shape, [n, k / 2])) {
        throw new Glm4Error("ERR_GLM4_SHAPE_MISMATCH", `${where(names.qweight)}: tensor ${JSON.stringify(names.qweight)} has shape [${qw.shape.join(", ")}], but the config (${describeDims(cfg)}) needs [${n}, ${k / 2}] (codes of a [${n}, ${k}] weight, two a byte). Check that config.json belongs to these weights.`);
      }
      for (const part of [names.scales, names.zeros]) {
        const t = get(part, name);
        if (t.dtype !== "BF16") throw new Glm4Error("ERR_GLM4_DTYPE_MISMATCH", `${where(part)}: tensor ${JSON.stringify(part)} is ${t.dtype}; scales and zeros are BF16 [N, K/G]. ${REQUANTIZE}.`);
        if (!shapesEqual(t.shape, [n, k / G])) {
          if (t.shape.length === 2 && t.shape[0] === n && t.shape[1] > 0 && k % t.shape[1] === 0) {
            throw badQ(recordFile, `group_size ${G} disagrees with tensor ${JSON.stringify(part)} [${t.shape.join(", ")}] in ${where(part)}, which holds groups of ${k / t.shape[1]} for ${k} input columns`, REQUANTIZE);
          }
          throw new Glm4Error("ERR_GLM4_SHAPE_MISMATCH", `${where(part)}: tensor ${JSON.stringify(part)} has shape [${t.shape.join(", ")}], but a [${n}, ${k}] weight at group ${G} needs [${n}, ${k / G}]. Check that config.json belongs to these weights.`);
        }
      }
      out.push({ kind: "int4", name, n, k, groupSize: G, codebook, ...names });
    } else {
      const t = get(name, name);
      if (t.dtype !== "BF16" && t.dtype !== "F16" && t.dtype !== "F32") {
        throw new Glm4Error("ERR_GLM4_UNKNOWN_DTYPE", `${where(name)}: tensor ${JSON.stringify(name)} is ${t.dtype}; full-precision tensors load from BF16, F16 or F32 only. ${REQUANTIZE}.`);
      }
      if (!shapesEqual(t.shape, shape)) {
        throw new Glm4Error("ERR_GLM4_SHAPE_MISMATCH", `${where(name)}: tensor ${JSON.stringify(name)} has shape [${t.shape.join(", ")}], but the config (${describeDims(cfg)}) needs [${shape.join(", ")}]. Check that config.json belongs to these weights.`);
      }
      if (!fullPrecision.has(name)) throw badQ(recordFile, `"full_precision" does not list ${JSON.stringify(name)}, which the checkpoint stores in full precision`, REQUANTIZE);
      out.push({ kind: "full", name, shape: [...shape], dtype: t.dtype, tensor: name });
    }
  }
  const unused = [...src.tensors.keys()].filter((t) => !used.has(t));
  if (unused.length > 0) {
    throw new Glm4Error(
      "ERR_GLM4_UNEXPECTED_TENSOR",
      `${where(unused[0])}: tensor ${JSON.stringify(unused[0])}${unused.length > 1 ? ` and ${unused.length - 1} more` : ""} are not part of the INT4 model the config describes (${describeDims(cfg)}). Check that config.json belongs to these weights.`,
    );
  }
  return out;
}

/**
 * Host check of one quantized linear's scales and zeros (bf16 bits, [rows, groups] row-major): every scale
 * finite and > 0, every zero finite. A damaged value would turn a whole group of weights into NaN or flip
 * its sign silently; the error names the file, tensor, row and group.
 */
export function checkInt4Params(file: string, name: string, scales: Uint16Array, zeros: Uint16Array, groups: number): void {
  for (let i = 0; i < scales.length; i++) {
    const b = scales[i];
    const finite = (b & 0x7f80) !== 0x7f80;
    if (!finite || b & 0x8000 || (b & 0x7fff) === 0) {
      const what = !finite ? ((b & 0x7f) !== 0 ? "NaN" : b & 0x8000 ? "-Infinity" : "Infinity") : (b & 0x7fff) === 0 ? "zero" : `the negative value ${bf16ToF32(b)}`;
      throw badQ(file, `tensor ${JSON.stringify(`${name}.scales`)} row ${Math.floor(i / groups)}, group ${i % groups} holds ${what}; scales must be finite and > 0. The file is damaged`, REQUANTIZE);
    }
  }
  for (let i = 0; i < zeros.length; i++) {
    const b = zeros[i];
    if ((b & 0x7f80) === 0x7f80) {
      throw badQ(file, `tensor ${JSON.stringify(`${name}.zeros`)} row ${Math.floor(i / groups)}, group ${i % groups} holds ${(b & 0x7f) !== 0 ? "NaN" : "Infinity"}; zero points must be finite. The file is damaged`, REQUANTIZE);
    }
  }
}
