/**
 * The model's tensor list, written once: every normalized tensor of a GLM-4 config, in model order, with its
 * shape (from the config) and its kind. Everything else derives from it: the config's shape check
 * (checkShapes), the two namings' on-disk layout (namings.ts), the INT4 and GPTQ formats' entries, the loader's
 * plan and the weight assembler (engine/), LayerWeights' fields, the memory estimate.
 *
 *   embed [V, H]                                   the embedding table (kept in host memory)
 *   layers.N.attn_norm [H]                         RMSNorm weight
 *   layers.N.qkv [(Hq + 2 Hkv) D, H]               q heads, then k, then v (rows)
 *   layers.N.qkv_bias [(Hq + 2 Hkv) D]             only when the config has qkvBias
 *   layers.N.attn_out [H, Hq D]
 *   layers.N.ffn_norm [H]
 *   layers.N.gate_up [2 F, H]                      gate rows first
 *   layers.N.down [H, F]
 *   final_norm [H]
 *   output [V, H]                                  not tied to the embedding
 *
 * Kinds: "linear" tensors are the matrices a GEMM/GEMV reads (INT4 at load unless quantization "none"); the
 * embedding stays in its on-disk dtype in host memory; norms and biases go to the device as stored (f16 widened
 * to f32).
 */
import { Glm4Error } from "../errors.js";
import type { Glm4Config } from "./config.js";

export type TensorKind = "embed" | "norm" | "bias" | "linear";
export type LayerPart = "attn_norm" | "qkv" | "qkv_bias" | "attn_out" | "ffn_norm" | "gate_up" | "down";
export type GlobalPart = "embed" | "final_norm" | "output";

interface PartSpec {
  kind: TensorKind;
  shape: (c: Glm4Config) => number[];
  /** Absent from some configs (default: always present). */
  present?: (c: Glm4Config) => boolean;
}

/** Rows of the fused QKV weight: q heads, then k, then v. */
export function qkvRows(c: Glm4Config): { q: number; kv: number; total: number } {
  const q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
  return { q, kv, total: q + 2 * kv };
}

/** A layer's tensors, in model order. */
export const LAYER_PARTS: Readonly<Record<LayerPart, PartSpec>> = {
  attn_norm: { kind: "norm", shape: (c) => [c.hiddenSize] },
  qkv: { kind: "linear", shape: (c) => [qkvRows(c).total, c.hiddenSize] },
  qkv_bias: { kind: "bias", shape: (c) => [qkvRows(c).total], present: (c) => c.qkvBias },
  attn_out: { kind: "linear", shape: (c) => [c.hiddenSize, c.numHeads * c.headDim] },
  ffn_norm: { kind: "norm", shape: (c) => [c.hiddenSize] },
  gate_up: { kind: "linear", shape: (c) => [2 * c.ffnSize, c.hiddenSize] },
  down: { kind: "linear", shape: (c) => [c.hiddenSize, c.ffnSize] },
};

/** The tensors outside the layers: embed comes first, final_norm and output last. */
export const GLOBAL_PARTS: Readonly<Record<GlobalPart, PartSpec>> = {
  embed: { kind: "embed", shape: (c) => [c.vocabSize, c.hiddenSize] },
  final_norm: { kind: "norm", shape: (c) => [c.hiddenSize] },
  output: { kind: "linear", shape: (c) => [c.vocabSize, c.hiddenSize] },
};

export interface ModelTensor {
  /** Normalized name: "embed", "layers.3.qkv", "output", ... */
  name: string;
  shape: number[];
  kind: TensorKind;
  /** The layer, or null for embed, final_norm and output. */
  layer: number | null;
  part: LayerPart | GlobalPart;
}

/** Every tensor of the model `cfg` describes, in model order (the order loaders read and write them). */
export function modelTensors(cfg: Glm4Config): ModelTensor[] {
  const one = (name: string, layer: number | null, part: LayerPart | GlobalPart, s: PartSpec): ModelTensor => ({ name, shape: s.shape(cfg), kind: s.kind, layer, part });
  const out = [one("embed", null, "embed", GLOBAL_PARTS.embed)];
  for (let i = 0; i < cfg.numLayers; i++) {
    for (const [part, s] of Object.entries(LAYER_PARTS) as [LayerPart, PartSpec][]) {
      if (s.present?.(cfg) ?? true) out.push(one(`layers.${i}.${part}`, i, part, s));
    }
  }
  out.push(one("final_norm", null, "final_norm", GLOBAL_PARTS.final_norm), one("output", null, "output", GLOBAL_PARTS.output));
  return out;
}

