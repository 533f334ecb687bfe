/**
 * Checkpoints that are already quantized: an INT4 checkpoint written by `glm4-int4 quantize`
 * (glm4_int4.json, lib/checkpoint/int4-format.ts) or a GPTQ export (lib/checkpoint/gptq.ts). `loadGlm4` asks here first and loads
 * such a directory without a full-precision step.
 */
import path from "node:path";
import { Glm4Error } from "../errors.js";
import type { Glm4Config } from "./config.js";
import type { NativeContext } from "../engine/native.js";
import type { ModelWeights, Quantization } from "../engine/weights.js";
import { INT4_RECORD_FILE, checkInt4Checkpoint, checkInt4Params, readInt4Record, recordSettings, type GroupSize, type Int4Record, type Int4Scheme } from "./int4-format.js";

function describeScheme(s: Int4Scheme): string {
  return s === "asym" ? "asymmetric (zero point asymmetric-bf16)" : s === "sym" ? "symmetric (zero point 8)" : "NF4 codes";
}
import { bf16ToF32, f16ToF32, u16View } from "../util.js";
import { checkGptqCheckpoint, checkGptqTensors, defaultGIdx, loadGptqWeights, readGptqConfig, type GptqConfig } from "./gptq.js";
import type { Checkpoint } from "./checkpoint.js";
import { loadInt4CheckpointWeights, type WeightLoadOptions } from "../engine/loader.js";

export type Prequantized =
  | { kind: "glm4-int4"; record: Int4Record; groupSize: GroupSize; describe: string; load: (cfg: Glm4Config, ctx: NativeContext, opts: WeightLoadOptions) => Promise<ModelWeights> }
  | { kind: "gptq"; gptq: GptqConfig; groupSize: GroupSize; describe: string; load: (cfg: Glm4Config, ctx: NativeContext, opts: WeightLoadOptions) => Promise<ModelWeights> };

/**
 * What kind of quantized checkpoint `dir` holds (null: a full-precision one), checked against the load
 * options: quantization "none" cannot load it, and an INT4 checkpoint has one group size. For GPTQ,
 * `groupSize` (default: the checkpoint's when it is 32, 64 or 128, else 128) is the group of the layers
 * quantized at load (full-precision linears, act-order layers).
 */
