/**
 * The two on-disk namings of GLM-4 weights, mapped onto one normalized layout (and back).
 *
 * normalized            original (model_type chatglm)                                  HF (model_type glm)
 * embed       [V,H]     transformer.embedding.word_embeddings.weight                   model.embed_tokens.weight
 * layers.i.attn_norm    transformer.encoder.layers.i.input_layernorm.weight            model.layers.i.input_layernorm.weight
 * layers.i.qkv          ...layers.i.self_attention.query_key_value.weight              model.layers.i.self_attn.{q,k,v}_proj.weight
 * layers.i.qkv_bias     ...layers.i.self_attention.query_key_value.bias                model.layers.i.self_attn.{q,k,v}_proj.bias
 * layers.i.attn_out     ...layers.i.self_attention.dense.weight                        model.layers.i.self_attn.o_proj.weight
 * layers.i.ffn_norm     ...layers.i.post_attention_layernorm.weight                    model.layers.i.post_attention_layernorm.weight
 * layers.i.gate_up      ...layers.i.mlp.dense_h_to_4h.weight                           model.layers.i.mlp.gate_up_proj.weight
 * layers.i.down         ...layers.i.mlp.dense_4h_to_h.weight                           model.layers.i.mlp.down_proj.weight
 * final_norm  [H]       transformer.encoder.final_layernorm.weight                     model.norm.weight
 * output      [V,H]     transformer.output_layer.weight                                lm_head.weight
 *
 * The fused qkv keeps the original row order: all q heads, then the k heads, then the v heads; HF's
 * q/k/v_proj are exactly those three row blocks (no head permutation: both use interleaved rotary).
 * gate_up is [gate rows; up rows] in both namings. Shapes are [out, in] (row-major, one row per output).
 * Raw bytes and dtype pass through untouched (BF16/F16/F32); conversion happens elsewhere.
 */
import { Glm4Error } from "../errors.js";
import type { Glm4Config } from "./config.js";
import { describeDims, modelTensors, parseTensorName, qkvRows, shapesEqual, tensorShape, type GlobalPart, type LayerPart } from "./tensors.js";
import { DTYPE_BYTES, isDtype } from "./safetensors.js";

export type Naming = "original" | "hf";
export type WeightDtype = "BF16" | "F16" | "F32";
export const WEIGHT_DTYPES: readonly WeightDtype[] = ["BF16", "F16", "F32"];

/** One normalized tensor. `onDisk` lists the tensors it was read from (three for HF qkv). */
export interface WeightTensor {
  name: string;
  dtype: WeightDtype;
  shape: number[];
  data: Buffer;
  onDisk: string[];
}

/** What iterateWeights needs from a checkpoint; `Checkpoint` from safetensors.ts is one. */
export interface TensorSource {
  readonly dir?: string;
  readonly tensors: ReadonlyMap<string, { readonly dtype: string; readonly shape: readonly number[]; readonly byteLength?: number; readonly shard?: string }>;
  read(name: string): Promise<{ data: Buffer }>;
  readInto?(name: string, dest: Uint8Array, destOffset: number): Promise<unknown>;
}

/** One on-disk tensor that makes up (part of) a normalized tensor. */
export interface OnDiskPart {
  onDisk: string;
  shape: number[];
}

/** A normalized tensor and the on-disk tensors whose rows, concatenated in order, make it up. */
export interface OnDiskEntry {
  name: string;
  shape: number[];
  parts: OnDiskPart[];
}

const GLOBAL_NAMES: Record<Naming, Record<GlobalPart, string>> = {
  original: {
    embed: "transformer.embedding.word_embeddings.weight",
    final_norm: "transformer.encoder.final_layernorm.weight",
    output: "transformer.output_layer.weight",
  },
  hf: {
    embed: "model.embed_tokens.weight",
    final_norm: "model.norm.weight",
    output: "lm_head.weight",
  },
};

