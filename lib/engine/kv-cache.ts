/**
 * The paged KV cache: one pool per layer of fixed-size blocks of rows [blocks * KV_BLOCK, Hkv, D] (bf16 on the GPU,
 * f32 on the CPU reference), a block table per sequence, and the allocator (lib/engine/block-pool.ts). Attention
 * reads through the table (csrc/op_list.h): position p of table row b is row table[b][p / KV_BLOCK] * KV_BLOCK +
 * p % KV_BLOCK. A sequence holds blocks for the tokens it has (memory grows with the tokens in use, not with
 * maxContext), and full blocks of a prompt head are shared by reference: each full block is registered under the
 * hash chain of its token ids, and a sequence whose prompt starts the same way takes those blocks instead of
 * computing them again (`attachPrefix`). Shared blocks are never written: a sequence writes at positions past its
 * length only, and a write into a registered or shared block (after a truncate) first copies it (copy on write).
 *
 * Block 0 is the pad block: never handed out; padded rows of a batched step (a dummy sequence) write and read it.
 * The table has one row per slot and one more, all pad, for the dummy sequence.
 *
 * Sizing: `blocks` (default: every slot can reach maxContext, so the pool never runs out), or from bytes
 * (`kvBlocksFor`: an explicit kvCacheBytes, or gpuMemoryUtilization of the device's memory, as vLLM does).
 */
import type { Glm4Config } from "../checkpoint/config.js";
import type { DType, NativeContext, NativeTensor } from "./native.js";
import { BlockPool, blockHash, kvFullError } from "./block-pool.js";

export { kvFullError };

/** Most slots an engine may have (the scheduler's maxConcurrent range). */
export const MAX_SLOTS = 1024;

/**
 * `maxContext` (the tokens a sequence's cache holds) checked once for every caller (load, sessions, the server's
 * slots, the bench): an integer in [1, the model's context], else a RangeError naming it.
 */
export function checkMaxContext(maxContext: unknown, maxPositions: number): number {
  if (typeof maxContext !== "number" || !Number.isInteger(maxContext) || maxContext < 1 || maxContext > maxPositions) {
    throw new RangeError(`maxContext must be an integer in [1, ${maxPositions}], got ${String(maxContext)}`);
  }
  return maxContext;
}

/** Rows of a KV-cache block (attention's block size: a power of two in 16..256; also the prefix-sharing unit). */
export const KV_BLOCK = 64;

/** Bytes of one block over all layers (keys and values). */
export function blockBytes(cfg: Glm4Config, dtype: DType): number {
  return 2 * cfg.numLayers * KV_BLOCK * cfg.numKvHeads * cfg.headDim * (dtype === "f32" ? 4 : 2);
}

/** How the pool is sized (the first given wins; none: every slot can hold maxContext tokens). */
export interface KvPoolOptions {
  /** Blocks of KV_BLOCK tokens in the pool (the pad block included). */
  kvBlocks?: number;
  /** Bytes of keys and values over all layers. */
  kvCacheBytes?: number;
  /**
   * Share of the device's total memory this process may use in all (weights, scratch, cache; like vLLM's
   * gpu_memory_utilization): the pool takes what is left of it after what is in use now and `reserveBytes`.
   */
  gpuMemoryUtilization?: number;
}

/**
 * Blocks for a pool: kvBlocks as given; kvCacheBytes / blockBytes; or, with gpuMemoryUtilization u,
 * (u * total - (total - free) - reserveBytes) / blockBytes, where free and total are the device's memory now.
 * At least 2 (the pad block and one block); errors name the option and the figures.
 */
