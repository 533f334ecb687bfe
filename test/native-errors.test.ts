/**
 * Errors from the native layer: bad shapes and dtypes throw synchronously at the op call with a `code` and a
 * message naming the op and the shapes; data-dependent errors (token ids, cache positions, NaN weights) throw at
 * flush; disposed tensors and contexts throw ERR_GLM4_DISPOSED; "cuda" without CUDA throws ERR_GLM4_NO_CUDA.
 * After every error the process and the context keep working.
 */
import { afterAll, describe, expect, it } from "vitest";

import type { NativeContext, NativeTensor, QWeight } from "../lib/engine/native.js";
import { native } from "../lib/engine/native-binary.js";

type CodedError = Error & { code?: string };

/** The error fn throws (fails the test when it does not throw). */
function thrown(fn: () => unknown): CodedError {
  try {
    fn();
  } catch (e) {
    return e as CodedError;
  }
  throw new Error("expected an error, none was thrown");
}

/** fn throws with this code, and the message contains every part. */
function expectError(fn: () => unknown, code: string, ...parts: (string | RegExp)[]): CodedError {
  const e = thrown(fn);
  expect(e, `${e.message}`).toBeInstanceOf(Error);
  expect(e.code, e.message).toBe(code);
  for (const p of parts) {
    if (typeof p === "string") expect(e.message).toContain(p);
    else expect(e.message).toMatch(p);
  }
  return e;
}

const ctx: NativeContext = new (native().Context)("cpu");
afterAll(() => ctx.dispose());

const f32 = (shape: number[], fill = 0.5): NativeTensor =>
  ctx.fromBuffer("f32", shape, new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(fill));
const bf16 = (shape: number[]): NativeTensor => ctx.fromBuffer("bf16", shape, new Uint16Array(shape.reduce((a, b) => a * b, 1)).fill(0x3f00));
const i32 = (values: number[]): NativeTensor => ctx.fromBuffer("i32", [values.length], Int32Array.from(values));
function qweight(n: number, k: number, g: number, scaleCols = k / g): QWeight {
  return {
    codes: ctx.fromBuffer("i4", [n, k], new Uint8Array((n * k) / 2).fill(0x11)),
    scales: ctx.fromBuffer("bf16", [n, scaleCols], new Uint16Array(n * scaleCols).fill(0x3c00)),
    zeros: ctx.fromBuffer("bf16", [n, scaleCols], new Uint16Array(n * scaleCols).fill(0x4000)),
    groupSize: g as 32,
  };
}

/** A recorded op ran: the context still computes after an error. */
function contextStillWorks(c: NativeContext = ctx): void {
  const a = c.fromBuffer("f32", [3], Float32Array.of(1, 2, 3));
  const b = c.fromBuffer("f32", [3], Float32Array.of(10, 20, 30));
  const o = c.empty("f32", [3]);
  c.add(o, a, b);
  expect(Array.from(o.read())).toEqual([11, 22, 33]);
  for (const t of [a, b, o]) t.dispose();
}

