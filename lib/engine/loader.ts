/**
 * Loading: a checkpoint directory (either naming, sharded safetensors, BF16/F16/F32; or an INT4 checkpoint of
 * `glm4-int4 quantize`) or a synthetic model of GLM-4-9B's exact shapes, onto one device. Load-time quantization
 * goes one tensor at a time: the tensor is read from disk, uploaded, quantized on the device and its
 * full-precision copy freed, so neither the host nor the device ever holds the whole full-precision model.
 */
import path from "node:path";
import { Glm4Error, wrapNative } from "../errors.js";
import type { Glm4Config } from "../checkpoint/config.js";
import { checkHostFits } from "../checkpoint/checkpoint.js";
import { iterateWeights, type WeightTensor } from "../checkpoint/namings.js";
import { INT4_RECORD_FILE, checkInt4Checkpoint, checkInt4Params, recordSettings, type Int4Record } from "../checkpoint/int4-format.js";
import { modelTensors } from "../checkpoint/tensors.js";
import { u16View } from "../util.js";
import type { NativeContext } from "./native.js";
import { WeightAssembler, assembleFromCheckpoint, type WeightLoadOptions } from "./assembler.js";
import { uploadInt4 } from "./upload.js";
import type { ModelWeights } from "./weights.js";

export type { LoadProgress, WeightLoadOptions } from "./assembler.js";

/** Loads every tensor of a checkpoint directory onto ctx. */
export async function loadCheckpointWeights(dir: string, cfg: Glm4Config, ctx: NativeContext, opts: WeightLoadOptions): Promise<ModelWeights> {
  return assembleFromCheckpoint(dir, cfg, ctx, opts, opts, async ({ ckpt, asm, advance, checkAbort }) => {
    checkHostFits(ckpt);
    for await (const t of iterateWeights(ckpt, cfg, { signal: opts.signal }) as AsyncGenerator<WeightTensor>) {
      checkAbort();
      try {
        await asm.addHost(t);
      } catch (e) {
        throw wrapNative(e);
      }
      advance(t.data.byteLength, t.name);
    }
  });
}

/** GLM-4-9B(-chat)'s configuration (from its config.json). */
export function glm4_9bConfig(): Glm4Config {
  return {
    flavour: "chatglm",
    numLayers: 40,
    hiddenSize: 4096,
    numHeads: 32,
    headDim: 128,
    numKvHeads: 2,
    ffnSize: 13696,
    vocabSize: 151552,
    rmsEps: 1.5625e-7,
    ropeTheta: 10000 * 500,
    rotaryDim: 64,
    qkvBias: true,
    maxPositions: 131072,
    eosTokenIds: [151329, 151336, 151338],
    padTokenId: 151329,
    torchDtype: "bfloat16",
  };
}

/**
 * Random weights of the config's exact shapes, made on the device (bf16, then quantized like a real load):
 * for speed and memory measurements without an 18 GB file. Scales keep activations healthy (linear std
 * 1/sqrt(fan_in), norms 1, biases small) so that no NaN or Inf appears over long generations.
 */
export async function syntheticWeights(cfg: Glm4Config, ctx: NativeContext, opts: WeightLoadOptions & { seed?: number }): Promise<ModelWeights> {
  const asm = new WeightAssembler(ctx, cfg, opts);
  const plan = modelTensors(cfg);
  const total = plan.reduce((a, t) => a + 2 * t.shape.reduce((x, y) => x * y, 1), 0);
  let loaded = 0;
  let seed = opts.seed ?? 1234;
  try {
    for (const t of plan) {
      if (opts.signal?.aborted) throw new Glm4Error("ERR_GLM4_ABORTED", "building the synthetic model was aborted", { cause: opts.signal.reason });
      const isNorm = t.kind === "norm";
      const std = isNorm || t.kind === "bias" ? 0.02 : t.kind === "embed" ? 1 : 1 / Math.sqrt(t.shape[1]);
      await asm.addRandom(t.name, t.shape, seed++, isNorm ? 1 : 0, std);
      loaded += 2 * t.shape.reduce((x, y) => x * y, 1);
      opts.onProgress?.({ stage: "weights", loaded, total, tensor: t.name });
    }
    const w = asm.finish();
    opts.onProgress?.({ stage: "done", loaded: total, total });
    return w;
  } catch (e) {
    asm.dispose();
    throw wrapNative(e);
  }
}

/**
 * Loads an INT4 checkpoint written by `glm4-int4 quantize` (lib/checkpoint/int4-format.ts): codes, scales and zeros go
 * onto ctx as they are (no full-precision step); scales and zeros are checked on the host first. The
 * embedding, norms and biases load as from a BF16 checkpoint.
 */
export async function loadInt4CheckpointWeights(dir: string, cfg: Glm4Config, ctx: NativeContext, opts: WeightLoadOptions, record: Int4Record): Promise<ModelWeights> {
  const recordFile = path.join(dir, INT4_RECORD_FILE);
  if (opts.quantization !== "int4") {
    throw new Glm4Error("ERR_GLM4_BAD_QUANTIZATION", `${recordFile}: this checkpoint is already quantized to INT4 (group ${record.group_size}), so quantization "${opts.quantization}" cannot load it: its full-precision weights are not in it. Load it with quantization "int4" (the default), or load the BF16 source checkpoint with quantization "none".`);
  }
  const settings = recordSettings(record);
  return assembleFromCheckpoint(dir, cfg, ctx, opts, { quantization: "int4", ...settings }, async ({ ckpt, asm, advance, checkAbort }) => {
    const entries = checkInt4Checkpoint(ckpt, cfg, record, recordFile);
    checkHostFits(ckpt);
    for (const e of entries) {
      checkAbort();
      if (e.kind === "int4") {
        const [qw, sc, zr] = [await ckpt.read(e.qweight), await ckpt.read(e.scales), await ckpt.read(e.zeros)];
        const scales = u16View(sc.data), zeros = u16View(zr.data);
        checkInt4Params(ckpt.info(e.scales).file, e.name, scales, zeros, e.k / e.groupSize);
        try {
          asm.addLinear(e.name, await uploadInt4(ctx, e.n, e.k, e.groupSize, qw.data, scales, zeros, e.codebook));
        } catch (err) {
          throw wrapNative(err);
        }
        advance(qw.data.byteLength + sc.data.byteLength + zr.data.byteLength, e.name);
      } else {
        const t = await ckpt.read(e.tensor);
        try {
          await asm.addHost({ name: e.name, dtype: t.dtype, shape: t.shape, data: t.data });
        } catch (err) {
          throw wrapNative(err);
        }
        advance(t.data.byteLength, e.name);
      }
    }
  });
}
