/** What a load costs in device memory, from the config alone (the load's own refusal and `inspect` use it). */
import type { Glm4Config } from "../checkpoint/config.js";
import { modelTensors } from "../checkpoint/tensors.js";
import type { Quantization } from "./weights.js";

/** Bytes a linear [n, k] weight takes on the device. */
export function linearBytes(n: number, k: number, q: Quantization, group: number): number {
  return q === "int4" ? (n * k) / 2 + 2 * 2 * n * (k / group) : 2 * n * k;
}

/** Bytes a load needs on the device: weights, KV cache, scratch and the largest full-precision tensor in flight. */
export function estimateMemory(cfg: Glm4Config, o: { quantization: Quantization; groupSize: number; maxContext: number; prefillChunk: number; kvBytes: number; outputLayer?: "int4" | "bf16" }): { weights: number; kvCache: number; scratch: number; transient: number; total: number } {
  let weights = 0;
  let largest = 0;
  for (const t of modelTensors(cfg)) {
    if (t.kind === "embed") continue; // host memory
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (t.kind !== "linear") weights += 2 * n;
    else {
      const [rows, k] = t.shape;
      // outputLayer "bf16": the output layer stays dense (GLM-4-9B: +0.9 GiB)
      weights += linearBytes(rows, k, t.name === "output" && o.outputLayer === "bf16" ? "none" : o.quantization, o.groupSize);
      // INT4 linears go up in chunks of at most 64 MiB of full precision (upload.chunkRows).
      if (o.quantization === "int4") largest = Math.max(largest, Math.min(2 * n, 64 * 2 ** 20));
    }
  }
  const kvCache = 2 * cfg.numLayers * o.maxContext * cfg.numKvHeads * cfg.headDim * o.kvBytes;
  const T = o.prefillChunk;
  const scratch = 4 * T * (3 * cfg.hiddenSize + 2 * (cfg.numHeads + cfg.numKvHeads) * cfg.headDim + 3 * cfg.ffnSize) + 4 * cfg.vocabSize * 2;
  return { weights, kvCache, scratch, transient: largest, total: weights + kvCache + scratch + largest };
}