const LAYER_NAMES: Record<Naming, { prefix: string; parts: Record<LayerPart, string[]> }> = {
  original: {
    prefix: "transformer.encoder.layers.",
    parts: {
      attn_norm: ["input_layernorm.weight"],
      qkv: ["self_attention.query_key_value.weight"],
      qkv_bias: ["self_attention.query_key_value.bias"],
      attn_out: ["self_attention.dense.weight"],
      ffn_norm: ["post_attention_layernorm.weight"],
      gate_up: ["mlp.dense_h_to_4h.weight"],
      down: ["mlp.dense_4h_to_h.weight"],
    },
  },
  hf: {
    prefix: "model.layers.",
    parts: {
      attn_norm: ["input_layernorm.weight"],
      qkv: ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"],
      qkv_bias: ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"],
      attn_out: ["self_attn.o_proj.weight"],
      ffn_norm: ["post_attention_layernorm.weight"],
      gate_up: ["mlp.gate_up_proj.weight"],
      down: ["mlp.down_proj.weight"],
    },
  },
};

/** Tensors that may be present but carry nothing the model needs (precomputed rotary frequencies). */
export function isIgnoredTensor(name: string): boolean {
  return name === "transformer.rotary_pos_emb.inv_freq" || name.endsWith(".rotary_emb.inv_freq");
}

function namingLabel(n: Naming): string {
  return n === "original" ? "original (chatglm) naming" : "HF (glm) naming";
}

/** Which naming a list of tensor names uses. Throws ERR_GLM4_UNSUPPORTED, listing what was found, if neither (or both). */
export function detectNaming(tensorNames: Iterable<string>, source = "checkpoint"): Naming {
  const names = [...tensorNames];
  const original = names.some((n) => n.startsWith("transformer.encoder.") || n.startsWith("transformer.embedding.") || n.startsWith("transformer.output_layer."));
  const hf = names.some((n) => n.startsWith("model.layers.") || n.startsWith("model.embed_tokens.") || n === "model.norm.weight" || n === "lm_head.weight");
  if (original && !hf) return "original";
  if (hf && !original) return "hf";
  const shown = names.slice(0, 8).map((n) => JSON.stringify(n)).join(", ");
  const found = names.length === 0 ? "no tensors at all" : `${names.length} tensors: ${shown}${names.length > 8 ? ", ..." : ""}`;
  if (original && hf) {
    throw new Glm4Error(
      "ERR_GLM4_UNSUPPORTED",
      `${source}: the tensor names mix the original GLM-4 naming ("transformer.*") and the HF naming ("model.*", "lm_head.*"); found ${found}. Keep the shards of one download only.`,
    );
  }
  throw new Glm4Error(
    "ERR_GLM4_UNSUPPORTED",
    `${source}: the tensor names match neither GLM-4 naming (expected "${GLOBAL_NAMES.original.embed}" ... for the original or "${GLOBAL_NAMES.hf.embed}" ... for HF); found ${found}. Point it at a GLM-4-9B checkpoint (THUDM/glm-4-9b-chat or glm-4-9b-chat-hf).`,
  );
}

function parseNormalized(normalizedName: string): { layer: number; part: LayerPart } | { layer: null; part: GlobalPart } {
  const p = parseTensorName(normalizedName);
  if (p === null) {
    throw new Glm4Error(
      "ERR_GLM4_INVALID_ARGUMENT",
      `${JSON.stringify(normalizedName)} is not a normalized GLM-4 tensor name (embed, layers.N.{attn_norm,qkv,qkv_bias,attn_out,ffn_norm,gate_up,down}, final_norm, output).`,
    );
  }
  return p;
}

/** The on-disk tensor name(s) of a normalized tensor; HF qkv and qkv_bias give [q, k, v]. */
export function toOnDiskNames(normalizedName: string, naming: Naming): string[] {
  const p = parseNormalized(normalizedName);
  if (p.layer === null) return [GLOBAL_NAMES[naming][p.part]];
  const { prefix, parts } = LAYER_NAMES[naming];
  return parts[p.part].map((s) => `${prefix}${p.layer}.${s}`);
}

