/**
 * `quantizeCheckpoint()` (the `glm4-int4 quantize` command, lib/cli/quantize.ts): a BF16/F16/F32 checkpoint in,
 * an INT4 checkpoint out (the format is described in lib/checkpoint/int4-format.ts).
 *
 * The source is read one tensor at a time (iterateWeights); each linear layer is quantized by the same
 * code path as a load with quantization "int4" (loader.quantizeHostLinear), so loading the result gives
 * the same weights bit for bit, on the device the options name (the CPU backend, or the GPU). Every other
 * tensor is copied byte for byte. Shards (about 2 GB each) are laid out from the config before any data is
 * read, so each tensor is written once, straight to its place in its shard.
 *
 * Safety: the source directory is never written (both paths are resolved through symlinks, and an output
 * inside the source, or a source inside the output, is refused); an existing non-empty output is replaced
 * only with `force`; everything is written into a temporary directory beside the output and renamed into
 * place at the end, so a failure or an abort leaves the output as it was.
 */
import { copyFile, mkdir, open as fsOpen, readFile, readdir, realpath, rename, rm, stat, writeFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import type { FileHandle } from "node:fs/promises";
import path from "node:path";
import { Glm4Error, wrapNative } from "../errors.js";
import { readConfig } from "./config.js";
import { expectedShapes, isLinearName } from "./tensors.js";
import { DTYPE_BYTES, type Dtype } from "./safetensors.js";
import { Checkpoint, INDEX_FILE } from "./checkpoint.js";
import { checkCheckpoint, iterateWeights, onDiskLayout } from "./namings.js";
import { checkHostFits } from "./checkpoint.js";
import { quantizeHostLinear } from "../engine/upload.js";
import { createContext, resolveDevice, type DeviceOption } from "../engine/device.js";
import { disposeLinear, disposeWeights } from "../engine/weights.js";
import { loadCheckpointWeights } from "../engine/loader.js";
import { Glm4Tokenizer } from "../text/tokenizer.js";
import { AWQ_FOLDS, foldAwq, searchAwq, type AwqPlan } from "../quant/awq.js";
import { isInside, packageVersion } from "../util.js";
import {
  CANONICAL_LAYOUT,
  INT4_FORMAT,
  INT4_MAX_VERSION,
  INT4_RECORD_FILE,
  INT4_VERSION,
  SCHEME_INFO,
  int4Names,
  int4Settings,
  type AwqRecord,
  type GroupSize,
  type Int4Record,
  type Int4Scheme,
  type OutputLayer,
} from "./int4-format.js";
import { detectPrequantized } from "./prequantized.js";

/** Files copied from the source next to the weights (config.json must exist; the others when present). */
export const COPIED_FILES = ["config.json", "generation_config.json", "tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"];

export const DEFAULT_MAX_SHARD_BYTES = 2_000_000_000;

export interface QuantizeProgress {
  stage: "weights" | "done";
  /** Source bytes processed so far, and in all. */
  loaded: number;
  total: number;
  /** The tensor just written (normalized name). */
  tensor?: string;
}

export interface QuantizeOptions {
  /** INT4 group: 128 (default), 64 or 32. */
  groupSize?: GroupSize;
  /** Codes: "asym" (default), "sym" (zero 8) or "nf4" (csrc/core/int4_layout.h). */
  scheme?: Int4Scheme;
  /** The output layer quantized ("int4", default) or copied as it is ("bf16"). */
  outputLayer?: OutputLayer;
  /**
   * Activation-aware scaling (lib/quant/awq.ts): per-input-channel scales of QKV, O, gate|up and down searched on a
   * calibration text (`calibration`: a UTF-8 file; at most `tokens` tokens, default 512, in windows of 512) and
   * folded into the norms, the V rows and the up rows. Needs the full-precision model on the device once.
   */
  awq?: { calibration: string; tokens?: number };
  /** Replace an existing non-empty output directory (default false: ERR_GLM4_OUTPUT_EXISTS). */
  force?: boolean;
  /** Where to quantize: "auto" (default: the GPU when there is one), "cpu", "cuda", "cuda:N". Same codes everywhere. */
  device?: DeviceOption;
  /** CPU worker threads (default: all cores). */
  threads?: number;
  /** Largest shard in bytes (default 2e9); a tensor larger than that gets a shard of its own. */
  maxShardBytes?: number;
  signal?: AbortSignal;
  onProgress?: (p: QuantizeProgress) => void;
}

export interface QuantizeResult {
  /** The output directory (resolved). */
  dir: string;
  record: Int4Record;
  /** Shard file names. */
  shards: string[];
  /** Bytes of tensor data written, and read from the source. */
  bytes: number;
  sourceBytes: number;
  device: string;
  seconds: number;
}

/** The real path `p` has or would have: the nearest existing ancestor resolved through symlinks, plus the rest. */
async function resolveFuture(p: string): Promise<string> {
  const abs = path.resolve(p);
  const rest: string[] = [];
  let cur = abs;
  for (;;) {
    try {
      return path.join(await realpath(cur), ...rest.reverse());
    } catch (e) {
      if ((e as { code?: unknown })?.code !== "ENOENT") throw e;
      const parent = path.dirname(cur);
      if (parent === cur) return abs;
      rest.push(path.basename(cur));
      cur = parent;
    }
  }
}

interface PlannedTensor {
  name: string;
  dtype: Dtype;
  shape: number[];
  bytes: number;
  /** Offset in its shard's data region. */
  offset: number;
}

interface Shard {
  file: string;
  tensors: PlannedTensor[];
  bytes: number;
}

/** Lays out tensors (in write order) into shards of at most `limit` bytes; the tensors of one entry stay together. */
function planShards(entries: { tensors: { name: string; dtype: Dtype; shape: number[] }[] }[], limit: number): Shard[] {
  const shards: Shard[] = [];
  let cur: Shard | undefined;
  for (const e of entries) {
    const bytes = e.tensors.reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1) * DTYPE_BYTES[t.dtype], 0);
    if (!cur || (cur.bytes > 0 && cur.bytes + bytes > limit)) {
      cur = { file: "", tensors: [], bytes: 0 };
      shards.push(cur);
    }
    for (const t of e.tensors) {
      const b = t.shape.reduce((x, y) => x * y, 1) * DTYPE_BYTES[t.dtype];
      cur.tensors.push({ ...t, bytes: b, offset: cur.bytes });
      cur.bytes += b;
    }
  }
  const n = shards.length;
  shards.forEach((s, i) => (s.file = `model-${String(i + 1).padStart(5, "0")}-of-${String(n).padStart(5, "0")}.safetensors`));
  return shards;
}