describe("bad shapes throw synchronously with ERR_GLM4_SHAPE_MISMATCH, naming the op and the shapes", () => {
  it("matmul: K of x and w differ", () => {
    expectError(() => ctx.matmul(f32([3, 64]), f32([3, 64]), f32([8, 65])), "ERR_GLM4_SHAPE_MISMATCH", "matmul", "[3,64]", "[8,65]");
  });
  it("matmul: out is not [M, N]", () => {
    expectError(() => ctx.matmul(f32([3, 7]), f32([3, 64]), bf16([8, 64])), "ERR_GLM4_SHAPE_MISMATCH", "matmul", "[3,7]", "[3,8]");
  });
  it("matmul: bias of the wrong length", () => {
    expectError(() => ctx.matmul(f32([3, 8]), f32([3, 64]), bf16([8, 64]), f32([9])), "ERR_GLM4_SHAPE_MISMATCH", "matmul", "bias", "[8]", "[9]");
  });
  it("matmul_int4: x has the wrong K", () => {
    const q = qweight(8, 128, 64);
    expectError(() => ctx.matmulInt4(f32([2, 8]), f32([2, 96]), q), "ERR_GLM4_SHAPE_MISMATCH", "matmul_int4", "[2,96]", "[8,128]");
  });
  it("matmul_int4: scales of the wrong shape", () => {
    const q = qweight(8, 128, 64, 3);
    expectError(() => ctx.matmulInt4(f32([2, 8]), f32([2, 128]), q), "ERR_GLM4_SHAPE_MISMATCH", "matmul_int4", "scales", "[8,2]", "[8,3]");
  });
  it("rmsnorm: out differs from x; weight of the wrong length", () => {
    expectError(() => ctx.rmsnorm(f32([4, 64]), f32([3, 64]), bf16([64]), 1e-5), "ERR_GLM4_SHAPE_MISMATCH", "rmsnorm", "[4,64]", "[3,64]");
    expectError(() => ctx.rmsnorm(f32([3, 64]), f32([3, 64]), bf16([63]), 1e-5), "ERR_GLM4_SHAPE_MISMATCH", "rmsnorm", "[63]");
  });
  it("embedding: out hidden size differs from the table", () => {
    expectError(() => ctx.embedding(f32([2, 16]), bf16([10, 32]), i32([1, 2])), "ERR_GLM4_SHAPE_MISMATCH", "embedding", "[2,16]", "32");
  });
  it("swiglu: gate_up is not [M, 2F]", () => {
    expectError(() => ctx.swiglu(f32([3, 8]), f32([3, 15])), "ERR_GLM4_SHAPE_MISMATCH", "swiglu", "[3,15]", "[3,8]");
  });
  it("add: shapes differ", () => {
    expectError(() => ctx.add(f32([2, 3]), f32([2, 3]), f32([3, 2])), "ERR_GLM4_SHAPE_MISMATCH", "add", "[2,3]", "[3,2]");
  });
  it("attention: query heads not a multiple of KV heads; head dims differ", () => {
    const kc = f32([16, 3, 32]);
    const vc = f32([16, 3, 32]);
    expectError(() => ctx.attention(f32([1, 8, 32]), f32([1, 8, 32]), kc, vc, i32([0]), 0.1, 0), "ERR_GLM4_SHAPE_MISMATCH", "attention", "8 query heads", "3 KV heads");
    expectError(() => ctx.attention(f32([1, 6, 64]), f32([1, 6, 64]), kc, vc, i32([0]), 0.1, 0), "ERR_GLM4_SHAPE_MISMATCH", "attention", "[1,6,64]", "[16,3,32]");
  });
  it("attention: positions of the wrong length", () => {
    const kc = f32([16, 2, 32]);
    expectError(() => ctx.attention(f32([3, 4, 32]), f32([3, 4, 32]), kc, f32([16, 2, 32]), i32([0, 1]), 0.1, 0), "ERR_GLM4_SHAPE_MISMATCH", "attention", "positions", "[3]");
  });
  it("kv_write: k does not fit the cache; v differs from k; vcache differs from kcache", () => {
    const kc = bf16([16, 2, 32]);
    const vc = bf16([16, 2, 32]);
    expectError(() => ctx.kvWrite(kc, vc, f32([1, 2, 64]), f32([1, 2, 64]), i32([0])), "ERR_GLM4_SHAPE_MISMATCH", "kv_write", "[1,2,64]", "[16,2,32]");
    expectError(() => ctx.kvWrite(kc, vc, f32([1, 2, 32]), f32([2, 2, 32]), i32([0])), "ERR_GLM4_SHAPE_MISMATCH", "kv_write", "[2,2,32]");
    expectError(() => ctx.kvWrite(kc, bf16([8, 2, 32]), f32([1, 2, 32]), f32([1, 2, 32]), i32([0])), "ERR_GLM4_SHAPE_MISMATCH", "kv_write", "vcache", "[8,2,32]");
  });
  it("add_rmsnorm: o or out differs from x; weight of the wrong size", () => {
    expectError(() => ctx.addRmsnorm(f32([3, 64]), f32([3, 64]), f32([2, 64]), bf16([64]), 1e-5), "ERR_GLM4_SHAPE_MISMATCH", "add_rmsnorm", "o", "[2,64]", "[3,64]");
    expectError(() => ctx.addRmsnorm(f32([4, 64]), f32([3, 64]), f32([3, 64]), bf16([64]), 1e-5), "ERR_GLM4_SHAPE_MISMATCH", "add_rmsnorm", "out", "[4,64]");
    expectError(() => ctx.addRmsnorm(f32([3, 64]), f32([3, 64]), f32([3, 64]), bf16([63]), 1e-5), "ERR_GLM4_SHAPE_MISMATCH", "add_rmsnorm", "[63]");
    expectError(() => ctx.addRmsnorm(f32([3, 64]), f32([3, 64]), bf16([3, 64]), bf16([64]), 1e-5), "ERR_GLM4_DTYPE_MISMATCH", "add_rmsnorm", "bf16[3,64]");
  });
  it("rotary_kv_write: k does not fit the cache; q and k disagree; rows of the wrong length; q is k", () => {
    const kc = bf16([16, 2, 32]);
    const vc = bf16([16, 2, 32]);
    const q = f32([3, 4, 32]);
    expectError(() => ctx.rotaryKvWrite(q, f32([3, 2, 64]), f32([3, 2, 64]), kc, vc, i32([0, 1, 2]), i32([0, 1, 2]), 16, 1e4), "ERR_GLM4_SHAPE_MISMATCH", "rotary_kv_write", "[3,2,64]", "[16,2,32]");
    expectError(() => ctx.rotaryKvWrite(f32([2, 4, 32]), f32([3, 2, 32]), f32([3, 2, 32]), kc, vc, i32([0, 1, 2]), i32([0, 1, 2]), 16, 1e4), "ERR_GLM4_SHAPE_MISMATCH", "rotary_kv_write", "[2,4,32]", "[3,2,32]");
    expectError(() => ctx.rotaryKvWrite(q, f32([3, 2, 32]), f32([3, 2, 16]), kc, vc, i32([0, 1, 2]), i32([0, 1, 2]), 16, 1e4), "ERR_GLM4_SHAPE_MISMATCH", "rotary_kv_write", "v", "[3,2,16]");
    expectError(() => ctx.rotaryKvWrite(q, f32([3, 2, 32]), f32([3, 2, 32]), kc, vc, i32([0, 1, 2]), i32([0, 1]), 16, 1e4), "ERR_GLM4_SHAPE_MISMATCH", "rotary_kv_write", "rows", "[3]");
    expectError(() => ctx.rotaryKvWrite(q, f32([3, 2, 32]), f32([3, 2, 32]), kc, vc, i32([0, 1]), i32([0, 1, 2]), 16, 1e4), "ERR_GLM4_SHAPE_MISMATCH", "rotary_kv_write", "positions", "[3]");
    expectError(() => ctx.rotaryKvWrite(q, f32([3, 2, 32]), f32([3, 2, 32]), kc, f32([16, 2, 32]), i32([0, 1, 2]), i32([0, 1, 2]), 16, 1e4), "ERR_GLM4_SHAPE_MISMATCH", "rotary_kv_write", "vcache");
    const k = f32([3, 2, 32]);
    expectError(() => ctx.rotaryKvWrite(q, k, k, kc, vc, i32([0, 1, 2]), i32([0, 1, 2]), 16, 1e4), "ERR_GLM4_INVALID_ARGUMENT", "rotary_kv_write", "distinct");
  });
  it("rotary_kv_write_qkv: qkv is not [T, (Hq + 2 Hkv) D]; head dims differ; rows of the wrong length", () => {
    const kc = bf16([16, 2, 32]);
    const vc = bf16([16, 2, 32]);
    const q = f32([3, 4, 32]);
    expectError(() => ctx.rotaryKvWriteQkv(q, f32([3, 255]), kc, vc, i32([0, 1, 2]), i32([0, 1, 2]), 16, 1e4), "ERR_GLM4_SHAPE_MISMATCH", "rotary_kv_write_qkv", "qkv must be [3,256]", "[3,255]");
    expectError(() => ctx.rotaryKvWriteQkv(q, f32([2, 256]), kc, vc, i32([0, 1, 2]), i32([0, 1, 2]), 16, 1e4), "ERR_GLM4_SHAPE_MISMATCH", "rotary_kv_write_qkv", "[2,256]");
    expectError(() => ctx.rotaryKvWriteQkv(f32([3, 4, 16]), f32([3, 128]), kc, vc, i32([0, 1, 2]), i32([0, 1, 2]), 8, 1e4), "ERR_GLM4_SHAPE_MISMATCH", "rotary_kv_write_qkv", "[3,4,16]", "[16,2,32]");
    expectError(() => ctx.rotaryKvWriteQkv(q, f32([3, 256]), kc, vc, i32([0, 1, 2]), i32([0, 1]), 16, 1e4), "ERR_GLM4_SHAPE_MISMATCH", "rotary_kv_write_qkv", "rows", "[3]");
    expectError(() => ctx.rotaryKvWriteQkv(q, f32([3, 256]), kc, f32([16, 2, 32]), i32([0, 1, 2]), i32([0, 1, 2]), 16, 1e4), "ERR_GLM4_SHAPE_MISMATCH", "rotary_kv_write_qkv", "vcache");
    const big = f32([6, 128]);
    const qkv = big.reshape([3, 256]);
    const qv = big.slice0(0, 3).reshape([3, 4, 32]);
    expectError(() => ctx.rotaryKvWriteQkv(qv, qkv, kc, vc, i32([0, 1, 2]), i32([0, 1, 2]), 16, 1e4), "ERR_GLM4_INVALID_ARGUMENT", "rotary_kv_write_qkv", "overlaps");
  });
  it("argmax / sample / softmax / convert / copy", () => {
    expectError(() => ctx.argmax(ctx.empty("i32", [2]), f32([3, 10])), "ERR_GLM4_SHAPE_MISMATCH", "argmax", "3 rows");
    expectError(
      () => ctx.sample(ctx.empty("i32", [2]), f32([2, 10]), f32([2, 3]), i32([0, 0])),
      "ERR_GLM4_SHAPE_MISMATCH",
      "sample",
      "params",
      "[2,4]",
    );
    expectError(() => ctx.softmax(f32([2, 11]), f32([2, 10]), 1), "ERR_GLM4_SHAPE_MISMATCH", "softmax", "[2,11]", "[2,10]");
    expectError(() => ctx.convert(bf16([2, 11]), f32([2, 10])), "ERR_GLM4_SHAPE_MISMATCH", "convert", "[2,11]", "[2,10]");
    expectError(() => ctx.copy(f32([4]), f32([5])), "ERR_GLM4_SHAPE_MISMATCH", "copy", "[4]", "[5]");
  });
  it("the wrong number of dimensions", () => {
    expectError(() => ctx.rotary(f32([3, 64]), i32([0, 1, 2]), 32, 1e4), "ERR_GLM4_SHAPE_MISMATCH", "rotary", "3 dimensions", "[3,64]");
  });
});