export function kvBlocksFor(
  o: KvPoolOptions,
  cfg: Glm4Config,
  dtype: DType,
  dflt: number,
  device?: { totalMemory: number; freeMemory: number; reserveBytes: number },
): number {
  const bb = blockBytes(cfg, dtype);
  let n: number;
  if (o.kvBlocks !== undefined) {
    if (!Number.isInteger(o.kvBlocks) || o.kvBlocks < 2) throw new RangeError(`kvBlocks must be an integer >= 2, got ${String(o.kvBlocks)}`);
    n = o.kvBlocks;
  } else if (o.kvCacheBytes !== undefined) {
    if (typeof o.kvCacheBytes !== "number" || !Number.isFinite(o.kvCacheBytes) || o.kvCacheBytes < 2 * bb) {
      throw new RangeError(`kvCacheBytes must be at least two blocks (${2 * bb} bytes: ${KV_BLOCK} tokens of every layer's keys and values a block), got ${String(o.kvCacheBytes)}`);
    }
    n = Math.floor(o.kvCacheBytes / bb);
  } else if (o.gpuMemoryUtilization !== undefined) {
    const u = o.gpuMemoryUtilization;
    if (typeof u !== "number" || !(u > 0 && u <= 1)) throw new RangeError(`gpuMemoryUtilization must be a number in (0, 1], got ${String(u)}`);
    if (!device) return dflt; // no device memory to size from (the CPU backend): the default
    const budget = u * device.totalMemory - (device.totalMemory - device.freeMemory) - device.reserveBytes;
    n = Math.floor(budget / bb);
    if (n < 2) {
      const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
      throw new RangeError(
        `gpuMemoryUtilization ${u} leaves no room for the KV cache: ${gib(u * device.totalMemory)} allowed, ${gib(device.totalMemory - device.freeMemory)} in use on the device, ${gib(device.reserveBytes)} kept for scratch; raise it or give kvCacheBytes`,
      );
    }
  } else n = dflt;
  return n;
}

/** Where T query rows of a recorded step write and read the cache (device tensors the host fills before a run). */
export interface KvAddress {
  /** i32 [T]: the cache row each token's k and v go to (kv_write). */
  rows: NativeTensor;
  /** The block table attention reads through: the whole table (a step of several slots) or one slot's row. */
  table: NativeTensor;
  /** i32 [T]: each token's table row; null for a chunk of one slot (`table` is that slot's row). */
  seq: NativeTensor | null;
  dispose(): void;
}

interface SeqBlocks {
  /** The sequence's blocks, position p in blocks[p / KV_BLOCK]. */
  blocks: number[];
  /** Hash chain of its first full blocks (hashes[i] covers tokens [0, (i + 1) * KV_BLOCK)). */
  hashes: string[];
}

export class KvCache {
  /** Per layer: the pools of keys and values, [blocks * KV_BLOCK, Hkv, D]. */
  readonly k: NativeTensor[] = [];
  readonly v: NativeTensor[] = [];
  readonly pool: BlockPool;
  /** Table columns: blocks a sequence of maxContext tokens needs. */
  readonly width: number;
  /** The dummy sequence's table row (all pad block): padded rows of a batched step use it. */
  readonly padSlot: number;
  /** i32 [slots + 1, width]: the block tables (row `slots`: the pad row). */
  private readonly table: NativeTensor;
  private readonly hostTable: Int32Array;
  private readonly dirty = new Set<number>();
  private readonly seqs: SeqBlocks[];
  private static readonly PAD = 0;

  constructor(
    private readonly ctx: NativeContext,
    cfg: Glm4Config,
    /** Sequences the cache holds at once. */
    readonly slots: number,
    /** Tokens each sequence can hold at most (the engine's maxContext). */
    readonly capacity: number,
    dtype: DType,
    /** Blocks in the pool, the pad block included (default: every slot can reach `capacity`). */
    blocks?: number,
  ) {
    if (!Number.isInteger(slots) || slots < 1 || slots > MAX_SLOTS) throw new RangeError(`maxBatch must be an integer in [1, ${MAX_SLOTS}], got ${String(slots)}`);
    checkMaxContext(capacity, cfg.maxPositions);
    this.width = Math.ceil(capacity / KV_BLOCK);
    const n = blocks ?? slots * this.width + 1;
    if (!Number.isInteger(n) || n < 2) throw new RangeError(`the KV cache needs an integer >= 2 of blocks (the pad block and one more), got ${String(n)}`);
    if (n * KV_BLOCK >= 2 ** 31) throw new RangeError(`${n} blocks of ${KV_BLOCK} rows do not fit int32 row indices`);
    this.pool = new BlockPool(n, KV_BLOCK);
    if (this.pool.allocate() !== KvCache.PAD) throw new Error("KvCache: the pad block must be block 0");
    this.padSlot = slots;
    this.seqs = Array.from({ length: slots }, () => ({ blocks: [], hashes: [] }));
    this.hostTable = new Int32Array((slots + 1) * this.width); // all pad
    const made: NativeTensor[] = [];
    try {
      for (let i = 0; i < cfg.numLayers; i++) {
        this.k.push(ctx.empty(dtype, [n * KV_BLOCK, cfg.numKvHeads, cfg.headDim]));
        this.v.push(ctx.empty(dtype, [n * KV_BLOCK, cfg.numKvHeads, cfg.headDim]));
      }
      this.table = ctx.fromBuffer("i32", [slots + 1, this.width], this.hostTable);
      made.push(this.table);
    } catch (e) {
      for (const t of [...this.k, ...this.v, ...made]) t.dispose();
      throw e;
    }
  }