/** Rows of each on-disk part of a normalized tensor (in order). */
function partRows(cfg: Glm4Config, normalizedName: string, naming: Naming, shape: number[]): number[] {
  const p = parseNormalized(normalizedName);
  if (naming === "hf" && (p.part === "qkv" || p.part === "qkv_bias")) {
    const { q, kv } = qkvRows(cfg);
    return [q, kv, kv];
  }
  return [shape[0]];
}

/** Normalized tensor -> the on-disk tensors (name and shape) that make it up, for one naming. */
export function onDiskParts(cfg: Glm4Config, normalizedName: string, naming: Naming): OnDiskPart[] {
  const shape = tensorShape(cfg, normalizedName); // per name, not the whole list: a layout stays linear in the layers
  if (shape === undefined) {
    throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `${JSON.stringify(normalizedName)} is not a tensor of this model (${cfg.numLayers} layers, qkvBias ${cfg.qkvBias}).`);
  }
  const names = toOnDiskNames(normalizedName, naming);
  const rows = partRows(cfg, normalizedName, naming, shape);
  return names.map((onDisk, i) => ({ onDisk, shape: [rows[i], ...shape.slice(1)] }));
}

/** Every normalized tensor, in model order, with the on-disk tensors that make it up. */
export function onDiskLayout(cfg: Glm4Config, naming: Naming): OnDiskEntry[] {
  return modelTensors(cfg).map(({ name, shape }) => ({ name, shape, parts: onDiskParts(cfg, name, naming) }));
}

function where(src: TensorSource, onDisk: string): string {
  const shard = src.tensors.get(onDisk)?.shard;
  return shard === undefined ? "" : ` (in ${shard})`;
}

/** Validate one on-disk part against the config (headers only) and return its dtype. */
function checkPart(src: TensorSource, cfg: Glm4Config, entry: OnDiskEntry, part: OnDiskPart, naming: Naming, srcName: string): WeightDtype {
  const info = src.tensors.get(part.onDisk);
  if (info === undefined) {
    throw new Glm4Error(
      "ERR_GLM4_MISSING_TENSOR",
      `${srcName}: tensor ${JSON.stringify(part.onDisk)} (${namingLabel(naming)}, part of ${entry.name}) is missing; the config describes ${describeDims(cfg)}. Re-download the incomplete checkpoint or use the config.json that belongs to these weights.`,
    );
  }
  if (!WEIGHT_DTYPES.includes(info.dtype as WeightDtype)) {
    throw new Glm4Error(
      isDtype(info.dtype) ? "ERR_GLM4_UNSUPPORTED" : "ERR_GLM4_UNKNOWN_DTYPE",
      `${srcName}: tensor ${JSON.stringify(part.onDisk)}${where(src, part.onDisk)} is ${info.dtype}; weights load from BF16, F16 or F32 only. Use an unquantized BF16 checkpoint (GPTQ checkpoints go through the import path).`,
    );
  }
  if (!shapesEqual(info.shape, part.shape)) {
    throw new Glm4Error(
      "ERR_GLM4_SHAPE_MISMATCH",
      `${srcName}: tensor ${JSON.stringify(part.onDisk)}${where(src, part.onDisk)} has shape [${info.shape.join(", ")}], but the config (${describeDims(cfg)}) expects [${part.shape.join(", ")}] for ${entry.name}. Check that config.json belongs to these weights.`,
    );
  }
  return info.dtype as WeightDtype;
}

function checkEntry(src: TensorSource, cfg: Glm4Config, entry: OnDiskEntry, naming: Naming, srcName: string): WeightDtype {
  const dtypes = entry.parts.map((p) => checkPart(src, cfg, entry, p, naming, srcName));
  const mixed = dtypes.findIndex((d) => d !== dtypes[0]);
  if (mixed > 0) {
    throw new Glm4Error(
      "ERR_GLM4_DTYPE_MISMATCH",
      `${srcName}: ${JSON.stringify(entry.parts[0].onDisk)} is ${dtypes[0]} but ${JSON.stringify(entry.parts[mixed].onDisk)} is ${dtypes[mixed]}; they are fused into ${entry.name} and must share a dtype. Re-export the checkpoint in one dtype.`,
    );
  }
  return dtypes[0];
}