/** A safetensors header for `tensors`, padded with spaces so that the data starts 8-byte aligned. */
function encodeHeader(tensors: PlannedTensor[], metadata: Record<string, string>): Buffer {
  const h: Record<string, unknown> = { __metadata__: metadata };
  for (const t of tensors) h[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [t.offset, t.offset + t.bytes] };
  const json = Buffer.from(JSON.stringify(h), "utf8");
  const pad = (8 - (json.length % 8)) % 8;
  const out = Buffer.alloc(8 + json.length + pad, 0x20);
  out.writeBigUInt64LE(BigInt(json.length + pad), 0);
  json.copy(out, 8);
  return out;
}

/** Writes the planned shards in order, each tensor checked against the plan. */
class ShardWriter {
  private shard = -1;
  private next = 0;
  private fh: FileHandle | undefined;
  private pos = 0;
  constructor(
    private readonly dir: string,
    private readonly shards: Shard[],
    private readonly metadata: Record<string, string>,
  ) {}

  async write(name: string, view: ArrayBufferView): Promise<void> {
    const data = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
    let s = this.shards[this.shard];
    if (!s || this.next >= s.tensors.length) {
      await this.closeShard();
      this.shard++;
      this.next = 0;
      s = this.shards[this.shard];
      if (!s) throw new Glm4Error("ERR_GLM4_INTERNAL", `quantize: tensor ${name} was not planned`);
      this.fh = await fsOpen(path.join(this.dir, s.file), "wx");
      const header = encodeHeader(s.tensors, this.metadata);
      await this.fh.write(header, 0, header.length, 0);
      this.pos = header.length;
    }
    const t = s.tensors[this.next];
    if (t.name !== name || t.bytes !== data.byteLength) {
      throw new Glm4Error("ERR_GLM4_INTERNAL", `quantize: expected tensor ${t.name} (${t.bytes} bytes) next in ${s.file}, got ${name} (${data.byteLength} bytes)`);
    }
    let done = 0;
    while (done < data.byteLength) {
      const n = Math.min(data.byteLength - done, 1 << 30);
      const { bytesWritten } = await this.fh!.write(data, done, n, this.pos);
      done += bytesWritten;
      this.pos += bytesWritten;
    }
    this.next++;
  }

