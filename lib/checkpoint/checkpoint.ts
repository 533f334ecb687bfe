/**
 * `Checkpoint` puts a model directory together: one `model.safetensors`, shards listed by
 * `model.safetensors.index.json`, or several `*.safetensors` with no index (each file read by
 * lib/checkpoint/safetensors.ts, which treats it as hostile). Shards are opened lazily and at most
 * `maxOpenFiles` file handles stay open; shards must resolve inside the directory (or an allowed root).
 */
import { readdir, realpath, stat } from "node:fs/promises";
import { constants as bufferConstants } from "node:buffer";
import { totalmem } from "node:os";
import * as path from "node:path";
import { Glm4Error } from "../errors.js";
import { FileProblem, readRegularFile } from "../files.js";
import { isInside, isPlainObject, show } from "../util.js";
import { SafetensorsFile, bad, findDuplicateKey, fmtShape, fsError, stErr, type TensorData, type TensorInfo } from "./safetensors.js";

export const SINGLE_FILE = "model.safetensors";
export const INDEX_FILE = "model.safetensors.index.json";
/** Largest index accepted: GLM-4-9B's is ~30 KB (a line a tensor); 16 MiB is room for ~200k tensors. */
export const MAX_INDEX_BYTES = 16 * 2 ** 20;

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
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(await readRegularFile(indexPath, MAX_INDEX_BYTES));
  } catch (e) {
    if (e instanceof TypeError) throw badIndex("is not valid UTF-8");
    if (!(e instanceof FileProblem)) throw e;
    if (e.reason === "missing" || e.reason === "io") throw fsError(e.cause ?? e, indexPath, "the index");
    throw badIndex(e.message);
  }
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (e) {
    throw badIndex(`is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(root)) throw badIndex(`must hold a JSON object, got ${show(root)}`);
  const dup = findDuplicateKey(text);
  if (dup !== undefined) {
    if (dup.parents.length === 1 && dup.parents[0] === "weight_map") {
      throw stErr("ERR_GLM4_DUPLICATE_TENSOR", indexPath, `the weight_map lists tensor ${JSON.stringify(dup.key)} more than once`, "Re-download the index");
    }
    throw badIndex(`key ${JSON.stringify(dup.key)} appears twice${dup.parents.length ? ` in ${JSON.stringify(dup.parents.join("."))}` : ""}`);
  }
  const wm = root.weight_map;
  if (!isPlainObject(wm)) throw badIndex(`"weight_map" must be an object of tensor name -> shard file, got ${show(wm)}`);
  const weightMap = new Map<string, string>();
  for (const [name, s] of Object.entries(wm)) {
    if (typeof s !== "string") throw badIndex(`"weight_map" entry for tensor ${JSON.stringify(name)} must be a file name string, got ${show(s)}`);
    weightMap.set(name, s);
  }
  if (weightMap.size === 0) throw badIndex(`"weight_map" is empty`);
  const md = root.metadata;
  if (md !== undefined && md !== null && !isPlainObject(md)) throw badIndex(`"metadata" must be an object, got ${show(md)}`);
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

/**
 * Loading reads one tensor at a time into host memory: a tensor larger than the machine's memory, or than
 * the largest Buffer Node can allocate, cannot be loaded. A header may claim terabytes (a sparse file makes
 * the claim cheap), so this is checked from the headers before anything that size is allocated.
 */
export function checkHostFits(ckpt: Checkpoint): void {
  const limit = Math.min(totalmem(), bufferConstants.MAX_LENGTH);
  let big: { name: string; byteLength: number; file: string } | undefined;
  for (const t of ckpt.tensors.values()) if (!big || t.byteLength > big.byteLength) big = t;
  if (big && big.byteLength > limit) {
    const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
    throw new Glm4Error(
      "ERR_GLM4_OUT_OF_MEMORY",
      `${big.file}: tensor ${JSON.stringify(big.name)} is ${gib(big.byteLength)}; loading reads a tensor whole into host memory, and this machine allows ${gib(limit)} at once (memory ${gib(totalmem())}, largest Node Buffer ${gib(bufferConstants.MAX_LENGTH)}). The header claims an impossible size, or the checkpoint is not a GLM-4-9B.`,
    );
  }
}
