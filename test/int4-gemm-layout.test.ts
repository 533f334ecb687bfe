/**
 * The GEMM tests' private copy of the layout-1 spec (test/helpers/layout1.ts) against the spec's own words: a
 * hand-computed position, and a round trip that reads every code back.
 */
import { describe, expect, it } from "vitest";

import { layout1Pos, repackLayout1 } from "./helpers/layout1.js";

describe("layout 1 (GEMM tests' copy of the spec)", () => {
  it("places a hand-computed code where the spec says", () => {
    // (n = 9, k = 66) in a [16, 256] weight: tile kt = 1, row 9 = g 1 of the lower half (a2/a3), k16 word j = 0,
    // k % 16 = 2 -> t = 1, even -> a2: lane 4 * 1 + 1 = 5, nibble position 1 of word 0 -> byte 512 + 80, high nibble.
    expect(layout1Pos(256, 9, 66)).toEqual({ byte: 592, shift: 4 });
    // (n = 0, k = 9): a5 = W[g][2t + 9] with g = 0, t = 0: nibble position 6 of word 0 -> byte 3, low nibble.
    expect(layout1Pos(64, 0, 9)).toEqual({ byte: 3, shift: 0 });
  });

  it("moves every code, scale and zero exactly once", () => {
    const n = 32;
    const k = 192;
    const g = 64;
    const packed = new Uint8Array((n * k) / 2);
    for (let i = 0; i < packed.length; ++i) packed[i] = (i * 37 + 11) & 0xff;
    const ng = (n * k) / g;
    const scales = Uint16Array.from({ length: ng }, (_, i) => 0x3c00 + i);
    const zeros = Uint16Array.from({ length: ng }, (_, i) => 0x4000 + i);
    const l1 = repackLayout1(packed, scales, zeros, n, k, g);
    for (let r = 0; r < n; ++r)
      for (let c = 0; c < k; ++c) {
        const { byte, shift } = layout1Pos(k, r, c);
        const b = packed[r * (k / 2) + (c >> 1)];
        expect((l1.codes[byte] >> shift) & 15).toBe(c & 1 ? b >> 4 : b & 15);
      }
    expect([...l1.scales].sort()).toEqual([...scales].sort());
    const kg = k / g; // row 17, group 2: row tile 1, slot 1 of that (tile, group)'s 16 values
    expect(l1.zeros[(1 * kg + 2) * 16 + 1]).toBe(zeros[17 * kg + 2]);
    expect(l1.scales[(1 * kg + 2) * 16 + 1]).toBe(scales[17 * kg + 2]);
    expect(() => repackLayout1(packed, scales, zeros, 24, k, g)).toThrow(/N % 16/);
  });
});
