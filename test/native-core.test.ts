/**
 * The native core: buildInfo() and devices(), tensors (dtype, shape, bytes, views sharing memory), memory
 * accounting, flushAsync() and the other *Async calls, and capture/replay of a recorded step on the CPU.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";

import type { NativeContext } from "../lib/engine/native.js";
import { native } from "../lib/engine/native-binary.js";
import { packageRoot } from "../lib/util.js";
import { makeDecodeStep } from "./helpers/cases.js";
import { Rng, encodeFloats } from "./helpers/rng.js";

const N = native();
const ctx: NativeContext = new N.Context("cpu");
afterAll(() => ctx.dispose());

describe("linearPath(): which kernel matmul_int4 runs for a shape", () => {
  it("rejects bad numbers with a RangeError or TypeError carrying a code", () => {
    const bad: [unknown[], RegExp][] = [
      [[0, 4096, 4096], /positive integers/],
      [[1.5, 4096, 4096], /positive integers/],
      [[16, 4096, 4096, 48], /group must be 32, 64 or 128/],
      [[16, 4096, 4096, 128, 2], /layout must be 0 or 1/],
      [[16, 4096, 4096, 128, 1, -1], /device/],
    ];
    for (const [args, msg] of bad) {
      let err: (Error & { code?: string }) | undefined;
      try {
        (N.linearPath as (...a: unknown[]) => string)(...args);
      } catch (e) {
        err = e as Error & { code?: string };
      }
      expect(err, JSON.stringify(args)).toBeInstanceOf(RangeError);
      expect(err?.message).toMatch(msg);
      expect(err?.code).toBe("ERR_GLM4_INVALID_ARGUMENT");
    }
    expect(() => (N.linearPath as (...a: unknown[]) => string)("16", 4096, 4096)).toThrow(TypeError);
  });
  it("without a CUDA device it throws a coded error instead of guessing", () => {
    if (N.devices().length > 0) return; // test/gpu/ops.test.ts checks the answers on a GPU
    let err: (Error & { code?: string }) | undefined;
    try {
      N.linearPath(16, 4096, 4096);
    } catch (e) {
      err = e as Error & { code?: string };
    }
    expect(err?.code).toMatch(/^ERR_GLM4_(NO_CUDA|CUDA)$/);
  });
});

describe("buildInfo() and devices()", () => {
  const info = N.buildInfo();
  it("has the documented shape", () => {
    const pkg = JSON.parse(readFileSync(path.join(packageRoot(), "package.json"), "utf8")) as { version: string };
    expect(info.version).toBe(pkg.version);
    expect(Array.isArray(info.backends)).toBe(true);
    expect(info.backends).toContain("cpu");
    for (const b of info.backends) expect(["cpu", "cuda"]).toContain(b);
    expect(Array.isArray(info.cudaArchitectures)).toBe(true);
    for (const a of info.cudaArchitectures) expect(typeof a).toBe("string");
    expect(typeof info.cudaStatus).toBe("string");
    expect(info.cudaStatus.length).toBeGreaterThan(0);
    expect(Number.isInteger(info.napiVersion) && info.napiVersion >= 8).toBe(true);
    for (const v of [info.cudaRuntimeVersion, info.cudaDriverVersion]) expect(v === null || typeof v === "string").toBe(true);
  });
  it("a CUDA build lists its architectures, Hopper's sm_90a among them; a CPU build lists none", () => {
    if (info.backends.includes("cuda")) {
      expect(info.cudaArchitectures.length).toBeGreaterThan(0);
      expect(info.cudaArchitectures).toContain("90a");
      expect(info.cudaRuntimeVersion).toMatch(/^\d+\.\d+$/);
    } else {
      expect(info.cudaArchitectures).toEqual([]);
      expect(info.cudaRuntimeVersion).toBeNull();
      expect(N.devices()).toEqual([]);
    }
  });
  it("devices() is an array of device descriptions", () => {
    const devs = N.devices();
    expect(Array.isArray(devs)).toBe(true);
    devs.forEach((d, i) => {
      expect(d.index).toBe(i);
      expect(typeof d.name).toBe("string");
      expect(d.computeCapability).toMatch(/^\d+\.\d+$/);
      expect(d.totalMemory).toBeGreaterThan(0);
      expect(d.freeMemory).toBeGreaterThan(0);
      expect(d.freeMemory).toBeLessThanOrEqual(d.totalMemory);
      expect(d.multiprocessors).toBeGreaterThan(0);
    });
  });
});

describe("tensors", () => {
  it("dtype, shape, device, nbytes and what read() returns", () => {
    const cases: [string, number[], number, string][] = [
      ["f32", [3, 5], 60, "Float32Array"],
      ["bf16", [7], 14, "Uint16Array"],
      ["f16", [2, 2, 2], 16, "Uint16Array"],
      ["i32", [4], 16, "Int32Array"],
      ["u8", [9], 9, "Uint8Array"],
      ["i4", [3, 5], 8, "Uint8Array"],
      ["f32", [0, 4], 0, "Float32Array"],
    ];
    for (const [dtype, shape, nbytes, kind] of cases) {
      const t = ctx.empty(dtype as "f32", shape);
      expect(t.dtype).toBe(dtype);
      expect(t.shape).toEqual(shape);
      expect(t.device).toBe("cpu");
      expect(t.nbytes).toBe(nbytes);
      expect(t.disposed).toBe(false);
      const r = t.read();
      expect(r.constructor.name).toBe(kind);
      expect(r.byteLength).toBe(nbytes);
      t.dispose();
    }
    expect(ctx.device).toBe("cpu");
  });

  it("write() then read() round-trips the bytes; write copies at once", () => {
    const t = ctx.empty("bf16", [4]);
    const src = Uint16Array.of(0x3f80, 0x7fc1, 0x8000, 0x0001);
    t.write(src);
    src.fill(0); // the caller may reuse its buffer at once
    expect(Array.from(t.read())).toEqual([0x3f80, 0x7fc1, 0x8000, 0x0001]);
    t.dispose();
  });

  it("slice0 views share memory with their tensor, both ways, and slices of slices compose", () => {
    const t = ctx.fromBuffer("f32", [5, 2], Float32Array.from({ length: 10 }, (_, i) => i));
    const s = t.slice0(1, 4);
    expect(s.shape).toEqual([3, 2]);
    expect(Array.from(s.read())).toEqual([2, 3, 4, 5, 6, 7]);
    s.write(Float32Array.of(-1, -2, -3, -4, -5, -6));
    expect(Array.from(t.read())).toEqual([0, 1, -1, -2, -3, -4, -5, -6, 8, 9]);
    t.write(Float32Array.from({ length: 10 }, (_, i) => 100 + i));
    expect(Array.from(s.read())).toEqual([102, 103, 104, 105, 106, 107]);
    const ss = s.slice0(1, 2);
    expect(Array.from(ss.read())).toEqual([104, 105]);
    // an op writing into a view writes the rows of the tensor
    ctx.add(ss, ss, ctx.fromBuffer("f32", [1, 2], Float32Array.of(1000, 1000)));
    expect(Array.from(t.read())).toEqual([100, 101, 102, 103, 1104, 1105, 106, 107, 108, 109]);
    const empty = t.slice0(2, 2);
    expect(empty.shape).toEqual([0, 2]);
    for (const x of [t, s, ss, empty]) x.dispose();
  });

  it("reshape views share memory and keep the element count", () => {
    const t = ctx.fromBuffer("i32", [2, 6], Int32Array.from({ length: 12 }, (_, i) => i));
    const r = t.reshape([3, 2, 2]);
    expect(r.shape).toEqual([3, 2, 2]);
    expect(Array.from(r.read())).toEqual(Array.from({ length: 12 }, (_, i) => i));
    r.write(Int32Array.from({ length: 12 }, (_, i) => -i));
    expect(Array.from(t.read())).toEqual(Array.from({ length: 12 }, (_, i) => -i | 0));
    // a reshaped slice
    const v = t.slice0(1, 2).reshape([3, 2]);
    expect(Array.from(v.read())).toEqual([-6, -7, -8, -9, -10, -11]);
    for (const x of [t, r, v]) x.dispose();
  });
});

describe("memory()", () => {
  it("counts the bytes of every allocation, and frees them when the last view is disposed", () => {
    const c = new N.Context("cpu");
    const m0 = c.memory();
    expect(m0).toEqual({ inUse: 0, peak: 0, allocations: 0, cached: 0 });
    const a = c.empty("f32", [10, 10]);
    let m = c.memory();
    expect(m.inUse).toBe(400);
    expect(m.allocations).toBe(1);
    const b = c.fromBuffer("bf16", [7], new Uint16Array(7));
    const q = c.empty("i4", [3, 5]);
    m = c.memory();
    expect(m.inUse).toBe(400 + 14 + 8);
    expect(m.allocations).toBe(3);
    expect(m.peak).toBe(422);

    // views allocate nothing and keep their storage alive
    const s = a.slice0(2, 4);
    const r = a.reshape([100]);
    expect(c.memory().inUse).toBe(422);
    a.dispose();
    r.dispose();
    expect(c.memory().inUse).toBe(422); // s still holds a's storage
    s.dispose();
    expect(c.memory()).toMatchObject({ inUse: 22, allocations: 2 });
    b.dispose();
    q.dispose();
    expect(c.memory()).toMatchObject({ inUse: 0, allocations: 0, peak: 422 });

    c.resetPeak();
    expect(c.memory().peak).toBe(0);
    const big = c.empty("f32", [1000]);
    big.dispose();
    expect(c.memory()).toEqual({ inUse: 0, peak: 4000, allocations: 0, cached: 0 }); // the CPU caches nothing
    c.trimCache(); // a no-op on the CPU
    expect(c.memory().cached).toBe(0);
    c.dispose();
  });
});

describe("flushAsync()", () => {
  it("resolves, and the work queued before it is visible after", async () => {
    const a = ctx.fromBuffer("f32", [2, 3], Float32Array.of(1, 2, 3, 4, 5, 6));
    const o = ctx.empty("f32", [2, 3]);
    ctx.add(o, a, a);
    ctx.add(o, o, a);
    await expect(ctx.flushAsync()).resolves.toBeUndefined();
    // later work does not run again what was flushed: a changes, o keeps 3a
    a.write(Float32Array.of(0, 0, 0, 0, 0, 0));
    expect(Array.from(o.read())).toEqual([3, 6, 9, 12, 15, 18]);
    await Promise.all([ctx.flushAsync(), ctx.flushAsync()]); // nothing queued, twice at once: fine
    a.dispose();
    o.dispose();
  });

  it("runs the work off the JS thread: the event loop keeps turning while it runs (no clock involved)", async () => {
    const c = new N.Context("cpu", 1);
    const rng = new Rng("flushAsync");
    const x = c.fromBuffer("f32", [16, 1024], Float32Array.from(rng.normals(16 * 1024)));
    const w = c.fromBuffer("bf16", [1024, 1024], encodeFloats("bf16", rng.normals(1024 * 1024, 0.03)));
    const y = c.empty("f32", [16, 1024]);
    c.matmul(y, x, w);
    c.flush();
    const want = Array.from(y.read());
    y.write(new Float32Array(16 * 1024).fill(NaN));
    for (let i = 0; i < 4; ++i) c.matmul(y, x, w); // ~67M multiply-adds: many event-loop turns on any machine
    expect(await turnsWhile(Promise.resolve())).toBe(0); // what work done on the JS thread would give
    expect(await turnsWhile(c.flushAsync())).toBeGreaterThan(0);
    expect(Array.from(y.read())).toEqual(want);
    c.dispose();
  });
});

/**
 * Event-loop turns (setImmediate callbacks) that ran while p was pending. A call that did its work on the JS thread
 * returns a settled promise: 0 turns. Work on a worker thread leaves the loop free: a turn at least.
 */
