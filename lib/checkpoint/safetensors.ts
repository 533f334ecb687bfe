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
 * `Checkpoint` puts a model directory together: one `model.safetensors`, shards listed by
 * `model.safetensors.index.json`, or several `*.safetensors` with no index. Shards are opened lazily and at
 * most `maxOpenFiles` file handles stay open.
 */
import { open as fsOpen, readFile, readdir, realpath, stat } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import * as path from "node:path";
import { Glm4Error, type Glm4ErrorCode } from "../errors.js";

/** Largest JSON header accepted. GLM-4-9B's largest shard header is ~30 KB; 100 MiB leaves room for anything real. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

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

function stErr(code: Glm4ErrorCode, file: string, what: string, todo: string, cause?: unknown): Glm4Error {
  return new Glm4Error(code, `${file}: ${what}. ${todo}`, cause === undefined ? undefined : { cause });
}

const CORRUPT = "The file is corrupt, truncated or not a safetensors file: re-download or re-export it";

function bad(file: string, what: string, todo = CORRUPT): Glm4Error {
  return stErr("ERR_GLM4_BAD_SAFETENSORS", file, what, todo);
}

function fsError(e: unknown, file: string, what: string): Glm4Error {
  const code = (e as { code?: unknown })?.code;
  if (code === "ENOENT" || code === "ENOTDIR") {
    return stErr("ERR_GLM4_FILE_NOT_FOUND", file, `${what} does not exist`, "Check the path", e);
  }
  return stErr("ERR_GLM4_BAD_SAFETENSORS", file, `cannot read ${what} (${String((e as Error)?.message ?? e)})`, "Check the file's permissions and the disk", e);
}

function fmtShape(shape: readonly number[]): string {
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

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
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
  if (!isPlainObject(root)) throw bad(file, `the JSON header must be an object, got ${Array.isArray(root) ? "an array" : describe(root)}`);

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
      if (!isPlainObject(v)) throw bad(file, `"__metadata__" must be an object of strings, got ${describe(v)}`);
      for (const [mk, mv] of Object.entries(v)) {
        if (typeof mv !== "string") throw bad(file, `"__metadata__" entry ${JSON.stringify(mk)} must be a string, got ${describe(mv)}`);
        metadata[mk] = mv;
      }
      continue;
    }
    const t = `tensor ${JSON.stringify(name)}`;
    if (!isPlainObject(v)) throw bad(file, `${t}: the header entry must be an object with dtype, shape and data_offsets, got ${describe(v)}`);
    const { dtype, shape, data_offsets: offs } = v;
    if (typeof dtype !== "string") throw bad(file, `${t}: "dtype" must be a string, got ${describe(dtype)}`);
    if (!isDtype(dtype)) {
      throw stErr(
        "ERR_GLM4_UNKNOWN_DTYPE",
        file,
        `${t} has dtype ${JSON.stringify(dtype)}, which this reader does not know (known: ${Object.keys(DTYPE_BYTES).join(", ")})`,
        "Convert the checkpoint to BF16, F16 or F32 safetensors",
      );
    }
    if (!Array.isArray(shape)) throw bad(file, `${t}: "shape" must be an array of non-negative integers, got ${describe(shape)}`);
    for (const d of shape) {
      if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
        throw bad(file, `${t}: "shape" ${describe(shape)} has ${describe(d)}, but every dimension must be a non-negative integer`);
      }
    }
    if (!Array.isArray(offs) || offs.length !== 2) throw bad(file, `${t}: "data_offsets" must be [begin, end], got ${describe(offs)}`);
    const [begin, end] = offs as unknown[];
    for (const o of [begin, end]) {
      if (typeof o !== "number" || !Number.isSafeInteger(o) || o < 0) {
        throw bad(file, `${t}: "data_offsets" ${describe(offs)} must hold two non-negative integers`);
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
    try {
      fh = await fsOpen(file, "r");
    } catch (e) {
      throw fsError(e, file, "the safetensors file");
    }
    try {
      let size: number;
      try {
        const st = await fh.stat();
        if (!st.isFile()) throw bad(file, "is not a regular file", "Pass the path of a .safetensors file");
        size = st.size;
      } catch (e) {
        if (e instanceof Glm4Error) throw e;
        throw fsError(e, file, "the safetensors file");
      }
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

// ---------------------------------------------------------------------------------------------------------
// Checkpoint: a directory of one or more safetensors files
// ---------------------------------------------------------------------------------------------------------

export const SINGLE_FILE = "model.safetensors";
export const INDEX_FILE = "model.safetensors.index.json";

export interface CheckpointTensorInfo extends TensorInfo {
  readonly name: string;
  /** The shard's file name inside the checkpoint directory. */
  readonly shard: string;
  /** The shard's path (directory as given + shard name), for messages. */
  readonly file: string;
}