describe("bad dtypes throw synchronously with ERR_GLM4_DTYPE_MISMATCH", () => {
  it("an activation that is not f32", () => {
    expectError(() => ctx.matmul(f32([3, 8]), bf16([3, 64]), bf16([8, 64])), "ERR_GLM4_DTYPE_MISMATCH", "matmul", "x", "bf16[3,64]");
  });
  it("token ids that are not i32", () => {
    expectError(() => ctx.embedding(f32([2, 32]), bf16([10, 32]), f32([2])), "ERR_GLM4_DTYPE_MISMATCH", "embedding", "ids", "f32[2]");
  });
  it("i4 codes given as u8; scales given as f32", () => {
    const q = qweight(8, 128, 64);
    const bad: QWeight = { ...q, codes: ctx.fromBuffer("u8", [8, 128], new Uint8Array(8 * 128)) };
    expectError(() => ctx.matmulInt4(f32([2, 8]), f32([2, 128]), bad), "ERR_GLM4_DTYPE_MISMATCH", "matmul_int4", "codes", "u8[8,128]");
    const bad2: QWeight = { ...q, scales: f32([8, 2]) };
    expectError(() => ctx.dequantizeInt4(f32([8, 128]), bad2), "ERR_GLM4_DTYPE_MISMATCH", "dequantize_int4", "scales", "f32[8,2]");
  });
  it("quantize of an i32 weight; convert of i32; a bf16 argmax output", () => {
    expectError(() => ctx.quantizeInt4(qweight(8, 128, 64), ctx.empty("i32", [8, 128]), 0), "ERR_GLM4_DTYPE_MISMATCH", "quantize_int4", "i32[8,128]");
    // bf16 x is the CUDA tensor-core GEMM's input (layout 1, M > 8) only
    expectError(() => ctx.matmulInt4(f32([16, 8]), bf16([16, 128]), qweight(8, 128, 64)), "ERR_GLM4_DTYPE_MISMATCH", "matmul_int4", "bf16[16,128]", "layout 1");
    expectError(() => ctx.convert(f32([4]), ctx.empty("i32", [4])), "ERR_GLM4_DTYPE_MISMATCH", "convert", "i32[4]");
    expectError(() => ctx.argmax(bf16([2]), f32([2, 10])), "ERR_GLM4_DTYPE_MISMATCH", "argmax", "bf16[2]");
  });
  it("a kv cache that is f16; a cache pair of different dtypes", () => {
    const h = ctx.empty("f16", [8, 2, 32]);
    expectError(() => ctx.kvWrite(h, h, f32([1, 2, 32]), f32([1, 2, 32]), i32([0])), "ERR_GLM4_DTYPE_MISMATCH", "kv_write", "f16[8,2,32]");
    expectError(() => ctx.kvWrite(bf16([8, 2, 32]), f32([8, 2, 32]), f32([1, 2, 32]), f32([1, 2, 32]), i32([0])), "ERR_GLM4_SHAPE_MISMATCH", "kv_write", "vcache", "f32[8,2,32]");
  });
  it("the tensor-core GEMM's bf16 x / out outside it (CPU: no GEMM path; linear_int4 x bf16 needs CUDA, M > 8, no norm)", () => {
    const q = qweight(16, 128, 64);
    expectError(() => ctx.matmulInt4(bf16([12, 16]), f32([12, 128]), q), "ERR_GLM4_DTYPE_MISMATCH", "matmul_int4", "out must be f32 here", "bf16[12,16]");
    expectError(() => ctx.linearInt4(f32([12, 16]), bf16([12, 128]), q, 1e-5, 1), "ERR_GLM4_DTYPE_MISMATCH", "linear_int4", "x must be f32 here", "bf16[12,128]");
  });
  it("copy between dtypes", () => {
    expectError(() => ctx.copy(bf16([4]), f32([4])), "ERR_GLM4_SHAPE_MISMATCH", "copy", "bf16[4]", "f32[4]");
  });
  it("an activation output (rmsnorm, add_rmsnorm, swiglu, attention) that is neither f32 nor bf16", () => {
    const f16 = (shape: number[]) => ctx.empty("f16", shape);
    expectError(() => ctx.rmsnorm(f16([3, 64]), f32([3, 64]), bf16([64]), 1e-5), "ERR_GLM4_DTYPE_MISMATCH", "rmsnorm", "out must be f32 or bf16", "f16[3,64]");
    expectError(() => ctx.addRmsnorm(ctx.empty("i32", [3, 64]), f32([3, 64]), f32([3, 64]), bf16([64]), 1e-5), "ERR_GLM4_DTYPE_MISMATCH", "add_rmsnorm", "out must be f32 or bf16", "i32[3,64]");
    expectError(() => ctx.swiglu(f16([3, 8]), f32([3, 16])), "ERR_GLM4_DTYPE_MISMATCH", "swiglu", "out must be f32 or bf16", "f16[3,8]");
    const kc = bf16([16, 2, 32]);
    expectError(() => ctx.attention(f16([1, 4, 32]), f32([1, 4, 32]), kc, kc, i32([0]), 0.1, 0), "ERR_GLM4_DTYPE_MISMATCH", "attention", "out must be f32 or bf16", "f16[1,4,32]");
    // q stays f32 (rotary writes it in f32); the packed qkv is f32 or bf16 (the QKV GEMM's bf16 out), nothing else
    expectError(() => ctx.rotaryKvWriteQkv(bf16([3, 4, 32]), f32([3, 256]), kc, kc, i32([0, 1, 2]), i32([0, 1, 2]), 16, 1e4), "ERR_GLM4_DTYPE_MISMATCH", "rotary_kv_write_qkv", "q", "bf16[3,4,32]");
    expectError(() => ctx.rotaryKvWriteQkv(f32([3, 4, 32]), f16([3, 256]), kc, kc, i32([0, 1, 2]), i32([0, 1, 2]), 16, 1e4), "ERR_GLM4_DTYPE_MISMATCH", "rotary_kv_write_qkv", "qkv", "f16[3,256]");
  });
});

