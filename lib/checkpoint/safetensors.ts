/**
 * Safetensors reader that never holds a whole checkpoint in memory.
 *
 * File layout (https://github.com/huggingface/safetensors, format description):
 *   [u64 little-endian N][N bytes of UTF-8 JSON header][data region]
 * The header maps tensor name -> { dtype, shape, data_offsets: [begin, end] } with offsets relative to
 * the start of the data region, plus an optional "__metadata__" object of string -> string.
 *
 * Every file is treated as hostile: the header size is capped before anything is allocated, every offset
 * and length is checked against the file size with BigInt arithmetic, the tensor data must tile the data
 * region exactly (sorted by offset, no gap, no overlap, nothing after the last tensor), only known dtypes
 * are accepted and repeated names are rejected (JSON.parse silently keeps the last one, so the raw header
 * text is scanned for repeated keys as well).
 *
 * A model directory of one or more such files is lib/checkpoint/checkpoint.ts.
 */
import type { FileHandle } from "node:fs/promises";
import * as path from "node:path";
import { Glm4Error, type Glm4ErrorCode } from "../errors.js";
import { FileProblem, openRegular } from "../files.js";
import { isPlainObject, show } from "../util.js";

/**
 * Largest JSON header accepted. GLM-4-9B's largest shard header is ~30 KB (a GPTQ export's ~100 KB); 16 MiB is
 * room for ~100k tensors while a hostile header costs well under a second to parse (the format's own
 * limit, 100 MB, would cost seconds and hundreds of MB of JSON objects).
 */
export const MAX_HEADER_BYTES = 16 * 2 ** 20;

/** Bytes per element for every dtype the safetensors format defines that this reader knows. */
export const DTYPE_BYTES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1, // known but not loadable as weights here (weights.ts rejects it)
  F8_E5M2: 1, // known but not loadable as weights here (weights.ts rejects it)
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
} as const;

export type Dtype = keyof typeof DTYPE_BYTES;

export function isDtype(s: unknown): s is Dtype {
  return typeof s === "string" && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

/** Where one tensor lives in its file. `byteOffset` is absolute (from the start of the file). */
export interface TensorInfo {
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  readonly byteOffset: number;
  readonly byteLength: number;
}

export interface TensorData {
  dtype: Dtype;
  shape: number[];
  data: Buffer;
}

/** Node's fs.read moves at most 2 GiB - 1 per call; stay well below it. */
const READ_CHUNK = 1 << 30;

/** An error naming the file, what is wrong and what to do. @internal shared with checkpoint.ts */
export function stErr(code: Glm4ErrorCode, file: string, what: string, todo: string, cause?: unknown): Glm4Error {
  return new Glm4Error(code, `${file}: ${what}. ${todo}`, cause === undefined ? undefined : { cause });
}

const CORRUPT = "The file is corrupt, truncated or not a safetensors file: re-download or re-export it";

export function bad(file: string, what: string, todo = CORRUPT): Glm4Error {
  return stErr("ERR_GLM4_BAD_SAFETENSORS", file, what, todo);
}

export function fsError(e: unknown, file: string, what: string): Glm4Error {
  const code = (e as { code?: unknown })?.code;
  if (code === "ENOENT" || code === "ENOTDIR") {
    return stErr("ERR_GLM4_FILE_NOT_FOUND", file, `${what} does not exist`, "Check the path", e);
  }
  return stErr("ERR_GLM4_BAD_SAFETENSORS", file, `cannot read ${what} (${String((e as Error)?.message ?? e)})`, "Check the file's permissions and the disk", e);
}

export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/** Read exactly `length` bytes at `position` into `buf[offset..]`; a short read means the file shrank. */
async function readExactly(fh: FileHandle, buf: Uint8Array, offset: number, length: number, position: number, file: string, what: string): Promise<void> {
  let done = 0;
  while (done < length) {
    const want = Math.min(length - done, READ_CHUNK);
    let bytesRead: number;
    try {
      ({ bytesRead } = await fh.read(buf, offset + done, want, position + done));
    } catch (e) {
      throw fsError(e, file, what);
    }
    if (bytesRead === 0) {
      throw bad(file, `${what}: the file ended after ${position + done} bytes while ${position + length} were expected (was it truncated or changed while open?)`);
    }
    done += bytesRead;
  }
}

/**
 * Find the first key repeated within one JSON object. `text` must already have been accepted by
 * JSON.parse (so strings are well formed). Iterative: nesting depth cannot overflow the stack.
 * Returns the repeated key and the chain of keys of the enclosing objects (outermost first).
 */
export function findDuplicateKey(text: string): { key: string; parents: string[] } | undefined {
  interface Frame {
    keys: Set<string> | null; // null for arrays
    expectKey: boolean;
    lastKey: string;
  }
  const stack: Frame[] = [];
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      for (;;) {
        const d = text.charCodeAt(j);
        if (d === 0x5c /* \ */) j += 2;
        else if (d === 0x22 || j >= n) break;
        else j++;
      }
      const top = stack[stack.length - 1];
      if (top !== undefined && top.keys !== null && top.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.keys.has(key)) {
          return { key, parents: stack.slice(0, -1).filter((f) => f.keys !== null).map((f) => f.lastKey) };
        }
        top.keys.add(key);
        top.lastKey = key;
        top.expectKey = false;
      }
      i = j + 1;
      continue;
    }
    if (c === 0x7b /* { */) stack.push({ keys: new Set(), expectKey: true, lastKey: "" });
    else if (c === 0x5b /* [ */) stack.push({ keys: null, expectKey: false, lastKey: "" });
    else if (c === 0x7d /* } */ || c === 0x5d /* ] */) stack.pop();
    else if (c === 0x2c /* , */) {
      const top = stack[stack.length - 1];
      if (top !== undefined && top.keys !== null) top.expectKey = true;
    }
    i++;
  }
  return undefined;
}