export interface CheckOptions {
  /** Naming to expect (default: detectNaming on the tensor names). */
  naming?: Naming;
  /** Accept tensors the model does not use (default false: ERR_GLM4_UNEXPECTED_TENSOR). inv_freq buffers are always ignored. */
  allowUnused?: boolean;
}

/**
 * Check every tensor the config needs against the checkpoint's headers, without reading data: present
 * (ERR_GLM4_MISSING_TENSOR, by on-disk name), a loadable dtype, the expected shape
 * (ERR_GLM4_SHAPE_MISMATCH), fused parts of one dtype; and no unused tensor unless allowUnused.
 */
export function checkCheckpoint(src: TensorSource, cfg: Glm4Config, options: CheckOptions = {}): { naming: Naming; unused: string[] } {
  const srcName = src.dir ?? "checkpoint";
  const naming = options.naming ?? detectNaming(src.tensors.keys(), srcName);
  const layout = onDiskLayout(cfg, naming);
  const used = new Set<string>();
  const missing: string[] = [];
  for (const e of layout) {
    for (const p of e.parts) {
      if (src.tensors.has(p.onDisk)) used.add(p.onDisk);
      else missing.push(p.onDisk);
    }
  }
  if (missing.length > 0) {
    const first = layout.find((e) => e.parts.some((p) => p.onDisk === missing[0]))!;
    throw new Glm4Error(
      "ERR_GLM4_MISSING_TENSOR",
      `${srcName}: tensor ${JSON.stringify(missing[0])} (${namingLabel(naming)}, part of ${first.name})${missing.length > 1 ? ` and ${missing.length - 1} more are` : " is"} missing; the config describes ${describeDims(cfg)}. Re-download the incomplete checkpoint or use the config.json that belongs to these weights.`,
    );
  }
  for (const e of layout) checkEntry(src, cfg, e, naming, srcName);
  const unused = [...src.tensors.keys()].filter((n) => !used.has(n) && !isIgnoredTensor(n));
  if (unused.length > 0 && options.allowUnused !== true) {
    throw new Glm4Error(
      "ERR_GLM4_UNEXPECTED_TENSOR",
      `${srcName}: tensor ${JSON.stringify(unused[0])}${where(src, unused[0])}${unused.length > 1 ? ` and ${unused.length - 1} more` : ""} are not used by the model the config describes (${describeDims(cfg)}, qkv bias ${cfg.qkvBias}). Check that config.json belongs to these weights.`,
    );
  }
  return { naming, unused };
}

export interface IterateOptions extends CheckOptions {
  signal?: AbortSignal;
}

/**
 * Yield the normalized tensors one at a time, in model order (embed, layer 0 ..., final_norm, output).
 * All headers are checked first (checkCheckpoint), so a wrong config fails before any data is read.
 * Only the tensor being yielded is held: HF q/k/v (and their biases) are read straight into one fused
 * buffer. The caller owns each `data` buffer.
 */
export async function* iterateWeights(src: TensorSource, cfg: Glm4Config, options: IterateOptions = {}): AsyncGenerator<WeightTensor, void, undefined> {
  const srcName = src.dir ?? "checkpoint";
  const { naming } = checkCheckpoint(src, cfg, options);
  for (const entry of onDiskLayout(cfg, naming)) {
    if (options.signal?.aborted) {
      throw new Glm4Error("ERR_GLM4_ABORTED", `${srcName}: loading weights was aborted before ${entry.name}.`, { cause: options.signal.reason });
    }
    const dtype = checkEntry(src, cfg, entry, naming, srcName);
    const esize = DTYPE_BYTES[dtype];
    const partBytes = entry.parts.map((p) => p.shape.reduce((a, b) => a * b, 1) * esize);
    let data: Buffer;
    if (entry.parts.length === 1) {
      data = (await src.read(entry.parts[0].onDisk)).data;
      if (data.byteLength !== partBytes[0]) throw shortRead(srcName, entry.parts[0].onDisk, data.byteLength, partBytes[0]);
    } else {
      data = Buffer.allocUnsafe(partBytes.reduce((a, b) => a + b, 0));
      let off = 0;
      for (let i = 0; i < entry.parts.length; i++) {
        const name = entry.parts[i].onDisk;
        if (src.readInto !== undefined) {
          await src.readInto(name, data, off);
        } else {
          const part = (await src.read(name)).data;
          if (part.byteLength !== partBytes[i]) throw shortRead(srcName, name, part.byteLength, partBytes[i]);
          part.copy(data, off);
        }
        off += partBytes[i];
      }
    }
    yield { name: entry.name, dtype, shape: [...entry.shape], data, onDisk: entry.parts.map((p) => p.onDisk) };
  }
}