/** Every normalized tensor with its shape, in model order. */
export function expectedShapes(cfg: Glm4Config): Map<string, number[]> {
  return new Map(modelTensors(cfg).map((t) => [t.name, t.shape]));
}

/** The shape of one normalized tensor of `cfg`, or undefined when the model has no such tensor (constant time). */
export function tensorShape(cfg: Glm4Config, name: string): number[] | undefined {
  const p = parseTensorName(name);
  if (p === null) return undefined;
  if (p.layer === null) return GLOBAL_PARTS[p.part].shape(cfg);
  const s = LAYER_PARTS[p.part];
  if (p.layer >= cfg.numLayers || !(s.present?.(cfg) ?? true)) return undefined;
  return s.shape(cfg);
}

const LAYER_RE = new RegExp(`^layers\\.(0|[1-9][0-9]*)\\.(${Object.keys(LAYER_PARTS).join("|")})$`);

/** The layer and part of a normalized name, or null when it is not one (whatever the config). */
export function parseTensorName(name: string): { layer: number; part: LayerPart } | { layer: null; part: GlobalPart } | null {
  if (Object.hasOwn(GLOBAL_PARTS, name)) return { layer: null, part: name as GlobalPart };
  const m = LAYER_RE.exec(name);
  return m ? { layer: Number(m[1]), part: m[2] as LayerPart } : null;
}

/** The kind of a normalized name, or null when it is not one. */
export function tensorKind(name: string): TensorKind | null {
  const p = parseTensorName(name);
  if (!p) return null;
  return p.layer === null ? GLOBAL_PARTS[p.part].kind : LAYER_PARTS[p.part].kind;
}

/** Which normalized tensors are linear layers (INT4 at load); the embedding, norms and biases are not. */
export function isLinearName(name: string): boolean {
  return tensorKind(name) === "linear";
}

export function shapesEqual(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** The config's dimensions in words, for messages that say which model a tensor does not fit. */
export function describeDims(cfg: Glm4Config): string {
  return `${cfg.numLayers} layers, hidden ${cfg.hiddenSize}, ${cfg.numHeads} q heads of ${cfg.headDim}, ${cfg.numKvHeads} kv heads, ffn ${cfg.ffnSize}, vocab ${cfg.vocabSize}`;
}

/**
 * Check normalized tensors against the config: every expected one present with its shape, nothing else.
 * Throws ERR_GLM4_MISSING_TENSOR, ERR_GLM4_SHAPE_MISMATCH or ERR_GLM4_UNEXPECTED_TENSOR; `source` names
 * where the tensors came from in messages.
 */
export function checkShapes(cfg: Glm4Config, tensors: Iterable<{ name: string; shape: readonly number[] }>, source = "checkpoint"): void {
  const expected = expectedShapes(cfg);
  const seen = new Set<string>();
  const dims = describeDims(cfg);
  for (const t of tensors) {
    const want = expected.get(t.name);
    if (want === undefined) {
      throw new Glm4Error(
        "ERR_GLM4_UNEXPECTED_TENSOR",
        `${source}: tensor ${JSON.stringify(t.name)} is not part of the model the config describes (${dims}). Check that config.json belongs to these weights.`,
      );
    }
    if (!shapesEqual(want, t.shape)) {
      throw new Glm4Error(
        "ERR_GLM4_SHAPE_MISMATCH",
        `${source}: tensor ${JSON.stringify(t.name)} has shape [${t.shape.join(", ")}] but the config (${dims}) needs [${want.join(", ")}]. Check that config.json belongs to these weights.`,
      );
    }
    seen.add(t.name);
  }
  const missing = [...expected.keys()].filter((n) => !seen.has(n));
  if (missing.length > 0) {
    throw new Glm4Error(
      "ERR_GLM4_MISSING_TENSOR",
      `${source}: tensor ${JSON.stringify(missing[0])}${missing.length > 1 ? ` (and ${missing.length - 1} more)` : ""} is missing for the config (${dims}). Re-download the weights or fix config.json.`,
    );
  }
}