  /** Bytes of keys and values over all layers. */
  get nbytes(): number {
    return this.k.reduce((a, t) => a + t.nbytes, 0) + this.v.reduce((a, t) => a + t.nbytes, 0);
  }

  /** attention's block size. */
  get blockSize(): number {
    return KV_BLOCK;
  }

  /** Blocks in the pool (the pad block included), held by sequences (the pad block included), cached, allocatable. */
  stats(): { blocks: number; inUse: number; cached: number; available: number; blockSize: number } {
    return { blocks: this.pool.numBlocks, inUse: this.pool.inUse, cached: this.pool.cachedCount, available: this.pool.available, blockSize: KV_BLOCK };
  }

  /** The blocks of a slot's table (tests). */
  blocksOf(slot: number): readonly number[] {
    return this.seqs[slot].blocks;
  }

  /** The cache row of position `pos` of `slot` (the pad slot: the pad block's first row). */
  row(slot: number, pos: number): number {
    if (slot === this.padSlot) return KvCache.PAD * KV_BLOCK;
    return this.seqs[slot].blocks[Math.floor(pos / KV_BLOCK)] * KV_BLOCK + (pos % KV_BLOCK);
  }

  /** Whether writing position `len` (the slot's length) must first copy its block (registered or shared). */
  private mustCopy(s: SeqBlocks, len: number): boolean {
    if (len % KV_BLOCK === 0) return false;
    const b = s.blocks[Math.floor(len / KV_BLOCK)];
    return b !== undefined && (this.pool.refCount(b) > 1 || this.pool.isRegistered(b));
  }

  /** New blocks slot needs to grow from `len` to `to` tokens (a copy on write included). */
  need(slot: number, len: number, to: number): number {
    const s = this.seqs[slot];
    const cow = this.mustCopy(s, len) && this.pool.refCount(s.blocks[Math.floor(len / KV_BLOCK)]) > 1 ? 1 : 0;
    return Math.max(0, Math.ceil(to / KV_BLOCK) - s.blocks.length) + cow;
  }

  /**
   * Makes positions [len, to) of each entry writable: blocks allocated, a registered or shared partial block copied
   * or unregistered first. All or nothing: when the pool lacks blocks, throws ERR_GLM4_KV_CACHE_FULL and changes
   * nothing.
   */
  reserve(entries: readonly { slot: number; len: number; to: number }[]): void {
    const need = entries.reduce((a, e) => a + this.need(e.slot, e.len, e.to), 0);
    if (need > this.pool.available) throw kvFullError(need, this.pool.available, this.pool.numBlocks);
    for (const { slot, len, to } of entries) {
      const s = this.seqs[slot];
      if (this.mustCopy(s, len)) {
        const i = Math.floor(len / KV_BLOCK), old = s.blocks[i];
        if (this.pool.refCount(old) === 1) this.pool.unregister(old); // ours alone: forget its hash, write in place
        else {
          const nb = this.pool.allocate();
          this.copyBlock(nb, old);
          this.pool.release(old);
          s.blocks[i] = nb;
          this.setEntry(slot, i, nb);
        }
      }
      while (s.blocks.length * KV_BLOCK < to) {
        const b = this.pool.allocate();
        s.blocks.push(b);
        this.setEntry(slot, s.blocks.length - 1, b);
      }
    }
  }

  /** Registers the slot's full blocks among its first `length` tokens (ids: its tokens) for prefix sharing. */
  filled(slot: number, ids: readonly number[], length: number): void {
    const s = this.seqs[slot];
    for (let i = s.hashes.length; (i + 1) * KV_BLOCK <= length; i++) {
      const h = blockHash(s.hashes[i - 1] ?? "", ids.slice(i * KV_BLOCK, (i + 1) * KV_BLOCK));
      s.hashes.push(h);
      this.pool.register(s.blocks[i], h); // false when another block holds this head already: this one stays private
    }
  }