async function turnsWhile<T>(p: Promise<T>): Promise<number> {
  let turns = 0;
  let done = false;
  const spin = () => {
    if (done) return;
    ++turns;
    setImmediate(spin);
  };
  setImmediate(spin);
  try {
    await p;
  } finally {
    done = true;
  }
  return turns;
}

describe("the *Async calls: the work on a worker thread, every error a rejected promise with its code", () => {
  it("fromBufferAsync: a tensor holding the data; the copy runs off the JS thread", async () => {
    const data = Float32Array.from({ length: 6 }, (_, i) => i * 1.5);
    const t = await ctx.fromBufferAsync("f32", [2, 3], data);
    expect(t.shape).toEqual([2, 3]);
    expect(Array.from(t.read())).toEqual(Array.from(data));
    const big = new Uint8Array(64 << 20).fill(7);
    big[big.length - 1] = 9;
    const c = new N.Context("cpu");
    const b = await c.fromBufferAsync("u8", [big.length], big);
    const back = b.read() as Uint8Array;
    expect([back[0], back[big.length - 1], back.length]).toEqual([7, 9, big.length]);
    expect(c.memory().inUse).toBe(big.length);
    b.dispose();
    c.dispose();
    t.dispose();
  });

  it("fromBufferAsync rejects (never throws) a wrong length, dtype or data, with the code", async () => {
    await expect(ctx.fromBufferAsync("f32", [4], new Float32Array(3))).rejects.toMatchObject({
      code: "ERR_GLM4_SHAPE_MISMATCH",
      message: expect.stringContaining("fromBufferAsync: 12 bytes given for f32[4]"),
    });
    await expect(ctx.fromBufferAsync("f64" as "f32", [4], new Float32Array(4))).rejects.toMatchObject({ code: "ERR_GLM4_INVALID_ARGUMENT" });
    const e = await ctx.fromBufferAsync("f32", [4], [1, 2, 3, 4] as unknown as Float32Array).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(TypeError);
    expect(e).toMatchObject({ code: "ERR_GLM4_INVALID_ARGUMENT", message: expect.stringContaining("TypedArray") });
  });

  it("writeAsync runs what was recorded first, then writes; a wrong length rejects", async () => {
    const a = ctx.fromBuffer("f32", [3], Float32Array.of(1, 2, 3));
    const o = ctx.empty("f32", [3]);
    ctx.add(o, a, a); // recorded before the write: must not land after it
    await o.writeAsync(Float32Array.of(7, 8, 9));
    expect(Array.from(o.read())).toEqual([7, 8, 9]);
    ctx.add(a, a, a);
    await o.writeAsync(Float32Array.of(0, 0, 0));
    expect(Array.from(a.read())).toEqual([2, 4, 6]); // the recorded add ran
    await expect(o.writeAsync(new Float32Array(4))).rejects.toMatchObject({ code: "ERR_GLM4_SHAPE_MISMATCH", message: expect.stringContaining("writeAsync: 16 bytes") });
    a.dispose();
    o.dispose();
    await expect(o.writeAsync(new Float32Array(3))).rejects.toMatchObject({ code: "ERR_GLM4_DISPOSED" });
  });

  it("endCaptureAsync gives a plan that replays like endCapture's; without a capture it rejects", async () => {
    const c = new N.Context("cpu");
    const step = makeDecodeStep(c);
    const run = async (viaAsync: boolean) => {
      c.beginCapture();
      step.record();
      const plan = viaAsync ? await c.endCaptureAsync() : c.endCapture();
      step.ids.write(Int32Array.of(3));
      step.pos.write(Int32Array.of(0));
      c.replay(plan);
      const out = Array.from(step.logits.read());
      plan.dispose();
      return out;
    };
    const sync = await run(false);
    const async_ = await run(true);
    expect(async_).toEqual(sync);
    expect(sync.every(Number.isFinite)).toBe(true);
    await expect(c.endCaptureAsync()).rejects.toMatchObject({ code: "ERR_GLM4_INVALID_ARGUMENT", message: expect.stringContaining("end_capture") });
    step.dispose();
    c.dispose();
  });

  it("profileAsync gives one entry per op of the plan, in order, like profile", async () => {
    const c = new N.Context("cpu");
    const step = makeDecodeStep(c);
    c.beginCapture();
    step.record();
    const plan = await c.endCaptureAsync();
    const prof = await c.profileAsync(plan, 2);
    expect(prof.map((p) => p.op)).toEqual(c.profile(plan, 1).map((p) => p.op));
    expect(prof.length).toBe(plan.ops);
    expect(prof.every((p) => p.ms >= 0)).toBe(true);
    await expect(c.profileAsync(plan, 0)).rejects.toMatchObject({ code: "ERR_GLM4_INVALID_ARGUMENT", message: expect.stringContaining("reps") });
    plan.dispose();
    await expect(c.profileAsync(plan)).rejects.toMatchObject({ code: "ERR_GLM4_INVALID_ARGUMENT", message: expect.stringContaining("disposed") });
    step.dispose();
    c.dispose();
  });

  it("a disposed context rejects every *Async call with ERR_GLM4_DISPOSED", async () => {
    const c = new N.Context("cpu");
    c.dispose();
    for (const p of [c.flushAsync(), c.fromBufferAsync("f32", [1], new Float32Array(1)), c.endCaptureAsync()])
      await expect(p).rejects.toMatchObject({ code: "ERR_GLM4_DISPOSED" });
  });
});