describe("bad arguments throw synchronously with ERR_GLM4_INVALID_ARGUMENT", () => {
  it("group size 48 is rejected", () => {
    expectError(() => ctx.dequantizeInt4(f32([8, 96]), qweight(8, 96, 48)), "ERR_GLM4_INVALID_ARGUMENT", "dequantize_int4", "group size 48");
    expectError(() => ctx.quantizeInt4(qweight(8, 96, 48), f32([8, 96]), 0), "ERR_GLM4_INVALID_ARGUMENT", "quantize_int4", "48");
    expectError(() => ctx.matmulInt4(f32([1, 8]), f32([1, 96]), qweight(8, 96, 48)), "ERR_GLM4_INVALID_ARGUMENT", "matmul_int4", "48");
  });
  it("K not a multiple of the group size is rejected (a shape error)", () => {
    // K = 96 at G = 64: 1.5 groups a row
    expectError(() => ctx.matmulInt4(f32([1, 8]), f32([1, 96]), qweight(8, 96, 64, 1)), "ERR_GLM4_SHAPE_MISMATCH", "matmul_int4", "K=96", "group 64");
    expectError(() => ctx.quantizeInt4(qweight(8, 96, 64, 1), f32([8, 96]), 0), "ERR_GLM4_SHAPE_MISMATCH", "quantize_int4", "K=96");
  });
  it("a layout other than the canonical one on the CPU", () => {
    const q = { ...qweight(8, 128, 64), layout: 1 };
    expectError(() => ctx.matmulInt4(f32([1, 8]), f32([1, 128]), q), "ERR_GLM4_INVALID_ARGUMENT", "matmul_int4", "canonical");
  });
  it("an unknown layout or codebook; a quantization scheme that does not match the codebook; bad column scales", () => {
    expectError(() => ctx.matmulInt4(f32([1, 8]), f32([1, 128]), { ...qweight(8, 128, 64), layout: 7 }), "ERR_GLM4_INVALID_ARGUMENT", "matmul_int4", "unknown layout 7");
    expectError(() => ctx.dequantizeInt4(f32([8, 128]), { ...qweight(8, 128, 64), codebook: 2 }), "ERR_GLM4_INVALID_ARGUMENT", "dequantize_int4", "unknown codebook 2");
    expectError(() => ctx.quantizeInt4({ ...qweight(8, 128, 64), codebook: 1 }, f32([8, 128]), 0), "ERR_GLM4_INVALID_ARGUMENT", "quantize_int4", "scheme 0 writes integer codes (codebook 0), but q has codebook 1");
    expectError(() => ctx.quantizeInt4(qweight(8, 128, 64), f32([8, 128]), 2), "ERR_GLM4_INVALID_ARGUMENT", "quantize_int4", "scheme 2 writes NF4 codes (codebook 1), but q has codebook 0");
    expectError(() => ctx.quantizeInt4(qweight(8, 128, 64), f32([8, 128]), 3 as 0), "ERR_GLM4_INVALID_ARGUMENT", "quantize_int4", "unknown scheme 3");
    expect(() => ctx.quantizeInt4(qweight(8, 128, 64), f32([8, 128]), undefined as unknown as 0)).toThrow(/scheme must be an integer/);
    expectError(() => ctx.quantizeInt4(qweight(8, 128, 64), f32([8, 128]), 1, f32([64])), "ERR_GLM4_SHAPE_MISMATCH", "quantize_int4", "col_scale must be [128]", "f32[64]");
    expectError(() => ctx.quantizeInt4(qweight(8, 128, 64), f32([8, 128]), 1, ctx.empty("bf16", [128])), "ERR_GLM4_DTYPE_MISMATCH", "quantize_int4", "col_scale");
    const e = expectError(() => ctx.matmulInt4(f32([1, 8]), f32([1, 128]), { ...qweight(8, 128, 64), codebook: "nf4" as unknown as number }), "ERR_GLM4_INVALID_ARGUMENT", "codebook", "integer");
    expect(e).toBeInstanceOf(TypeError);
  });
  it("more arguments than the op takes is a TypeError naming the op's arguments", () => {
    const call = ctx.add as unknown as (...a: unknown[]) => void;
    const e = expectError(() => call.call(ctx, f32([2]), f32([2]), f32([2]), 1), "ERR_GLM4_INVALID_ARGUMENT", "add takes 3 arguments (out, a, b), got 4");
    expect(e).toBeInstanceOf(TypeError);
  });
  it("a missing tensor argument names it", () => {
    const call = ctx.add as unknown as (...a: unknown[]) => void;
    expectError(() => call.call(ctx, f32([2]), f32([2])), "ERR_GLM4_INVALID_ARGUMENT", "add", "b is missing");
  });
  it("rmsnorm eps <= 0; softmax temperature <= 0; attention scale <= 0; fill_random std < 0", () => {
    expectError(() => ctx.rmsnorm(f32([1, 8]), f32([1, 8]), bf16([8]), 0), "ERR_GLM4_INVALID_ARGUMENT", "rmsnorm", "eps");
    expectError(() => ctx.softmax(f32([1, 8]), f32([1, 8]), 0), "ERR_GLM4_INVALID_ARGUMENT", "softmax", "temperature");
    expectError(() => ctx.softmax(f32([1, 8]), f32([1, 8]), NaN), "ERR_GLM4_INVALID_ARGUMENT", "softmax");
    const kc = f32([4, 1, 8]);
    expectError(() => ctx.attention(f32([1, 1, 8]), f32([1, 1, 8]), kc, kc, i32([0]), 0, 0), "ERR_GLM4_INVALID_ARGUMENT", "attention", "scale");
    expectError(() => ctx.fillRandom(f32([4]), 1, 0, -1), "ERR_GLM4_INVALID_ARGUMENT", "fill_random");
  });
  it("rotary: odd rot_dim, rot_dim above the head dim, theta <= 1", () => {
    const x = f32([2, 2, 32]);
    const p = i32([0, 1]);
    expectError(() => ctx.rotary(x, p, 31, 1e4), "ERR_GLM4_INVALID_ARGUMENT", "rotary", "rot_dim 31");
    expectError(() => ctx.rotary(x, p, 64, 1e4), "ERR_GLM4_INVALID_ARGUMENT", "rotary", "rot_dim 64", "32");
    expectError(() => ctx.rotary(x, p, 16, 1), "ERR_GLM4_INVALID_ARGUMENT", "rotary", "theta");
  });
  it("arguments of the wrong JS type are TypeErrors with a code", () => {
    const e1 = expectError(() => ctx.add({} as NativeTensor, f32([2]), f32([2])), "ERR_GLM4_INVALID_ARGUMENT", "out", "Tensor");
    expect(e1).toBeInstanceOf(TypeError);
    expectError(() => ctx.empty("f64" as "f32", [2]), "ERR_GLM4_INVALID_ARGUMENT", "f64");
    expectError(() => ctx.empty("f32", [2, -1]), "ERR_GLM4_INVALID_ARGUMENT", "shape");
    expectError(() => ctx.empty("f32", [2.5]), "ERR_GLM4_INVALID_ARGUMENT", "shape");
    expectError(() => ctx.rmsnorm(f32([1, 8]), f32([1, 8]), bf16([8]), "1e-5" as unknown as number), "ERR_GLM4_INVALID_ARGUMENT", "eps");
    expectError(() => ctx.matmulInt4(f32([1, 8]), f32([1, 128]), { codes: f32([8, 128]) } as unknown as QWeight), "ERR_GLM4_INVALID_ARGUMENT", "scales");
    expectError(() => ctx.fillRandom(f32([4]), -1, 0, 1), "ERR_GLM4_INVALID_ARGUMENT", "seed");
    expectError(() => ctx.fillRandom(f32([4]), 1.5, 0, 1), "ERR_GLM4_INVALID_ARGUMENT", "seed");
  });
  it("fromBuffer / write with the wrong byte length; slice0 out of range; reshape to another size", () => {
    expectError(() => ctx.fromBuffer("f32", [4], new Float32Array(3)), "ERR_GLM4_SHAPE_MISMATCH", "fromBuffer", "12 bytes", "f32[4]");
    const t = f32([4, 2]);
    expectError(() => t.write(new Float32Array(7)), "ERR_GLM4_SHAPE_MISMATCH", "write", "28 bytes", "f32[4,2]");
    expectError(() => t.slice0(3, 5), "ERR_GLM4_INVALID_ARGUMENT", "slice0", "[3, 5)", "f32[4,2]");
    expectError(() => t.reshape([3, 3]), "ERR_GLM4_SHAPE_MISMATCH", "reshape", "[3,3]");
    expectError(() => ctx.empty("i4", [3, 5]).slice0(1, 2), "ERR_GLM4_SHAPE_MISMATCH", "slice0", "odd");
  });
  it("capture misuse: nested begin, end without begin, a host write inside a capture", () => {
    expectError(() => ctx.endCapture(), "ERR_GLM4_INVALID_ARGUMENT", "end_capture");
    ctx.beginCapture();
    try {
      expectError(() => ctx.beginCapture(), "ERR_GLM4_INVALID_ARGUMENT", "begin_capture");
      expectError(() => f32([2]).write(new Float32Array(2)), "ERR_GLM4_INVALID_ARGUMENT", "write", "captured");
    } finally {
      ctx.endCapture().dispose();
    }
    contextStillWorks();
  });
});