  /**
   * Extends a slot that holds whole blocks of `prompt`'s head (`len` tokens, a multiple of KV_BLOCK) with cached
   * blocks that continue it, up to prompt.length - 1 tokens (the last token is always fed again). Returns the new
   * length.
   */
  attachPrefix(slot: number, prompt: readonly number[], len: number): number {
    const s = this.seqs[slot];
    if (len % KV_BLOCK !== 0 || s.blocks.length * KV_BLOCK !== len || s.hashes.length !== s.blocks.length) return len;
    for (let i = s.blocks.length; (i + 1) * KV_BLOCK <= prompt.length - 1; i++) {
      const h = blockHash(s.hashes[i - 1] ?? "", prompt.slice(i * KV_BLOCK, (i + 1) * KV_BLOCK));
      const b = this.pool.lookup(h);
      if (b === undefined) break;
      s.blocks.push(b);
      s.hashes.push(h);
      this.setEntry(slot, i, b);
    }
    return s.blocks.length * KV_BLOCK;
  }

  /** Keeps a slot's first n tokens: blocks past them go back to the pool. */
  truncate(slot: number, n: number): void {
    const s = this.seqs[slot];
    const keep = Math.ceil(n / KV_BLOCK);
    while (s.blocks.length > keep) {
      this.pool.release(s.blocks.pop()!);
      this.setEntry(slot, s.blocks.length, KvCache.PAD);
    }
    s.hashes.length = Math.min(s.hashes.length, Math.floor(n / KV_BLOCK));
  }

  /** Frees all of a slot's blocks (full registered ones stay cached for a later prefix match). */
  free(slot: number): void {
    this.truncate(slot, 0);
  }

  private setEntry(slot: number, i: number, b: number): void {
    this.hostTable[slot * this.width + i] = b;
    this.dirty.add(slot);
  }

  private copyBlock(dst: number, src: number): void {
    const d0 = dst * KV_BLOCK, s0 = src * KV_BLOCK;
    for (const pool of [this.k, this.v]) {
      for (const t of pool) {
        const d = t.slice0(d0, d0 + KV_BLOCK), s = t.slice0(s0, s0 + KV_BLOCK);
        this.ctx.copy(d, s);
        d.dispose();
        s.dispose();
      }
    }
  }

  /** Records the writes of the table rows changed since the last sync (before a step or chunk that reads them). */
  sync(): void {
    for (const slot of this.dirty) {
      const row = this.table.slice0(slot, slot + 1);
      try {
        row.write(this.hostTable.subarray(slot * this.width, (slot + 1) * this.width));
      } finally {
        row.dispose();
      }
    }
    this.dirty.clear();
  }

  /**
   * Device tensors to address T query rows. With `slot`, the T tokens are a chunk of that slot alone: attention
   * reads through its table row as one sequence; without, a step of several slots (each token's table row in seq).
   */
  newAddress(ctx: NativeContext, t: number, slot?: number): KvAddress {
    const owned: NativeTensor[] = [];
    try {
      const rows = ctx.empty("i32", [t]);
      owned.push(rows);
      const table = slot === undefined ? this.table : this.table.slice0(slot, slot + 1);
      if (slot !== undefined) owned.push(table);
      const seq = slot === undefined ? ctx.empty("i32", [t]) : null;
      if (seq) owned.push(seq);
      return { rows, table, seq, dispose: () => owned.forEach((x) => x.dispose()) };
    } catch (e) {
      owned.forEach((x) => x.dispose());
      throw e;
    }
  }

  /** Fills `a` for tokens (slot[i], pos[i]), i < T (slot = padSlot: a padded row): cache rows and table rows. */
  writeAddress(a: KvAddress, at: readonly { slot: number; pos: number }[]): void {
    a.rows.write(Int32Array.from(at, (e) => this.row(e.slot, e.pos)));
    a.seq?.write(Int32Array.from(at, (e) => e.slot));
  }

  dispose(): void {
    for (const t of [...this.k, ...this.v]) t.dispose();
    this.table.dispose();
    this.k.length = 0;
    this.v.length = 0;
  }
}