describe("fill_random seeds", () => {
  it("seeds above 2^24 give different fills (they were once rounded to float32)", () => {
    const a = ctx.empty("f32", [64]);
    const b = ctx.empty("f32", [64]);
    ctx.fillRandom(a, 2 ** 24, 0, 1);
    ctx.fillRandom(b, 2 ** 24 + 1, 0, 1);
    expect(Array.from(a.read())).not.toEqual(Array.from(b.read()));
    ctx.fillRandom(b, 2 ** 24, 0, 1);
    expect(Array.from(a.read())).toEqual(Array.from(b.read()));
    a.dispose();
    b.dispose();
  });
});

// ------------------------------------------------------------------ capture / replay

describe("capture / replay on the CPU", () => {
  it("records without running, and replaying reproduces direct calls step by step", () => {
    const a = new N.Context("cpu");
    const b = new N.Context("cpu");
    const sa = makeDecodeStep(a);
    const sb = makeDecodeStep(b);
    a.beginCapture();
    const nOps = sa.record();
    const plan = a.endCapture();
    expect(plan.ops).toBe(nOps);
    // nothing ran: the cache still holds its NaN poison, the logits are untouched
    expect(new Set(sa.kc.read())).toEqual(new Set([0x7fc0]));

    const tokens = [3, 17, 42, 7, 7, 0, 49, 11];
    const us = [0.5, 0.1, 0.9, 0.33, 0.77, 0.01, 0.6, 0.45];
    tokens.forEach((tok, step) => {
      for (const s of [sa, sb]) {
        s.ids.write(Int32Array.of(tok));
        s.pos.write(Int32Array.of(step));
        s.params.write(Float32Array.of(0.8, 0.9, 0.05, us[step]));
      }
      a.replay(plan);
      sb.record();
      const la = sa.logits.read() as Float32Array;
      const lb = sb.logits.read() as Float32Array;
      expect(la.every(Number.isFinite), `step ${step}: logits finite`).toBe(true);
      expect(Array.from(la), `step ${step}: logits`).toEqual(Array.from(lb));
      expect(sa.next.read()[0], `step ${step}: argmax`).toBe(sb.next.read()[0]);
      expect(sa.sampled.read()[0], `step ${step}: sample`).toBe(sb.sampled.read()[0]);
    });
    // the caches were written by the replays exactly as by the direct calls
    expect(Array.from(sa.kc.read())).toEqual(Array.from(sb.kc.read()));

    // a plan can be replayed several times before a flush (each replay sees the writes recorded before it)
    sa.pos.write(Int32Array.of(8));
    a.replay(plan);
    a.replay(plan);
    expect(sa.logits.read().every(Number.isFinite)).toBe(true);

    plan.dispose();
    sa.dispose();
    sb.dispose();
    a.dispose();
    b.dispose();
  });

  it("an empty capture gives an empty plan; replaying it is a no-op", () => {
    ctx.beginCapture();
    const p = ctx.endCapture();
    expect(p.ops).toBe(0);
    ctx.replay(p);
    ctx.flush();
    p.dispose();
  });
});

describe("several contexts live side by side", () => {
  it("each has its own memory accounting and queue", () => {
    const c1 = new N.Context("cpu", 1);
    const c2 = new N.Context("cpu", 2);
    const t1 = c1.empty("f32", [16]);
    expect(c1.memory().inUse).toBe(64);
    expect(c2.memory().inUse).toBe(0);
    t1.dispose();
    c2.dispose();
    c1.dispose();
  });
});