describe("data-dependent errors throw at flush with a clear message", () => {
  it("an out-of-vocab token id (too large and negative)", () => {
    for (const bad of [10, -1]) {
      const out = ctx.empty("f32", [3, 4]);
      ctx.embedding(out, bf16([10, 4]), i32([1, bad, 2])); // recording does not look at device data
      expectError(() => ctx.flush(), "ERR_GLM4_INVALID_ARGUMENT", "embedding", `token id ${bad}`, "position 1", "[0, 10)");
      contextStillWorks();
    }
  });
  it("an out-of-cache position in kv_write and in attention", () => {
    const kc = f32([8, 2, 16]);
    const vc = f32([8, 2, 16]);
    ctx.kvWrite(kc, vc, f32([2, 2, 16]), f32([2, 2, 16]), i32([3, 8]));
    expectError(() => ctx.flush(), "ERR_GLM4_INVALID_ARGUMENT", "kv_write", "position 8", "8 rows");
    ctx.attention(f32([1, 4, 16]), f32([1, 4, 16]), kc, vc, i32([-1]), 0.25, 0);
    expectError(() => ctx.flush(), "ERR_GLM4_INVALID_ARGUMENT", "attention", "position -1", "8 rows");
    contextStillWorks();
  });
  it("the error reaches read() as well, and flushAsync() rejects with the code", async () => {
    const out = ctx.empty("f32", [1, 4]);
    ctx.embedding(out, bf16([10, 4]), i32([99]));
    expectError(() => out.read(), "ERR_GLM4_INVALID_ARGUMENT", "token id 99");
    ctx.embedding(out, bf16([10, 4]), i32([-7]));
    await expect(ctx.flushAsync()).rejects.toMatchObject({ code: "ERR_GLM4_INVALID_ARGUMENT", message: expect.stringContaining("token id -7") });
    contextStillWorks();
  });
});