  async closeShard(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    if (fh) {
      await fh.sync();
      await fh.close();
    }
  }

  /** Closes the last shard; throws if a planned tensor was never written. */
  async finish(): Promise<void> {
    await this.closeShard();
    const s = this.shards[this.shard];
    if (this.shard !== this.shards.length - 1 || !s || this.next !== s.tensors.length) throw new Glm4Error("ERR_GLM4_INTERNAL", "quantize: not every planned tensor was written");
  }
}

/**
 * Quantizes the checkpoint in `src` (original or HF naming, BF16/F16/F32) into a new INT4 checkpoint in
 * `out`. Throws ERR_GLM4_UNSAFE_PATH (out inside src or src inside out), ERR_GLM4_OUTPUT_EXISTS (non-empty
 * out without force), ERR_GLM4_BAD_QUANTIZATION (src already quantized), ERR_GLM4_ABORTED, and whatever
 * reading a bad checkpoint throws; in every case `out` is left as it was.
 */
export async function quantizeCheckpoint(src: string, out: string, options: QuantizeOptions = {}): Promise<QuantizeResult> {
  const t0 = performance.now();
  if (typeof src !== "string" || src === "") throw new TypeError("quantizeCheckpoint(src, out): src must be the path of a checkpoint directory");
  if (typeof out !== "string" || out === "") throw new TypeError("quantizeCheckpoint(src, out): out must be the path of the directory to write");
  const settings = int4Settings(options);
  const G = settings.groupSize;
  const quantized = (name: string) => isLinearName(name) && !(name === "output" && settings.outputLayer === "bf16");
  let awq: { file: string; text: string; sha256: string; tokens: number } | undefined;
  if (options.awq !== undefined) {
    const file = options.awq.calibration;
    if (typeof file !== "string" || file === "") throw new TypeError("awq.calibration must be the path of a UTF-8 text file");
    const tokens = options.awq.tokens ?? 512;
    if (!Number.isInteger(tokens) || tokens < 16) throw new RangeError(`awq.tokens must be an integer >= 16, got ${String(tokens)}`);
    let buf: Buffer;
    try {
      buf = await readFile(file);
    } catch (e) {
      throw new Glm4Error("ERR_GLM4_FILE_NOT_FOUND", `${file}: the calibration text cannot be read (${(e as Error).message})`);
    }
    awq = { file, text: buf.toString("utf8"), sha256: createHash("sha256").update(buf).digest("hex"), tokens };
  }
  const limit = options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`maxShardBytes must be a positive integer, got ${String(limit)}`);

  let realSrc: string;
  try {
    realSrc = await realpath(src);
    if (!(await stat(realSrc)).isDirectory()) throw new Error("not a directory");
  } catch {
    throw new Glm4Error("ERR_GLM4_FILE_NOT_FOUND", `${src}: no such directory; pass the folder that holds config.json and the *.safetensors files`);
  }
  const realOut = await resolveFuture(out);
  if (isInside(realOut, realSrc)) {
    throw new Glm4Error("ERR_GLM4_UNSAFE_PATH", `${out}: the output ${realOut === realSrc ? "is" : "is inside"} the source checkpoint ${src}${realSrc !== path.resolve(src) ? ` (${realSrc})` : ""}; quantize never writes into its source. Choose an output directory outside it.`);
  }
  if (isInside(realSrc, realOut)) {
    throw new Glm4Error("ERR_GLM4_UNSAFE_PATH", `${out}: the source checkpoint ${src} is inside this output directory, which quantize would replace. Choose an output directory that does not contain the source.`);
  }
  let outExists = false;
  try {
    const st = await stat(realOut);
    outExists = true;
    if (!st.isDirectory()) throw new Glm4Error("ERR_GLM4_OUTPUT_EXISTS", `${out}: exists and is not a directory; choose another output path (quantize writes a directory)`);
    if ((await readdir(realOut)).length > 0 && options.force !== true) {
      throw new Glm4Error("ERR_GLM4_OUTPUT_EXISTS", `${out}: exists and is not empty; pass --force (force: true) to replace it, or choose another output directory`);
    }
  } catch (e) {
    if (e instanceof Glm4Error) throw e;
    if ((e as { code?: unknown })?.code !== "ENOENT") throw e;
  }

  const cfg = await readConfig(src);
  const pre = await detectPrequantized(src);
  if (pre) {
    throw new Glm4Error("ERR_GLM4_BAD_QUANTIZATION", `${src}: is already quantized (${pre.describe}); quantize reads BF16, F16 or F32 checkpoints. ${pre.kind === "gptq" ? "Load it directly: loadGlm4 repacks GPTQ weights at load." : "Load it directly, or quantize its BF16 source again."}`);
  }
  const signal = options.signal;
  const aborted = () => new Glm4Error("ERR_GLM4_ABORTED", `quantizing ${src} was aborted; ${out} was left as it was`, { cause: signal?.reason });
  if (signal?.aborted) throw aborted();

  const ckpt = await Checkpoint.open(src);
  let tmp: string | undefined;
  let ctx: ReturnType<typeof createContext> | undefined;
  let writer: ShardWriter | undefined;
  try {
    const { naming } = checkCheckpoint(ckpt, cfg);
    checkHostFits(ckpt);
    const shapes = expectedShapes(cfg);
    // Plan every output tensor before reading data: shapes from the config, dtypes from the source headers.
    const entries = onDiskLayout(cfg, naming).map((e) => {
      const shape = shapes.get(e.name)!;
      if (quantized(e.name)) {
        const [n, k] = shape;
        if (k % G !== 0) throw new Glm4Error("ERR_GLM4_SHAPE_MISMATCH", `${src}: ${e.name} [${n}, ${k}] cannot be quantized with group ${G}: ${k} is not a multiple of ${G}; use a group size that divides ${k}`);
        const names = int4Names(e.name);
        return {
          name: e.name,
          linear: true,
          tensors: [
            { name: names.qweight, dtype: "U8" as Dtype, shape: [n, k / 2] },
            { name: names.scales, dtype: "BF16" as Dtype, shape: [n, k / G] },
            { name: names.zeros, dtype: "BF16" as Dtype, shape: [n, k / G] },
          ],
        };
      }
      const folded = awq && /^layers\.\d+\.(attn_norm|ffn_norm|qkv_bias)$/.test(e.name); // stored F32 (lib/quant/awq.ts)
      return { name: e.name, linear: false, tensors: [{ name: e.name, dtype: folded ? ("F32" as Dtype) : ckpt.info(e.parts[0].onDisk).dtype, shape }] };
    });
    const shards = planShards(entries, limit);
    const device = resolveDevice(options.device ?? "auto");
    ctx = createContext(device, options.threads);
    let plan: AwqPlan | undefined;
    if (awq) {
      // The full-precision model on the device once, for the calibration pass and the searches; freed before quantizing.
      const tok = await Glm4Tokenizer.fromDir(src);
      if (!tok) throw new Glm4Error("ERR_GLM4_BAD_TOKENIZER", `${src}: has no tokenizer files; activation-aware scaling tokenizes the calibration text with the model's tokenizer`);
      const ids = tok.encode(awq.text).slice(0, awq.tokens);
      if (ids.length < 16) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `${awq.file}: the calibration text has ${ids.length} token(s); give at least a few hundred tokens of text like what the model will see`);
      const windows: number[][] = [];
      for (let i = 0; i < ids.length; i += 512) windows.push(ids.slice(i, i + 512));
      const full = await loadCheckpointWeights(src, cfg, ctx, { quantization: "none", groupSize: G, signal });
      try {
        plan = await searchAwq(ctx, cfg, full, windows, settings, { signal });
      } finally {
        disposeWeights(full);
      }
    }

    await mkdir(path.dirname(realOut), { recursive: true });
    const base = path.basename(realOut);
    tmp = path.join(path.dirname(realOut), `.${base}.partial-${process.pid}-${Date.now().toString(36)}`);
    await mkdir(tmp);
    writer = new ShardWriter(tmp, shards, { format: INT4_FORMAT, glm4_int4_version: String(INT4_VERSION) });

    let total = 0;
    for (const t of ckpt.tensors.values()) total += t.byteLength;
    let loaded = 0;
    const dtypes: Record<string, number> = {};
    for (const t of ckpt.tensors.values()) dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1;
    for await (const t of iterateWeights(ckpt, cfg, { naming, signal })) {
      if (signal?.aborted) throw aborted();
      const f = plan ? foldAwq(t, plan, cfg) : { tensor: t, colScale: undefined };
      if (quantized(t.name)) {
        let lin;
        try {
          lin = await quantizeHostLinear(ctx, f.tensor, G, settings.scheme, f.colScale);
        } catch (e) {
          throw wrapNative(e);
        }
        try {
          if (lin.kind !== "int4") throw new Glm4Error("ERR_GLM4_INTERNAL", "quantize: expected an INT4 weight");
          const names = int4Names(t.name);
          await writer.write(names.qweight, lin.q.codes.read() as Uint8Array);
          await writer.write(names.scales, lin.q.scales.read() as Uint16Array);
          await writer.write(names.zeros, lin.q.zeros.read() as Uint16Array);
        } finally {
          disposeLinear(lin);
        }
      } else {
        await writer.write(t.name, f.tensor.data);
      }
      loaded += t.data.byteLength;
      options.onProgress?.({ stage: "weights", loaded, total, tensor: t.name });
    }
    await writer.finish();
    if (signal?.aborted) throw aborted();

    const weightMap: Record<string, string> = {};
    let bytes = 0;
    for (const s of shards) for (const t of s.tensors) {
      weightMap[t.name] = s.file;
      bytes += t.bytes;
    }
    await writeFile(path.join(tmp, INDEX_FILE), JSON.stringify({ metadata: { total_size: bytes, format: INT4_FORMAT }, weight_map: weightMap }, null, 2) + "\n");
    for (const f of COPIED_FILES) {
      const from = path.join(src, f);
      const st = await stat(from).catch(() => null);
      if (st?.isFile()) await copyFile(from, path.join(tmp, f));
      else if (f === "config.json") throw new Glm4Error("ERR_GLM4_FILE_NOT_FOUND", `${from}: does not exist or is not a file`);
    }
    // Version 1 when it describes the checkpoint (asymmetric, every linear INT4): older releases load it too.
    const v1 = settings.scheme === "asym" && settings.outputLayer === "int4" && !plan;
    const awqRecord: AwqRecord | null = plan
      ? {
          calibration: path.basename(awq!.file),
          sha256: awq!.sha256,
          tokens: plan.tokens,
          grid: plan.grid,
          alphas: Object.fromEntries(Object.entries(plan.results).map(([k, r]) => [k, r.alpha])),
          folded: AWQ_FOLDS,
          errors: Object.fromEntries(Object.entries(plan.results).map(([k, r]) => [k, { rtn: r.errorRtn, awq: r.error }])),
        }
      : null;
    const record: Int4Record = {
      format: INT4_FORMAT,
      version: v1 ? INT4_VERSION : INT4_MAX_VERSION,
      bits: 4,
      group_size: G,
      zero_point: SCHEME_INFO[settings.scheme].zeroPoint,
      ...(v1 ? {} : { scheme: settings.scheme, codebook: SCHEME_INFO[settings.scheme].codebook, output_layer: settings.outputLayer, awq: awqRecord }),
      layout: CANONICAL_LAYOUT,
      quantized: entries.filter((e) => e.linear).map((e) => e.name),
      full_precision: entries.filter((e) => !e.linear).map((e) => e.name),
      source: { dir: realSrc, naming, flavour: cfg.flavour, layout: ckpt.layout, shards: ckpt.shards.length, tensors: ckpt.tensors.size, bytes: total, dtypes },
      quantizer: { library: `glm4-int4-native ${packageVersion()}`, device, created: new Date().toISOString() },
    };
    await writeFile(path.join(tmp, INT4_RECORD_FILE), JSON.stringify(record, null, 2) + "\n");
    if (signal?.aborted) throw aborted();

    // Into place: a rename, so the output is either the old one or the complete new one.
    if (outExists && (await readdir(realOut)).length > 0) {
      const old = path.join(path.dirname(realOut), `.${base}.old-${process.pid}-${Date.now().toString(36)}`);
      await rename(realOut, old);
      try {
        await rename(tmp, realOut);
      } catch (e) {
        await rename(old, realOut).catch(() => undefined);
        throw e;
      }
      tmp = undefined;
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(tmp, realOut);
      tmp = undefined;
    }
    options.onProgress?.({ stage: "done", loaded: total, total });
    return { dir: realOut, record, shards: shards.map((s) => s.file), bytes, sourceBytes: total, device, seconds: (performance.now() - t0) / 1000 };
  } finally {
    await writer?.closeShard().catch(() => undefined);
    if (tmp) await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    try {
      ctx?.dispose();
    } catch {
      /* the original error matters more */
    }
    await ckpt.close();
  }
}
