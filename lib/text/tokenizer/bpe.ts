/**
 * Byte-pair merging, shared by both on-disk formats.
 *
 * A piece (one regex match, as UTF-8 bytes) starts as one symbol per byte; then, repeatedly, the adjacent
 * pair with the lowest merge rank is replaced by its merged token, the leftmost one when several pairs share
 * the lowest rank, until no adjacent pair merges. This is tiktoken's `_byte_pair_merge` when a pair's rank is
 * the rank of the concatenated bytes, and HF tokenizers' `Word::merge_all` when it is the index of the pair
 * in the merges list (both break ties leftmost). What differs between the formats is only `PairRanker`.
 *
 * Byte strings are kept as "latin1" JS strings (one char per byte, code 0..255): they are cheap Map keys and
 * concatenate with `+`.
 */

/** Says how two adjacent symbols merge. */
export interface PairRanker {
  /** Merge rank of the pair (a, b), lower merges first; -1 when the pair does not merge. */
  rank(a: number, b: number): number;
  /** Id of the token that the pair (a, b) of rank `rank` merges into. */
  merged(a: number, b: number, rank: number): number;
}

/** Pieces longer than this (in bytes) use the heap; shorter ones the quadratic scan, which is faster there. */
export const HEAP_THRESHOLD = 96;

/**
 * Merges `symbols` (token ids, one per byte on entry; the array may be reused) and returns the final ids.
 * `heapThreshold` exists for tests that compare both strategies.
 */
export function bytePairMerge(symbols: number[], ranker: PairRanker, heapThreshold = HEAP_THRESHOLD): number[] {
  if (symbols.length < 2) return symbols;
  return symbols.length > heapThreshold ? mergeHeap(symbols, ranker) : mergeScan(symbols, ranker);
}

/** tiktoken's loop: keep the rank of every adjacent pair, merge the leftmost minimum, update its neighbours. */
function mergeScan(ids: number[], ranker: PairRanker): number[] {
  const ranks: number[] = new Array(ids.length - 1);
  for (let i = 0; i + 1 < ids.length; i++) ranks[i] = ranker.rank(ids[i], ids[i + 1]);
  for (;;) {
    let best = -1;
    let bestRank = Infinity;
    for (let i = 0; i < ranks.length; i++) {
      const r = ranks[i];
      if (r >= 0 && r < bestRank) {
        bestRank = r;
        best = i;
      }
    }
    if (best < 0) return ids;
    ids[best] = ranker.merged(ids[best], ids[best + 1], bestRank);
    ids.splice(best + 1, 1);
    ranks.splice(best, 1);
    if (best < ranks.length) ranks[best] = ranker.rank(ids[best], ids[best + 1]);
    if (best > 0) ranks[best - 1] = ranker.rank(ids[best - 1], ids[best]);
  }
}

/**
 * Same result in O(n log n) for long pieces (a long whitespace run, a long word): a doubly linked list of
 * symbols and a min-heap of (rank, start position) with stale entries skipped on pop. The start position
 * of a symbol is the index of its first byte, so "smaller position" is "further left".
 */
function mergeHeap(ids: number[], ranker: PairRanker): number[] {
  const n = ids.length;
  const sym = ids.slice();
  const next = new Int32Array(n);
  const prev = new Int32Array(n);
  const alive = new Uint8Array(n).fill(1);
  for (let i = 0; i < n; i++) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  // Heap entries packed as two parallel arrays; ordered by (rank, pos).
  const hr: number[] = [];
  const hp: number[] = [];
  const less = (i: number, j: number) => hr[i] < hr[j] || (hr[i] === hr[j] && hp[i] < hp[j]);
  const swap = (i: number, j: number) => {
    const r = hr[i]; hr[i] = hr[j]; hr[j] = r;
    const p = hp[i]; hp[i] = hp[j]; hp[j] = p;
  };
  const push = (rank: number, pos: number) => {
    hr.push(rank);
    hp.push(pos);
    let i = hr.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!less(i, parent)) break;
      swap(i, parent);
      i = parent;
    }
  };
  const pop = () => {
    const last = hr.length - 1;
    swap(0, last);
    hr.pop();
    hp.pop();
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < hr.length && less(l, m)) m = l;
      if (r < hr.length && less(r, m)) m = r;
      if (m === i) break;
      swap(i, m);
      i = m;
    }
  };
  for (let i = 0; i + 1 < n; i++) {
    const r = ranker.rank(sym[i], sym[i + 1]);
    if (r >= 0) push(r, i);
  }
  while (hr.length > 0) {
    const rank = hr[0];
    const pos = hp[0];
    pop();
    const nx = next[pos];
    // Stale: the symbol was merged away, has no right neighbour any more, or the pair changed.
    if (!alive[pos] || nx < 0 || ranker.rank(sym[pos], sym[nx]) !== rank) continue;
    sym[pos] = ranker.merged(sym[pos], sym[nx], rank);
    alive[nx] = 0;
    const nn = next[nx];
    next[pos] = nn;
    if (nn >= 0) {
      prev[nn] = pos;
      const r = ranker.rank(sym[pos], sym[nn]);
      if (r >= 0) push(r, pos);
    }
    const pv = prev[pos];
    if (pv >= 0) {
      const r = ranker.rank(sym[pv], sym[pos]);
      if (r >= 0) push(r, pv);
    }
  }
  const out: number[] = [];
  for (let i = 0; i >= 0; i = next[i]) out.push(sym[i]);
  return out;
}

/**
 * GPT-2's reversible map from bytes to printable characters, used by byte-level tokenizer.json vocabularies:
 * printable Latin-1 bytes map to themselves, the other 68 bytes to U+0100.. in byte order.
 */
export function bytesToUnicode(): string[] {
  const table: string[] = new Array(256);
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let n = 0;
  for (let b = 0; b < 256; b++) table[b] = String.fromCharCode(printable(b) ? b : 256 + n++);
  return table;
}
