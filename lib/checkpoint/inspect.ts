/**
 * What a checkpoint holds (format, naming, config, dtypes, tensors, bytes, parameters) and the device memory a
 * load needs, with every problem found listed: `glm4-int4 inspect --model DIR` (lib/cli/inspect.ts).
 */
import path from "node:path";
import { readConfig } from "./config.js";
import { Checkpoint } from "./checkpoint.js";
import { checkCheckpoint } from "./namings.js";
import { checkPrequantized, detectPrequantized } from "./prequantized.js";
import { checkHostFits } from "./checkpoint.js";
import { estimateMemory } from "../engine/memory.js";
import { checkMaxContext } from "../engine/kv-cache.js";
import { Glm4Tokenizer } from "../text/tokenizer.js";

export interface InspectReport {
  dir: string;
  format: string;
  naming: string;
  config: Record<string, unknown>;
  dtypes: Record<string, number>;
  tensors: number;
  bytes: number;
  parameters: number;
  memory: Record<string, ReturnType<typeof estimateMemory>>;
  tokenizer: { format: string; vocabSize: number; specialTokens: number; eosIds: readonly number[] };
  /** Set for a checkpoint that is already quantized (glm4_int4.json or GPTQ). */
  quantization?: string;
  problems: string[];
}

export async function inspectCheckpoint(dir: string, maxContext?: number): Promise<InspectReport> {
  const cfg = await readConfig(dir);
  if (maxContext !== undefined) checkMaxContext(maxContext, cfg.maxPositions);
  // The tokenizer as a load reads it: a FIFO, a bad file or special tokens past the vocabulary fail here too.
  const tok = await Glm4Tokenizer.fromDir(dir);
  tok.checkFitsModel(cfg.vocabSize, path.join(dir, "config.json"));
  const pre = await detectPrequantized(dir);
  const ckpt = await Checkpoint.open(dir);
  try {
    const problems: string[] = [];
    const { naming, unused } = pre ? await checkPrequantized(pre, ckpt, cfg) : checkCheckpoint(ckpt, cfg);
    checkHostFits(ckpt);
    for (const u of unused) problems.push(`unused tensor ${u}`);
    const dtypes: Record<string, number> = {};
    let bytes = 0, params = 0;
    for (const t of ckpt.tensors.values()) {
      dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1;
      bytes += t.byteLength;
      params += t.shape.reduce((a, b) => a * b, 1);
    }
    const ctxLen = maxContext ?? Math.min(8192, cfg.maxPositions);
    const memory: InspectReport["memory"] = {};
    for (const [name, q] of [[`int4 g${pre?.groupSize ?? 128}`, "int4"], ...(pre ? [] : [["bf16", "none"]])] as [string, "int4" | "none"][])
      memory[name] = estimateMemory(cfg, { quantization: q, groupSize: pre?.groupSize ?? 128, maxContext: ctxLen, prefillChunk: 512, kvBytes: 2, outputLayer: pre?.kind === "glm4-int4" ? (pre.record.output_layer ?? "int4") : "int4" });
    return { dir: path.resolve(dir), format: `safetensors (${ckpt.layout}, ${ckpt.shards.length} file(s))`, naming, config: { ...cfg, maxContextForEstimate: ctxLen }, dtypes, tokenizer: { format: tok.format, vocabSize: tok.vocabSize, specialTokens: tok.specialTokens.size, eosIds: tok.eosIds }, tensors: ckpt.tensors.size, bytes, parameters: params, memory, ...(pre ? { quantization: pre.describe } : {}), problems };
  } finally {
    await ckpt.close();
  }
}