function shortRead(srcName: string, name: string, got: number, want: number): Glm4Error {
  return new Glm4Error(
    "ERR_GLM4_BAD_SAFETENSORS",
    `${srcName}: reading tensor ${JSON.stringify(name)} gave ${got} bytes where its shape needs ${want}. The file changed or the tensor source is broken; open the checkpoint again.`,
  );
}

/** Split a buffer of `sum(rowCounts)` equal rows into consecutive row blocks (views, no copy). */
export function splitRows(buf: Buffer, rowCounts: readonly number[]): Buffer[] {
  const total = rowCounts.reduce((a, b) => a + b, 0);
  if (total === 0 || buf.byteLength % total !== 0) {
    throw new Glm4Error("ERR_GLM4_SHAPE_MISMATCH", `splitRows: ${buf.byteLength} bytes do not divide into ${total} equal rows (blocks of ${rowCounts.join(", ")} rows).`);
  }
  const rowBytes = buf.byteLength / total;
  const out: Buffer[] = [];
  let off = 0;
  for (const r of rowCounts) {
    out.push(buf.subarray(off, off + r * rowBytes));
    off += r * rowBytes;
  }
  return out;
}

/** Split a fused qkv weight [(Hq+2Hkv)*D, H] or bias [(Hq+2Hkv)*D] into its q, k and v row blocks (views). */
export function splitQkv(fused: Buffer, cfg: Glm4Config): { q: Buffer; k: Buffer; v: Buffer } {
  const { q, kv } = qkvRows(cfg);
  const [qb, kb, vb] = splitRows(fused, [q, kv, kv]);
  return { q: qb, k: kb, v: vb };
}

/** Split a fused gate_up weight [2F, H] into gate and up (views). */
export function splitGateUp(fused: Buffer, cfg: Glm4Config): { gate: Buffer; up: Buffer } {
  const [gate, up] = splitRows(fused, [cfg.ffnSize, cfg.ffnSize]);
  return { gate, up };
}

/**
 * A normalized tensor -> the on-disk tensor(s) of `naming`, for writers. Data of split parts are views
 * into `t.data`. Throws ERR_GLM4_SHAPE_MISMATCH when `t.shape` is not what the config expects.
 */
export function toOnDisk(
  t: { name: string; dtype: string; shape: readonly number[]; data: Buffer },
  cfg: Glm4Config,
  naming: Naming,
): Array<{ name: string; dtype: string; shape: number[]; data: Buffer }> {
  const parts = onDiskParts(cfg, t.name, naming);
  const want = tensorShape(cfg, t.name)!;
  if (!shapesEqual(want, t.shape)) {
    throw new Glm4Error("ERR_GLM4_SHAPE_MISMATCH", `toOnDisk: ${t.name} has shape [${t.shape.join(", ")}] but the config (${describeDims(cfg)}) expects [${want.join(", ")}].`);
  }
  const datas = parts.length === 1 ? [t.data] : splitRows(t.data, parts.map((p) => p.shape[0]));
  return parts.map((p, i) => ({ name: p.onDisk, dtype: t.dtype, shape: [...p.shape], data: datas[i] }));
}
