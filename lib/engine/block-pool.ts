/**
 * The KV cache's block allocator (host bookkeeping only; the rows live in lib/engine/kv-cache.ts's pools).
 *
 * Blocks 0..numBlocks-1 of `blockSize` token rows each. A block is in one of three states:
 *   in use     ref > 0: one or more sequences' block tables point at it;
 *   cached     ref = 0 but registered under the hash of its tokens (a full block of some prompt head): its rows are
 *              still valid, so a later sequence with the same head takes it back (`lookup`) instead of recomputing;
 *              evicted least recently freed first when the free list is empty;
 *   free       ref = 0, unregistered.
 * A registered block's rows never change while registered: sequences only write at positions past their length,
 * and a registered block is always full (lib/engine/kv-cache.ts copies or unregisters before writing into one).
 *
 * Hashes form a chain: the hash of block i covers block i's token ids and the hash of block i - 1, so equal hashes
 * mean equal prefixes (sha1; a collision would need 2^80 work).
 */
import { createHash } from "node:crypto";
import { Glm4Error } from "../errors.js";

/** The hash of a full block of `tokens` that follows a prefix whose last block hashed to `parent` ("" for none). */
export function blockHash(parent: string, tokens: ArrayLike<number>): string {
  const h = createHash("sha1").update(parent);
  h.update(new Uint8Array(Int32Array.from(tokens as ArrayLike<number>).buffer));
  return h.digest("hex");
}

/** The pool has no block left for a sequence (ERR_GLM4_KV_CACHE_FULL): the caller preempts, waits, or refuses. */
export function kvFullError(need: number, have: number, total: number): Glm4Error {
  return new Glm4Error(
    "ERR_GLM4_KV_CACHE_FULL",
    `the KV cache has ${have} free blocks of ${total} and ${need} are needed; finish or release sequences first, or give the cache more memory (kvBlocks, kvCacheBytes, gpuMemoryUtilization)`,
  );
}

export class BlockPool {
  private readonly ref: Int32Array;
  private readonly hashOf: (string | null)[];
  private readonly byHash = new Map<string, number>();
  /** Free, unregistered blocks (a stack). */
  private readonly free: number[] = [];
  /** Cached blocks (ref 0, registered), least recently freed first (a Map keeps insertion order). */
  private readonly cached = new Map<number, true>();

  constructor(
    readonly numBlocks: number,
    readonly blockSize: number,
  ) {
    if (!Number.isInteger(numBlocks) || numBlocks < 1) throw new RangeError(`the KV cache needs at least one block, got ${String(numBlocks)}`);
    this.ref = new Int32Array(numBlocks);
    this.hashOf = Array.from({ length: numBlocks }, () => null);
    for (let b = numBlocks - 1; b >= 0; b--) this.free.push(b);
  }

  /** Blocks that `allocate` can still hand out (free + cached). */
  get available(): number {
    return this.free.length + this.cached.size;
  }

  /** Blocks that some sequence holds (ref > 0). */
  get inUse(): number {
    return this.numBlocks - this.available;
  }

  /** Blocks registered under a hash and not held (their contents kept for a later prefix match). */
  get cachedCount(): number {
    return this.cached.size;
  }

  refCount(b: number): number {
    return this.ref[b];
  }

  isRegistered(b: number): boolean {
    return this.hashOf[b] !== null;
  }

  /** A block for one holder (ref 1): a free one, else the least recently freed cached one (unregistered). */
  allocate(): number {
    let b = this.free.pop();
    if (b === undefined) {
      const first = this.cached.keys().next();
      if (first.done) throw kvFullError(1, 0, this.numBlocks);
      b = first.value;
      this.cached.delete(b);
      this.byHash.delete(this.hashOf[b]!);
      this.hashOf[b] = null;
    }
    this.ref[b] = 1;
    return b;
  }

  /** One more holder of an in-use block. */
  retain(b: number): void {
    if (this.ref[b] < 1) throw new Error(`BlockPool.retain: block ${b} is not in use`);
    this.ref[b]++;
  }

  /** One holder fewer; at 0 the block is cached (registered) or free. */
  release(b: number): void {
    if (this.ref[b] < 1) throw new Error(`BlockPool.release: block ${b} is not in use`);
    if (--this.ref[b] > 0) return;
    if (this.hashOf[b] !== null) this.cached.set(b, true);
    else this.free.push(b);
  }

  /** The block registered under `hash`, now held once more (a cached one comes back in use); undefined if none. */
  lookup(hash: string): number | undefined {
    const b = this.byHash.get(hash);
    if (b === undefined) return undefined;
    if (this.ref[b] === 0) this.cached.delete(b);
    this.ref[b]++;
    return b;
  }

  /** Registers an in-use full block under `hash`; false (nothing done) when another block has that hash already. */
  register(b: number, hash: string): boolean {
    if (this.ref[b] < 1) throw new Error(`BlockPool.register: block ${b} is not in use`);
    if (this.hashOf[b] !== null || this.byHash.has(hash)) return false;
    this.hashOf[b] = hash;
    this.byHash.set(hash, b);
    return true;
  }

  /** Forgets an in-use block's hash (before its rows change). */
  unregister(b: number): void {
    const h = this.hashOf[b];
    if (h === null) return;
    this.byHash.delete(h);
    this.hashOf[b] = null;
  }

  /** Checks the invariants (tests): every block in exactly one state, the hash maps consistent. */
  check(): void {
    const inFree = new Set(this.free);
    if (inFree.size !== this.free.length) throw new Error("a block is twice in the free list");
    for (let b = 0; b < this.numBlocks; b++) {
      const states = Number(this.ref[b] > 0) + Number(inFree.has(b)) + Number(this.cached.has(b));
      if (states !== 1) throw new Error(`block ${b}: ref ${this.ref[b]}, free ${inFree.has(b)}, cached ${this.cached.has(b)}`);
      if (this.cached.has(b) && this.hashOf[b] === null) throw new Error(`block ${b} is cached without a hash`);
      if (inFree.has(b) && this.hashOf[b] !== null) throw new Error(`block ${b} is free with a hash`);
      const h = this.hashOf[b];
      if (h !== null && this.byHash.get(h) !== b) throw new Error(`block ${b}: hash map out of step`);
    }
    for (const [h, b] of this.byHash) if (this.hashOf[b] !== h) throw new Error(`hash ${h}: block ${b} out of step`);
  }
}