interface ParsedHeader {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
}

/** Validate a decoded header. `dataStart` = 8 + header length, `dataLen` = bytes after the header. */
function parseHeader(text: string, file: string, dataStart: number, dataLen: number): ParsedHeader {
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (e) {
    throw bad(file, `the JSON header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(root)) throw bad(file, `the JSON header must be an object, got ${Array.isArray(root) ? "an array" : show(root)}`);

  const dup = findDuplicateKey(text);
  if (dup !== undefined) {
    if (dup.parents.length === 0) {
      throw stErr(
        "ERR_GLM4_DUPLICATE_TENSOR",
        file,
        `tensor name ${JSON.stringify(dup.key)} appears more than once in the header (readers disagree on which copy wins)`,
        "Re-export the checkpoint with unique tensor names",
      );
    }
    throw bad(file, `key ${JSON.stringify(dup.key)} appears twice in the header entry ${JSON.stringify(dup.parents[0])}`);
  }

  const metadata: Record<string, string> = Object.create(null) as Record<string, string>;
  const entries: Array<{ name: string; dtype: Dtype; shape: number[]; begin: number; end: number }> = [];
  for (const [name, v] of Object.entries(root)) {
    if (name === "__metadata__") {
      if (!isPlainObject(v)) throw bad(file, `"__metadata__" must be an object of strings, got ${show(v)}`);
      for (const [mk, mv] of Object.entries(v)) {
        if (typeof mv !== "string") throw bad(file, `"__metadata__" entry ${JSON.stringify(mk)} must be a string, got ${show(mv)}`);
        metadata[mk] = mv;
      }
      continue;
    }
    const t = `tensor ${JSON.stringify(name)}`;
    if (!isPlainObject(v)) throw bad(file, `${t}: the header entry must be an object with dtype, shape and data_offsets, got ${show(v)}`);
    const { dtype, shape, data_offsets: offs } = v;
    if (typeof dtype !== "string") throw bad(file, `${t}: "dtype" must be a string, got ${show(dtype)}`);
    if (!isDtype(dtype)) {
      throw stErr(
        "ERR_GLM4_UNKNOWN_DTYPE",
        file,
        `${t} has dtype ${JSON.stringify(dtype)}, which this reader does not know (known: ${Object.keys(DTYPE_BYTES).join(", ")})`,
        "Convert the checkpoint to BF16, F16 or F32 safetensors",
      );
    }
    if (!Array.isArray(shape)) throw bad(file, `${t}: "shape" must be an array of non-negative integers, got ${show(shape)}`);
    for (const d of shape) {
      if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
        throw bad(file, `${t}: "shape" ${show(shape)} has ${show(d)}, but every dimension must be a non-negative integer`);
      }
    }
    if (!Array.isArray(offs) || offs.length !== 2) throw bad(file, `${t}: "data_offsets" must be [begin, end], got ${show(offs)}`);
    const [begin, end] = offs as unknown[];
    for (const o of [begin, end]) {
      if (typeof o !== "number" || !Number.isSafeInteger(o) || o < 0) {
        throw bad(file, `${t}: "data_offsets" ${show(offs)} must hold two non-negative integers`);
      }
    }
    const b = begin as number;
    const e = end as number;
    if (b > e) throw bad(file, `${t}: "data_offsets" [${b}, ${e}] ends before it begins`);
    if (e > dataLen) {
      throw bad(file, `${t}: "data_offsets" [${b}, ${e}] reach past the end of the data region (${dataLen} bytes after the ${dataStart}-byte header)`);
    }
    let numel = 1n;
    for (const d of shape as number[]) numel *= BigInt(d);
    const need = numel * BigInt(DTYPE_BYTES[dtype]);
    if (need !== BigInt(e - b)) {
      throw bad(file, `${t}: shape ${fmtShape(shape as number[])} of ${dtype} needs ${need} bytes but "data_offsets" [${b}, ${e}] span ${e - b}`);
    }
    entries.push({ name, dtype, shape: (shape as number[]).map((d) => (d === 0 ? 0 : d)), begin: b, end: e });
  }

  // The data must tile [0, dataLen) exactly, as the format requires: no overlap (two tensors aliasing the
  // same bytes), no gap and no trailing bytes (room to hide data nobody validated).
  entries.sort((x, y) => x.begin - y.begin || x.end - y.end);
  let expected = 0;
  let prev: string | undefined;
  for (const en of entries) {
    if (en.begin < expected) {
      throw bad(file, `tensor ${JSON.stringify(en.name)} at data_offsets [${en.begin}, ${en.end}] overlaps tensor ${JSON.stringify(prev)} which ends at ${expected}`);
    }
    if (en.begin > expected) {
      throw bad(
        file,
        `tensor ${JSON.stringify(en.name)} begins at data offset ${en.begin}, but ${prev === undefined ? "the data region begins at 0" : `the previous tensor ${JSON.stringify(prev)} ends at ${expected}`}: ${en.begin - expected} bytes are not covered by any tensor`,
      );
    }
    expected = en.end;
    prev = en.name;
  }
  if (expected !== dataLen) {
    throw bad(
      file,
      `the tensors cover ${expected} bytes of data but the file holds ${dataLen} bytes after the header (${dataLen - expected} trailing bytes${prev === undefined ? "" : ` after tensor ${JSON.stringify(prev)}`})`,
    );
  }

  const tensors = new Map<string, TensorInfo>();
  for (const en of entries) {
    tensors.set(en.name, Object.freeze({ dtype: en.dtype, shape: Object.freeze(en.shape), byteOffset: dataStart + en.begin, byteLength: en.end - en.begin }));
  }
  return { tensors, metadata };
}

/** One safetensors file: the header is parsed and validated on open; tensor data is read on demand. */
export class SafetensorsFile {
  /** Tensors in file order. */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** The "__metadata__" strings (empty when absent). */
  readonly metadata: Readonly<Record<string, string>>;
  /** Byte length of the JSON header (without the 8-byte length prefix). */
  readonly headerLength: number;
  private fh: FileHandle | undefined;

  private constructor(
    readonly path: string,
    fh: FileHandle,
    readonly fileSize: number,
    headerLength: number,
    parsed: ParsedHeader,
  ) {
    this.fh = fh;
    this.headerLength = headerLength;
    this.tensors = parsed.tensors;
    this.metadata = Object.freeze(parsed.metadata);
  }

  /** Open `file`, read and validate its header. Throws Glm4Error (BAD_SAFETENSORS, UNKNOWN_DTYPE, DUPLICATE_TENSOR, FILE_NOT_FOUND). */
  static async open(file: string): Promise<SafetensorsFile> {
    let fh: FileHandle;
    let size: number;
    try {
      ({ fh, size } = await openRegular(file));
    } catch (e) {
      if (e instanceof FileProblem && e.reason === "special") throw bad(file, e.message, "Put the real .safetensors file there");
      throw fsError(e instanceof FileProblem ? (e.cause ?? e) : e, file, "the safetensors file");
    }
    try {
      if (size < 8) throw bad(file, `the file is ${size} bytes long, shorter than the 8-byte header length`);
      const lenBuf = Buffer.alloc(8);
      await readExactly(fh, lenBuf, 0, 8, 0, file, "the header length");
      const n = lenBuf.readBigUInt64LE(0);
      // Both checks happen before anything of size n is allocated.
      if (n > BigInt(MAX_HEADER_BYTES)) {
        throw bad(file, `the header length field says ${n} bytes, more than the ${MAX_HEADER_BYTES}-byte limit for a safetensors header (file size ${size})`);
      }
      if (n > BigInt(size - 8)) {
        throw bad(file, `the header length field says ${n} bytes but only ${size - 8} bytes follow it`);
      }
      const headerLength = Number(n);
      const headerBuf = Buffer.allocUnsafe(headerLength);
      await readExactly(fh, headerBuf, 0, headerLength, 8, file, "the JSON header");
      let text: string;
      try {
        text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(headerBuf);
      } catch {
        throw bad(file, "the JSON header is not valid UTF-8");
      }
      const parsed = parseHeader(text, file, 8 + headerLength, size - 8 - headerLength);
      return new SafetensorsFile(file, fh, size, headerLength, parsed);
    } catch (e) {
      await fh.close().catch(() => undefined);
      throw e;
    }
  }

  /** The entry for `name`; throws ERR_GLM4_MISSING_TENSOR naming the file when absent. */
  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (t === undefined) {
      throw stErr("ERR_GLM4_MISSING_TENSOR", this.path, `has no tensor ${JSON.stringify(name)} (it holds ${this.tensors.size} tensors)`, "Check the tensor name and that this is the right file");
    }
    return t;
  }

  /** Read one tensor's bytes (just its range of the file). */
  async read(name: string): Promise<TensorData> {
    const t = this.info(name);
    const data = Buffer.allocUnsafe(t.byteLength);
    await this.readInto(name, data);
    return { dtype: t.dtype, shape: [...t.shape], data };
  }

  /** Read one tensor's bytes into `dest` at `destOffset` (dest must have room for `byteLength` bytes). */
  async readInto(name: string, dest: Uint8Array, destOffset = 0): Promise<TensorInfo> {
    const t = this.info(name);
    if (!Number.isSafeInteger(destOffset) || destOffset < 0 || destOffset + t.byteLength > dest.byteLength) {
      throw new Glm4Error(
        "ERR_GLM4_INVALID_ARGUMENT",
        `${this.path}: readInto(${JSON.stringify(name)}) needs ${t.byteLength} bytes at offset ${destOffset}, but the destination holds ${dest.byteLength}. Pass a large enough buffer.`,
      );
    }
    const fh = this.handle();
    await readExactly(fh, dest, destOffset, t.byteLength, t.byteOffset, this.path, `tensor ${JSON.stringify(name)}`);
    return t;
  }

  get closed(): boolean {
    return this.fh === undefined;
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    if (fh !== undefined) await fh.close();
  }

  private handle(): FileHandle {
    if (this.fh === undefined) {
      throw new Glm4Error("ERR_GLM4_DISPOSED", `${this.path}: the safetensors file was closed. Open it again with SafetensorsFile.open().`);
    }
    return this.fh;
  }
}