export async function detectPrequantized(dir: string, options: { quantization?: Quantization; groupSize?: number; scheme?: string; outputLayer?: string } = {}): Promise<Prequantized | null> {
  const record = await readInt4Record(dir);
  const quantization = options.quantization ?? "int4";
  if (record) {
    const file = path.join(dir, INT4_RECORD_FILE);
    if (quantization !== "int4") {
      throw new Glm4Error("ERR_GLM4_BAD_QUANTIZATION", `${file}: this checkpoint is already quantized to INT4 (group ${record.group_size}), so quantization "${quantization}" cannot load it: its full-precision weights are not in it. Load it with quantization "int4" (the default), or load the BF16 source checkpoint with quantization "none".`);
    }
    if (options.groupSize !== undefined && options.groupSize !== record.group_size) {
      throw new Glm4Error("ERR_GLM4_BAD_QUANTIZATION", `${file}: this checkpoint is quantized at group ${record.group_size}, but groupSize ${options.groupSize} was asked for. Leave groupSize out, or quantize the BF16 checkpoint again with --group-size ${options.groupSize}.`);
    }
    const have = recordSettings(record);
    if (options.scheme !== undefined && options.scheme !== have.scheme) {
      throw new Glm4Error("ERR_GLM4_BAD_QUANTIZATION", `${file}: this checkpoint holds ${have.scheme} codes, but scheme "${options.scheme}" was asked for. Leave scheme out, or quantize the BF16 checkpoint again with --scheme ${options.scheme}.`);
    }
    if (options.outputLayer !== undefined && options.outputLayer !== have.outputLayer) {
      throw new Glm4Error("ERR_GLM4_BAD_QUANTIZATION", `${file}: this checkpoint's output layer is ${have.outputLayer}, but outputLayer "${options.outputLayer}" was asked for. Leave outputLayer out, or quantize the BF16 checkpoint again with --output-layer ${options.outputLayer}.`);
    }
    return {
      kind: "glm4-int4",
      record,
      groupSize: record.group_size,
      describe: `${record.format} v${record.version}, ${record.bits}-bit, group ${record.group_size}, ${describeScheme(have.scheme)}, output layer ${have.outputLayer}${record.awq ? ", activation-aware scales folded in" : ""}`,
      load: (cfg, ctx, opts) => loadInt4CheckpointWeights(dir, cfg, ctx, { ...opts, quantization, groupSize: record.group_size }, record),
    };
  }
  const gptq = await readGptqConfig(dir);
  if (gptq) {
    if (quantization !== "int4") {
      throw new Glm4Error("ERR_GLM4_BAD_QUANTIZATION", `${gptq.file}: this is a GPTQ (4-bit) checkpoint, so quantization "${quantization}" cannot load it: its full-precision weights are not in it. Load it with quantization "int4" (the default), or load the BF16 checkpoint with quantization "none".`);
    }
    const own = gptq.groupSize === 32 || gptq.groupSize === 64 || gptq.groupSize === 128 ? gptq.groupSize : 128;
    const groupSize = (options.groupSize ?? own) as GroupSize;
    return {
      kind: "gptq",
      gptq,
      groupSize,
      describe: `GPTQ (${gptq.format === "gptq" ? "gptq v1" : "gptq_v2"}), 4-bit, group ${gptq.groupSize}, ${gptq.sym ? "symmetric" : "asymmetric"}, desc_act ${gptq.descAct}, lm_head ${gptq.lmHead ? "quantized" : "full precision"}`,
      load: (cfg, ctx, opts) => loadGptqWeights(dir, cfg, ctx, { ...opts, quantization, groupSize }, gptq),
    };
  }
  return null;
}

/**
 * For `inspect`: the checks a load would make without loading — the headers against the config and the
 * quantization settings, and every scale and zero point (read from disk, a small share of the file).
 */
export async function checkPrequantized(pre: Prequantized, ckpt: Checkpoint, cfg: Glm4Config): Promise<{ naming: string; unused: string[] }> {
  if (pre.kind === "glm4-int4") {
    const entries = checkInt4Checkpoint(ckpt, cfg, pre.record, path.join(ckpt.dir, INT4_RECORD_FILE));
    for (const e of entries) {
      if (e.kind !== "int4") continue;
      const scales = u16View((await ckpt.read(e.scales)).data), zeros = u16View((await ckpt.read(e.zeros)).data);
      checkInt4Params(ckpt.info(e.scales).file, e.name, scales, zeros, e.k / e.groupSize);
    }
    return { naming: "normalized (glm4-int4-native)", unused: [] };
  }
  const { naming, entries } = checkGptqCheckpoint(ckpt, cfg, pre.gptq);
  for (const e of entries) {
    if (e.kind !== "gptq") continue;
    for (const p of e.parts) {
      const sc = await ckpt.read(`${p.prefix}.scales`);
      const vals = sc.dtype === "F32" ? new Float32Array(new Uint8Array(sc.data).buffer) : Float32Array.from(u16View(sc.data), sc.dtype === "F16" ? f16ToF32 : bf16ToF32);
      checkGptqTensors({ name: p.prefix, n: p.n, k: e.k, qweight: new Uint32Array(0), qzeros: new Uint32Array(0), scales: vals, gIdx: defaultGIdx(e.k, pre.gptq.groupSize), ng: p.ng, v1: pre.gptq.format === "gptq" }, ckpt.info(`${p.prefix}.scales`).file);
    }
  }
  return { naming, unused: [] };
}
