/**
 * The KV cache and its addressing: where a sequence's keys and values live. One pool per layer of rows
 * [rows, Hkv, D] (bf16 on the GPU, f32 on the CPU reference). Several slots: attention reads through a block
 * table (csrc/op_list.h: position p of slot b is row table[b][p / KV_BLOCK] * KV_BLOCK + p % KV_BLOCK). Today the
 * table is fixed, `slots` contiguous runs of S' rows (the capacity rounded up to whole blocks): slot b owns rows
 * b * S' .. b * S' + S' - 1, table[b][i] = b * S' / KV_BLOCK + i. Issue 14's block pool (blocks handed out as
 * sequences grow, shared prefixes) changes only this class: the engine asks it which rows a step writes and reads.
 *
 * One slot (the model's own engine, a session): row = position and no table (attention's contiguous form), so a
 * step passes its positions as the rows (`addressed` is false): nothing more to write a token.
 */
import type { Glm4Config } from "../checkpoint/config.js";
import type { DType, NativeContext, NativeTensor } from "./native.js";

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

/** Rows of a KV-cache block when the pool holds several sequences (attention's block size: 16..256). */
export const KV_BLOCK = 64;

/** Where T query rows of a recorded step write and read the cache (device tensors the host fills before a run). */
export interface KvAddress {
  /** i32 [T]: the cache row each token's k and v go to (kv_write). */
  rows: NativeTensor;
  /** The block table attention reads through: the whole table (a step of several slots) or one slot's row. */
  table: NativeTensor;
  /** i32 [T]: each token's slot (its row of `table`); null for a chunk of one slot (`table` is that slot's row). */
  seq: NativeTensor | null;
  dispose(): void;
}

export class KvCache {
  /** Per layer: the pools of keys and values, [slots * stride, Hkv, D]. */
  readonly k: NativeTensor[] = [];
  readonly v: NativeTensor[] = [];
  /** Rows a slot owns: the capacity, rounded up to whole blocks when there are several slots. */
  readonly stride: number;
  /** i32 [slots, stride / KV_BLOCK]: the block table (several slots only). */
  private readonly table: NativeTensor | null = null;

  constructor(
    ctx: NativeContext,
    cfg: Glm4Config,
    /** Sequences the cache holds at once. */
    readonly slots: number,
    /** Tokens each sequence can hold (the engine's maxContext). */
    readonly capacity: number,
    dtype: DType,
  ) {
    if (!Number.isInteger(slots) || slots < 1 || slots > MAX_SLOTS) throw new RangeError(`maxBatch must be an integer in [1, ${MAX_SLOTS}], got ${String(slots)}`);
    checkMaxContext(capacity, cfg.maxPositions);
    this.stride = slots > 1 ? Math.ceil(capacity / KV_BLOCK) * KV_BLOCK : capacity;
    if (slots * this.stride >= 2 ** 31) throw new RangeError(`maxBatch * maxContext = ${slots * this.stride} cache rows (whole blocks of ${KV_BLOCK}) do not fit int32 row indices`);
    try {
      for (let i = 0; i < cfg.numLayers; i++) {
        this.k.push(ctx.empty(dtype, [slots * this.stride, cfg.numKvHeads, cfg.headDim]));
        this.v.push(ctx.empty(dtype, [slots * this.stride, cfg.numKvHeads, cfg.headDim]));
      }
      if (slots > 1) {
        const nb = this.stride / KV_BLOCK;
        this.table = ctx.fromBuffer("i32", [slots, nb], Int32Array.from({ length: slots * nb }, (_, i) => i));
      }
    } catch (e) {
      this.dispose();
      throw e;
    }
  }

  /** Whether rows differ from positions (several sequences share the pool): then steps carry a KvAddress. */
  get addressed(): boolean {
    return this.slots > 1;
  }

  /** Bytes of keys and values over all layers. */
  get nbytes(): number {
    return this.k.reduce((a, t) => a + t.nbytes, 0) + this.v.reduce((a, t) => a + t.nbytes, 0);
  }

  /** attention's block size (0: no table, the contiguous form). */
  get blockSize(): number {
    return this.table ? KV_BLOCK : 0;
  }

  /** The cache row of position `pos` of `slot`. */
  row(slot: number, pos: number): number {
    return slot * this.stride + pos;
  }

  /**
   * Device tensors to address T query rows, or null when the positions serve as rows (one slot). With `slot`, the
   * T tokens are a chunk of that slot alone: attention reads through its table row as one sequence (the same
   * kernels, and so the same arithmetic, as the one-slot engine's prefill); without, a step of several slots.
   */
  newAddress(ctx: NativeContext, t: number, slot?: number): KvAddress | null {
    if (!this.table) return null;
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

  /** Fills `a` for tokens (slot[i], pos[i]), i < T: rows slot * S' + pos, and each token's slot. */
  writeAddress(a: KvAddress, at: readonly { slot: number; pos: number }[]): void {
    a.rows.write(Int32Array.from(at, (e) => this.row(e.slot, e.pos)));
    a.seq?.write(Int32Array.from(at, (e) => e.slot));
  }

  dispose(): void {
    for (const t of [...this.k, ...this.v]) t.dispose();
    this.table?.dispose();
    this.k.length = 0;
    this.v.length = 0;
  }
}
