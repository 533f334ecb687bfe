/**
 * The KV cache and its addressing: where a sequence's keys and values live. One pool per layer of rows
 * [rows, Hkv, D] (bf16 on the GPU, f32 on the CPU reference). Today a pool is `slots` contiguous runs of
 * `capacity` rows: slot b owns rows b * S .. b * S + S - 1, and token position p of slot b is row b * S + p.
 * Issue 14 replaces this piece with a paged block pool (a block table per sequence; contiguous slots are its
 * special case table[b][i] = b * (S / bs) + i) and the attention op then takes the block table: the engine
 * asks only this class which rows a step writes and reads.
 *
 * One slot (the model's own engine, a session): row = position and attention reads from row 0, so a step
 * passes its positions as the rows and no start rows (`addressed` is false): nothing more to write a token.
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

/** Where T query rows of a recorded step write and read the cache (device tensors the host fills before a run). */
export interface KvAddress {
  /** i32 [T]: the cache row each token's k and v go to (kv_write) and attention's last row. */
  rows: NativeTensor;
  /** i32 [T]: the first cache row each query attends. */
  start: NativeTensor;
}

export class KvCache {
  /** Per layer: the pools of keys and values, [slots * capacity, Hkv, D]. */
  readonly k: NativeTensor[] = [];
  readonly v: NativeTensor[] = [];

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
    if (slots * capacity >= 2 ** 31) throw new RangeError(`maxBatch * maxContext = ${slots * capacity} cache rows do not fit int32 row indices`);
    try {
      for (let i = 0; i < cfg.numLayers; i++) {
        this.k.push(ctx.empty(dtype, [slots * capacity, cfg.numKvHeads, cfg.headDim]));
        this.v.push(ctx.empty(dtype, [slots * capacity, cfg.numKvHeads, cfg.headDim]));
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

  /** The cache row of position `pos` of `slot`. */
  row(slot: number, pos: number): number {
    return slot * this.capacity + pos;
  }

  /** The first row `slot`'s queries attend. */
  firstRow(slot: number): number {
    return slot * this.capacity;
  }

  /** Device tensors to address T query rows, or null when the positions serve as rows (one slot). */
  newAddress(ctx: NativeContext, t: number): KvAddress | null {
    if (!this.addressed) return null;
    const rows = ctx.empty("i32", [t]);
    try {
      return { rows, start: ctx.empty("i32", [t]) };
    } catch (e) {
      rows.dispose();
      throw e;
    }
  }

  /** Fills `a` for tokens (slot[i], pos[i]), i < T: rows slot * S + pos, start slot * S. */
  writeAddress(a: KvAddress, at: readonly { slot: number; pos: number }[]): void {
    a.rows.write(Int32Array.from(at, (e) => this.row(e.slot, e.pos)));
    a.start.write(Int32Array.from(at, (e) => this.firstRow(e.slot)));
  }

  dispose(): void {
    for (const t of [...this.k, ...this.v]) t.dispose();
    this.k.length = 0;
    this.v.length = 0;
  }
}
