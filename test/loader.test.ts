/** Loader pieces: chunked INT4 quantization equals whole-tensor quantization; the host embedding gathers exactly. */
import { describe, expect, it } from "vitest";
import { native } from "../lib/engine/native-binary.js";
import { quantizeRows } from "../lib/engine/upload.js";
import { HostEmbedding } from "../lib/engine/weights.js";

function bf16Bits(x: number): number {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0];
  return ((u + 0x7fff + ((u >> 16) & 1)) >>> 16) & 0xffff;
}

describe("quantizeRows", () => {
  it("quantizing in row chunks of 7 gives the same codes, scales and zeros as one pass", async () => {
    const ctx = new (native().Context)("cpu");
    const n = 45, k = 128;
    const src = new Uint16Array(n * k);
    let s = 12345;
    for (let i = 0; i < src.length; i++) {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      src[i] = bf16Bits(((s >>> 8) / 2 ** 24 - 0.5) * 3);
    }
    const buf = Buffer.from(src.buffer);
    const rowBytes = k * 2;
    const whole = await quantizeRows(ctx, n, k, 64, n, () => ctx.fromBuffer("bf16", [n, k], buf));
    const chunked = await quantizeRows(ctx, n, k, 64, 7, (r0: number, r1: number) => ctx.fromBuffer("bf16", [r1 - r0, k], buf.subarray(r0 * rowBytes, r1 * rowBytes)));
    if (whole.kind !== "int4" || chunked.kind !== "int4") throw new Error("expected int4");
    expect(Buffer.from(chunked.q.codes.read()).equals(Buffer.from(whole.q.codes.read()))).toBe(true);
    expect(Array.from(chunked.q.scales.read())).toEqual(Array.from(whole.q.scales.read()));
    expect(Array.from(chunked.q.zeros.read())).toEqual(Array.from(whole.q.zeros.read()));
    ctx.dispose();
  });

  it("rejects K not a multiple of the group with a message naming the shape", async () => {
    const ctx = new (native().Context)("cpu");
    await expect(quantizeRows(ctx, 4, 96, 64, 4, () => ctx.empty("bf16", [4, 96]))).rejects.toThrow(/\[4, 96\].*group 64/);
    ctx.dispose();
  });
});

describe("HostEmbedding", () => {
  const rows = 5, cols = 3;
  const vals = Array.from({ length: rows * cols }, (_, i) => (i - 7) * 0.375);
  it("gathers bf16, f16 and f32 rows exactly", () => {
    const bf = Buffer.from(new Uint16Array(vals.map(bf16Bits)).buffer);
    const f32 = Buffer.from(new Float32Array(vals).buffer);
    // f16 of these values is exact (multiples of 1/8 below 8)
    const f16 = Buffer.alloc(vals.length * 2);
    vals.forEach((v, i) => {
      const sign = v < 0 ? 0x8000 : 0, a = Math.abs(v);
      if (a === 0) return f16.writeUInt16LE(sign, i * 2);
      const e = Math.floor(Math.log2(a));
      f16.writeUInt16LE(sign | ((e + 15) << 10) | Math.round((a / 2 ** e - 1) * 1024), i * 2);
    });
    for (const [dt, b] of [["BF16", bf], ["F16", f16], ["F32", f32]] as const) {
      const e = new HostEmbedding(b, dt, rows, cols);
      expect(Array.from(e.gather([4, 0, 4]))).toEqual([...vals.slice(12, 15), ...vals.slice(0, 3), ...vals.slice(12, 15)]);
      expect(() => e.gather([5])).toThrow(RangeError);
    }
  });
});