export interface CheckpointOptions {
  /** Most shard file handles kept open at once (default 4). Reads in flight may briefly exceed it. */
  maxOpenFiles?: number;
  /**
   * Extra directories that shards may resolve into through symlinks. Shards must otherwise resolve inside
   * the checkpoint directory; the Hugging Face cache layout (`snapshots/<rev>/x -> ../../blobs/<sha>`) is
   * recognised and allowed without listing it here.
   */
  allowedRoots?: string[];
}

interface Slot {
  file: Promise<SafetensorsFile>;
  users: number;
}

function isInside(p: string, root: string): boolean {
  return p === root || p.startsWith(root.endsWith(path.sep) ? root : root + path.sep);
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

export class Checkpoint {
  /** All tensors, shard by shard in file order. */
  readonly tensors: ReadonlyMap<string, CheckpointTensorInfo>;
  /** Shard file names in the order they are first listed. */
  readonly shards: readonly string[];
  /** "single" = model.safetensors, "indexed" = model.safetensors.index.json, "multi" = *.safetensors without index. */
  readonly layout: "single" | "indexed" | "multi";
  /** The index's "metadata" object when there is one. */
  readonly indexMetadata: Readonly<Record<string, unknown>> | undefined;
  private readonly shardPaths: ReadonlyMap<string, string>; // shard name -> resolved real path
  private readonly maxOpen: number;
  private readonly slots = new Map<string, Slot>(); // insertion order = least recently used first
  private isClosed = false;

  private constructor(
    readonly dir: string,
    init: {
      layout: Checkpoint["layout"];
      tensors: Map<string, CheckpointTensorInfo>;
      shards: string[];
      shardPaths: Map<string, string>;
      indexMetadata: Record<string, unknown> | undefined;
      maxOpen: number;
    },
  ) {
    this.layout = init.layout;
    this.tensors = init.tensors;
    this.shards = Object.freeze([...init.shards]);
    this.shardPaths = init.shardPaths;
    this.indexMetadata = init.indexMetadata;
    this.maxOpen = init.maxOpen;
  }

  /**
   * Open a checkpoint directory and validate every shard's header (no tensor data is read).
   * Throws Glm4Error: FILE_NOT_FOUND, BAD_INDEX, MISSING_SHARD, UNSAFE_PATH, DUPLICATE_TENSOR and whatever
   * SafetensorsFile.open throws for a bad shard.
   */
  static async open(dir: string, options: CheckpointOptions = {}): Promise<Checkpoint> {
    const maxOpen = options.maxOpenFiles ?? 4;
    if (!Number.isSafeInteger(maxOpen) || maxOpen < 1) {
      throw new RangeError(`Checkpoint.open: maxOpenFiles must be a positive integer, got ${String(maxOpen)}`);
    }
    let realDir: string;
    try {
      realDir = await realpath(dir);
    } catch (e) {
      throw stErr("ERR_GLM4_FILE_NOT_FOUND", dir, "the model directory does not exist", "Check the path", e);
    }
    if (!(await stat(realDir)).isDirectory()) {
      throw stErr("ERR_GLM4_FILE_NOT_FOUND", dir, "is not a directory", "Pass the directory that holds config.json and the *.safetensors files");
    }
    const roots = [realDir];
    // Hugging Face cache: <repo>/snapshots/<rev>/<file> are symlinks to <repo>/blobs/<sha256>.
    if (path.basename(path.dirname(realDir)) === "snapshots") {
      try {
        roots.push(await realpath(path.join(realDir, "..", "..", "blobs")));
      } catch {
        /* not a cache after all */
      }
    }
    for (const r of options.allowedRoots ?? []) {
      try {
        roots.push(await realpath(r));
      } catch (e) {
        throw stErr("ERR_GLM4_FILE_NOT_FOUND", r, "the allowed root directory does not exist", "Check CheckpointOptions.allowedRoots", e);
      }
    }

    let layout: Checkpoint["layout"];
    let shards: string[];
    let weightMap: Map<string, string> | undefined;
    let indexMetadata: Record<string, unknown> | undefined;
    const indexPath = path.join(dir, INDEX_FILE);
    if (await exists(path.join(realDir, SINGLE_FILE))) {
      layout = "single";
      shards = [SINGLE_FILE];
    } else if (await exists(path.join(realDir, INDEX_FILE))) {
      layout = "indexed";
      ({ weightMap, indexMetadata } = await readIndex(indexPath));
      shards = [...new Set(weightMap.values())];
    } else {
      let names: string[];
      try {
        names = await readdir(realDir);
      } catch (e) {
        throw fsError(e, dir, "the model directory");
      }
      shards = names.filter((n) => n.endsWith(".safetensors")).sort();
      if (shards.length === 0) {
        throw stErr(
          "ERR_GLM4_FILE_NOT_FOUND",
          dir,
          `has no ${SINGLE_FILE}, no ${INDEX_FILE} and no other *.safetensors file`,
          "Download the model's weights into this directory",
        );
      }
      layout = "multi";
    }

    const shardPaths = new Map<string, string>();
    for (const s of shards) {
      shardPaths.set(s, await resolveShard(dir, realDir, s, roots, layout === "indexed" ? indexPath : undefined));
    }

    // Read every header once (handles are closed again right away), then cross-check.
    const headers = new Map<string, ReadonlyMap<string, TensorInfo>>();
    const owner = new Map<string, string>();
    for (const s of shards) {
      const shownPath = path.join(dir, s);
      const f = await SafetensorsFile.open(shardPaths.get(s)!).catch((e: unknown) => {
        // Report the path the user knows (not the resolved blob path).
        if (e instanceof Glm4Error) throw new Glm4Error(e.code, e.message.split(shardPaths.get(s)!).join(shownPath), { cause: e });
        throw e;
      });
      headers.set(s, f.tensors);
      await f.close();
      for (const name of f.tensors.keys()) {
        const other = owner.get(name);
        if (other !== undefined) {
          throw stErr(
            "ERR_GLM4_DUPLICATE_TENSOR",
            dir,
            `tensor ${JSON.stringify(name)} is stored in both ${other} and ${s}`,
            "The directory mixes files from different exports: remove the stray shard or re-download",
          );
        }
        owner.set(name, s);
      }
    }

    const tensors = new Map<string, CheckpointTensorInfo>();
    const add = (name: string, s: string, t: TensorInfo) =>
      tensors.set(name, Object.freeze({ ...t, name, shard: s, file: path.join(dir, s) }));
    if (weightMap !== undefined) {
      for (const [name, s] of weightMap) {
        if (!headers.get(s)!.has(name)) {
          const actual = owner.get(name);
          throw stErr(
            "ERR_GLM4_BAD_INDEX",
            indexPath,
            `the weight_map puts tensor ${JSON.stringify(name)} in ${s}, but ${s} has no such tensor${actual === undefined ? "" : ` (it is in ${actual})`}`,
            "The index and the shards come from different downloads: re-download them together",
          );
        }
      }
      // Shard by shard in file order; tensors present in a shard but absent from the index are not exposed
      // (transformers ignores them too).
      for (const s of shards) {
        for (const [name, t] of headers.get(s)!) if (weightMap.get(name) === s) add(name, s, t);
      }
    } else {
      for (const s of shards) for (const [name, t] of headers.get(s)!) add(name, s, t);
    }
    return new Checkpoint(dir, { layout, tensors, shards, shardPaths, indexMetadata, maxOpen });
  }

  /** Tensor names, shard by shard in file order. */
  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** The entry for `name`; throws ERR_GLM4_MISSING_TENSOR when absent. */
  info(name: string): CheckpointTensorInfo {
    const t = this.tensors.get(name);
    if (t === undefined) {
      throw stErr(
        "ERR_GLM4_MISSING_TENSOR",
        this.dir,
        `the checkpoint has no tensor ${JSON.stringify(name)} (${this.tensors.size} tensors in ${this.shards.length} file(s))`,
        "Check the tensor name, or re-download an incomplete checkpoint",
      );
    }
    return t;
  }

  /** Read one tensor, opening its shard if needed. */
  async read(name: string): Promise<TensorData> {
    const t = this.info(name);
    const data = Buffer.allocUnsafe(t.byteLength);
    await this.readInto(name, data);
    return { dtype: t.dtype, shape: [...t.shape], data };
  }

  /** Read one tensor into `dest` at `destOffset`. */
  async readInto(name: string, dest: Uint8Array, destOffset = 0): Promise<CheckpointTensorInfo> {
    const t = this.info(name);
    this.assertOpen();
    const slot = this.acquire(t.shard);
    try {
      const f = await slot.file;
      const now = f.tensors.get(name);
      if (now === undefined || now.dtype !== t.dtype || now.byteOffset !== t.byteOffset || now.byteLength !== t.byteLength || fmtShape(now.shape) !== fmtShape(t.shape)) {
        throw bad(t.file, `tensor ${JSON.stringify(name)} changed since the checkpoint was opened`, "Do not modify checkpoint files while they are loaded; open the checkpoint again");
      }
      await f.readInto(name, dest, destOffset);
    } finally {
      this.release(slot);
    }
    return t;
  }

  /** Number of shard files currently open (for tests and diagnostics). */
  get openFiles(): number {
    return this.slots.size;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  async close(): Promise<void> {
    this.isClosed = true;
    const all = [...this.slots.values()];
    this.slots.clear();
    // Shards with a read in flight are closed when that read finishes (see release()).
    await Promise.all(all.filter((s) => s.users === 0).map((s) => s.file.then((f) => f.close()).catch(() => undefined)));
  }

  private assertOpen(): void {
    if (this.isClosed) {
      throw new Glm4Error("ERR_GLM4_DISPOSED", `${this.dir}: the checkpoint was closed. Open it again with Checkpoint.open().`);
    }
  }

  private acquire(shard: string): Slot {
    let slot = this.slots.get(shard);
    if (slot !== undefined) {
      this.slots.delete(shard); // move to the most-recently-used end
    } else {
      const real = this.shardPaths.get(shard)!;
      const shown = path.join(this.dir, shard);
      const file = SafetensorsFile.open(real).catch((e: unknown) => {
        if (this.slots.get(shard) === slot) this.slots.delete(shard); // let the next read retry
        if (e instanceof Glm4Error) throw new Glm4Error(e.code, e.message.split(real).join(shown), { cause: e });
        throw e;
      });
      slot = { file, users: 0 };
    }
    this.slots.set(shard, slot);
    slot.users++;
    this.evict();
    return slot;
  }

  private release(slot: Slot): void {
    slot.users--;
    if (this.isClosed && slot.users === 0) {
      slot.file.then((f) => f.close()).catch(() => undefined);
      return;
    }
    this.evict();
  }

  /** Close least-recently-used idle shards until at most maxOpen remain (busy ones are skipped). */
  private evict(): void {
    if (this.slots.size <= this.maxOpen) return;
    for (const [k, s] of this.slots) {
      if (this.slots.size <= this.maxOpen) break;
      if (s.users > 0) continue;
      this.slots.delete(k);
      s.file.then((f) => f.close()).catch(() => undefined);
    }
  }
}

/** Parse and validate model.safetensors.index.json; returns tensor -> shard file name, in index order. */
async function readIndex(indexPath: string): Promise<{ weightMap: Map<string, string>; indexMetadata: Record<string, unknown> | undefined }> {
  const badIndex = (what: string, todo = "Re-download model.safetensors.index.json with the shards") =>
    stErr("ERR_GLM4_BAD_INDEX", indexPath, what, todo);
  let text: string;
  try {
    const st = await stat(indexPath);
    if (!st.isFile()) throw badIndex("is not a regular file");
    if (st.size > MAX_HEADER_BYTES) throw badIndex(`is ${st.size} bytes, more than the ${MAX_HEADER_BYTES}-byte limit for an index`);
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(await readFile(indexPath));
  } catch (e) {
    if (e instanceof Glm4Error) throw e;
    if (e instanceof TypeError) throw badIndex("is not valid UTF-8");
    throw fsError(e, indexPath, "the index");
  }
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (e) {
    throw badIndex(`is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(root)) throw badIndex(`must hold a JSON object, got ${describe(root)}`);
  const dup = findDuplicateKey(text);
  if (dup !== undefined) {
    if (dup.parents.length === 1 && dup.parents[0] === "weight_map") {
      throw stErr("ERR_GLM4_DUPLICATE_TENSOR", indexPath, `the weight_map lists tensor ${JSON.stringify(dup.key)} more than once`, "Re-download the index");
    }
    throw badIndex(`key ${JSON.stringify(dup.key)} appears twice${dup.parents.length ? ` in ${JSON.stringify(dup.parents.join("."))}` : ""}`);
  }
  const wm = root.weight_map;
  if (!isPlainObject(wm)) throw badIndex(`"weight_map" must be an object of tensor name -> shard file, got ${describe(wm)}`);
  const weightMap = new Map<string, string>();
  for (const [name, s] of Object.entries(wm)) {
    if (typeof s !== "string") throw badIndex(`"weight_map" entry for tensor ${JSON.stringify(name)} must be a file name string, got ${describe(s)}`);
    weightMap.set(name, s);
  }
  if (weightMap.size === 0) throw badIndex(`"weight_map" is empty`);
  const md = root.metadata;
  if (md !== undefined && md !== null && !isPlainObject(md)) throw badIndex(`"metadata" must be an object, got ${describe(md)}`);
  return { weightMap, indexMetadata: isPlainObject(md) ? md : undefined };
}

/** Check that `name` is a plain file name that resolves (through symlinks) inside one of `roots`. */
async function resolveShard(dir: string, realDir: string, name: string, roots: string[], indexPath: string | undefined): Promise<string> {
  const source = indexPath ?? dir;
  const unsafe = (what: string) =>
    stErr(
      "ERR_GLM4_UNSAFE_PATH",
      source,
      `shard ${JSON.stringify(name)} ${what}`,
      "Shards must be plain file names inside the model directory: fix the index or copy the file into the directory",
    );
  if (name.length === 0) throw unsafe("is an empty file name");
  if (name.includes("\0")) throw unsafe("contains a NUL character");
  if (path.isAbsolute(name) || path.win32.isAbsolute(name)) throw unsafe("is an absolute path");
  if (name.includes("/") || name.includes("\\")) throw unsafe("is not a plain file name (it contains a path separator)");
  if (name === "." || name === "..") throw unsafe("is not a file name");
  let real: string;
  try {
    real = await realpath(path.join(realDir, name));
  } catch (e) {
    const code = (e as { code?: unknown })?.code;
    if (code === "ENOENT" || code === "ENOTDIR") {
      throw stErr(
        "ERR_GLM4_MISSING_SHARD",
        path.join(dir, name),
        `shard ${JSON.stringify(name)}${indexPath ? ` (listed in ${INDEX_FILE})` : ""} does not exist (or is a broken symlink)`,
        "The download is incomplete: download the missing shard into the model directory",
      );
    }
    throw fsError(e, path.join(dir, name), "the shard");
  }
  if (!roots.some((r) => isInside(real, r))) throw unsafe(`resolves to ${real}, outside the model directory ${realDir}`);
  return real;
}
