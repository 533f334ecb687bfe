/**
 * A tiny safetensors writer for tests, plus temp directories that are removed after each test file and a
 * seeded byte generator. Deliberately independent of lib/checkpoint/safetensors.ts (it is what the reader is tested
 * against), and able to write malformed files on purpose.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";

export interface StTensor {
  name: string;
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

/** Header padded with spaces to a multiple of 8 bytes, as the reference writer does. */
function padHeader(json: string): Buffer {
  const raw = Buffer.from(json, "utf8");
  const padded = Math.ceil(raw.length / 8) * 8;
  return Buffer.concat([raw, Buffer.alloc(padded - raw.length, 0x20)]);
}

/** Bytes of a valid safetensors file holding `tensors` back to back in the given order. */
export function encodeSafetensors(tensors: StTensor[], metadata?: Record<string, string>): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) header.__metadata__ = metadata;
  let off = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.data.byteLength] };
    off += t.data.byteLength;
  }
  return encodeRaw(JSON.stringify(header), Buffer.concat(tensors.map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))));
}

/**
 * Bytes of a file with the given header text and data, no validation at all. `headerLength` overrides
 * the 8-byte length field; `pad` (default true) pads the header with spaces to a multiple of 8.
 */
export function encodeRaw(header: string, data: Uint8Array, opts: { headerLength?: bigint; pad?: boolean } = {}): Buffer {
  const h = opts.pad === false ? Buffer.from(header, "utf8") : padHeader(header);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(opts.headerLength ?? BigInt(h.length));
  return Buffer.concat([len, h, data]);
}

export async function writeSafetensors(file: string, tensors: StTensor[], metadata?: Record<string, string>): Promise<void> {
  await writeFile(file, encodeSafetensors(tensors, metadata));
}

/** Write tensors as shards `model-0000i-of-0000n.safetensors` plus model.safetensors.index.json. */
export async function writeSharded(dir: string, shards: StTensor[][], opts: { index?: boolean } = {}): Promise<string[]> {
  const names = shards.map((_, i) => `model-${String(i + 1).padStart(5, "0")}-of-${String(shards.length).padStart(5, "0")}.safetensors`);
  const weightMap: Record<string, string> = {};
  let total = 0;
  for (let i = 0; i < shards.length; i++) {
    await writeSafetensors(path.join(dir, names[i]), shards[i]);
    for (const t of shards[i]) {
      weightMap[t.name] = names[i];
      total += t.data.byteLength;
    }
  }
  if (opts.index !== false) {
    await writeFile(path.join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2));
  }
  return names;
}

const dirs: string[] = [];

/** A fresh directory under os.tmpdir(); removed by cleanupTempDirs(). */
export async function tempDir(prefix = "glm4-st-"): Promise<string> {
  const d = await mkdtemp(path.join(os.tmpdir(), prefix));
  dirs.push(d);
  return d;
}

export async function cleanupTempDirs(): Promise<void> {
  const all = dirs.splice(0);
  await Promise.all(all.map((d) => rm(d, { recursive: true, force: true })));
}

/** mulberry32 (the sampler's generator): a small seeded PRNG, good enough for test data. */
import { rng } from "../../lib/engine/generation.js";
export { rng };

export function seededBytes(n: number, seed: number): Buffer {
  const r = rng(seed);
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

const DTYPE_SIZE: Record<string, number> = { BF16: 2, F16: 2, F32: 4, F64: 8, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/** A tensor of the given dtype and shape filled with seeded random bytes. */
export function randomTensor(name: string, dtype: string, shape: number[], seed: number): StTensor {
  const n = shape.reduce((a, b) => a * b, 1) * (DTYPE_SIZE[dtype] ?? 1);
  return { name, dtype, shape, data: seededBytes(n, seed) };
}
