/**
 * The INT4 kernel layout 1 ("tiled16x64", csrc/core/int4_layout.h and the coordination plan), written from the
 * spec for the GEMM tests: canonical codes/scales/zeros -> layout 1, on the host. (The repack_int4 op is the
 * library's; this copy lets the GEMM cases build layout-1 weights without it and checks the op against the spec.)
 *
 * codes: 512-byte tiles of 16 rows x 64 k; tile (nt, kt) at 512 * (nt * K/64 + kt); lane l = 4g + t owns bytes
 * 16l..16l+15 = four little-endian words, word j = the k16 sub-tile 16j of the tile, holding the mma.m16n8k16 A
 * fragment a0..a7 (a0 = W[g][2t], a1 = W[g][2t+1], a2 = W[g+8][2t], a3 = W[g+8][2t+1], a4..a7 the same at k + 8)
 * at nibble positions [a0, a2, a4, a6, a1, a3, a5, a7]. scales/zeros: element (n, gi) at ((n/16) * K/G + gi) * 16 + n%16.
 */

/** Byte index and bit shift of code (n, k) in layout 1. */
export function layout1Pos(k: number, n: number, kk: number): { byte: number; shift: number } {
  const nt = Math.floor(n / 16);
  const kt = Math.floor(kk / 64);
  const r = n % 16;
  const c = kk % 64;
  const j = Math.floor(c / 16);
  const c16 = c % 16;
  const g = r % 8;
  const hi = r >= 8 ? 1 : 0;
  const t = Math.floor((c16 % 8) / 2);
  const second = c16 >= 8 ? 1 : 0;
  const e = c16 % 2;
  const ai = e + 2 * hi + 4 * second;
  const pos = (ai % 2) * 4 + Math.floor(ai / 2);
  const lane = 4 * g + t;
  return { byte: 512 * (nt * (k / 64) + kt) + 16 * lane + 4 * j + Math.floor(pos / 2), shift: (pos % 2) * 4 };
}

/** Canonical (codes [N, K/2] low nibble = even k; scales/zeros [N, K/G]) -> layout 1. N % 16 == 0, K % 64 == 0. */
export function repackLayout1(
  packed: Uint8Array,
  scales: Uint16Array,
  zeros: Uint16Array,
  n: number,
  k: number,
  g: number,
): { codes: Uint8Array; scales: Uint16Array; zeros: Uint16Array } {
  if (n % 16 !== 0 || k % 64 !== 0) throw new Error(`layout 1 needs N % 16 == 0 and K % 64 == 0, got [${n}, ${k}]`);
  const codes = new Uint8Array(packed.length);
  for (let r = 0; r < n; ++r)
    for (let c = 0; c < k; ++c) {
      const b = packed[r * (k / 2) + (c >> 1)];
      const code = c & 1 ? b >> 4 : b & 15;
      const { byte, shift } = layout1Pos(k, r, c);
      codes[byte] |= code << shift;
    }
  const kg = k / g;
  const s1 = new Uint16Array(scales.length);
  const z1 = new Uint16Array(zeros.length);
  for (let r = 0; r < n; ++r)
    for (let gi = 0; gi < kg; ++gi) {
      const to = (Math.floor(r / 16) * kg + gi) * 16 + (r % 16);
      s1[to] = scales[r * kg + gi];
      z1[to] = zeros[r * kg + gi];
    }
  return { codes, scales: s1, zeros: z1 };
}