describe("disposed tensors and contexts throw ERR_GLM4_DISPOSED; the process survives", () => {
  it("a disposed tensor", () => {
    const t = f32([2, 2]);
    t.dispose();
    expect(t.disposed).toBe(true);
    t.dispose(); // twice is fine
    expectError(() => t.read(), "ERR_GLM4_DISPOSED", "disposed");
    expectError(() => t.shape, "ERR_GLM4_DISPOSED");
    expectError(() => t.write(new Float32Array(4)), "ERR_GLM4_DISPOSED");
    expectError(() => t.slice0(0, 1), "ERR_GLM4_DISPOSED");
    expectError(() => ctx.add(f32([2, 2]), t, f32([2, 2])), "ERR_GLM4_DISPOSED");
    expectError(() => ctx.matmulInt4(f32([1, 8]), f32([1, 128]), { ...qweight(8, 128, 64), zeros: t }), "ERR_GLM4_DISPOSED");
    contextStillWorks();
  });
  it("a disposed context", async () => {
    const c = new (native().Context)("cpu");
    const a = c.fromBuffer("f32", [2], Float32Array.of(1, 2));
    const o = c.empty("f32", [2]);
    c.add(o, a, a); // pending work runs at dispose
    c.dispose();
    c.dispose(); // twice is fine
    expectError(() => c.empty("f32", [2]), "ERR_GLM4_DISPOSED", "disposed");
    expectError(() => c.add(o, a, a), "ERR_GLM4_DISPOSED");
    expectError(() => c.flush(), "ERR_GLM4_DISPOSED");
    expectError(() => c.memory(), "ERR_GLM4_DISPOSED");
    expectError(() => c.beginCapture(), "ERR_GLM4_DISPOSED");
    expectError(() => a.write(Float32Array.of(3, 4)), "ERR_GLM4_DISPOSED");
    await expect(c.flushAsync()).rejects.toMatchObject({ code: "ERR_GLM4_DISPOSED" }); // rejects, never throws
    // Tensors of a disposed context still hold their memory: reading either works or throws DISPOSED, never crashes.
    try {
      expect(Array.from(o.read())).toEqual([2, 4]);
    } catch (e) {
      expect((e as CodedError).code).toBe("ERR_GLM4_DISPOSED");
    }
    a.dispose();
    o.dispose();
    contextStillWorks();
  });
  it("a disposed plan cannot be replayed", () => {
    ctx.beginCapture();
    const p = ctx.endCapture();
    p.dispose();
    expectError(() => ctx.replay(p), "ERR_GLM4_INVALID_ARGUMENT", "disposed");
  });
});

describe("CUDA where there is none", () => {
  const info = native().buildInfo();
  const noCuda = !info.backends.includes("cuda") || native().devices().length === 0;
  it.runIf(noCuda)('new Context("cuda") throws ERR_GLM4_NO_CUDA (no CUDA in this build or no device)', () => {
    expectError(() => new (native().Context)("cuda"), "ERR_GLM4_NO_CUDA");
    expectError(() => new (native().Context)("cuda:0"), "ERR_GLM4_NO_CUDA");
    contextStillWorks();
  });
  it("a CUDA device index beyond the devices present throws ERR_GLM4_NO_CUDA", () => {
    expectError(() => new (native().Context)(`cuda:${native().devices().length + 7}`), "ERR_GLM4_NO_CUDA");
  });
  it("a device name that is neither cpu nor cuda is a TypeError", () => {
    const e = expectError(() => new (native().Context)("tpu"), "ERR_GLM4_INVALID_ARGUMENT", "tpu");
    expect(e).toBeInstanceOf(TypeError);
    expectError(() => new (native().Context)("cuda:x"), "ERR_GLM4_INVALID_ARGUMENT");
  });
});
