/**
 * The CUDA allocator keeps freed blocks for reuse (csrc/cuda/runtime.cu): a block of the same byte size comes back
 * from the cache (same address, no cudaMalloc), the cached bytes are reported and counted free by devices(), and
 * trimCache() gives them back. Reused memory is not assumed zero: a reused block holds whatever the last user wrote,
 * and every op writes its whole output (the op table's poisoned outputs check that).
 */
import { describe, expect, it } from "vitest";

import { native } from "../../lib/engine/native-binary.js";

const N = native();
const info = N.buildInfo();
const devices = N.devices();
const skipReason = !info.backends.includes("cuda")
  ? `this build of the addon has no CUDA backend (${info.cudaStatus})`
  : devices.length === 0
    ? `no CUDA device is visible (${info.cudaStatus})`
    : null;
const suite = skipReason ? describe.skip : describe;

suite(skipReason ? `CUDA allocator: skipped, ${skipReason}` : "CUDA allocator: freed blocks cached for reuse", () => {
  it("a freed block is reused for the same size, counted as cached (and free) until trimCache()", () => {
    const c = new N.Context("cuda:0");
    const mib = 64;
    const a = c.empty("f32", [mib * 262144]);
    a.write(new Float32Array(mib * 262144).fill(3));
    c.flush();
    expect(c.memory()).toMatchObject({ inUse: mib << 20, cached: 0 });
    a.dispose();
    expect(c.memory()).toMatchObject({ inUse: 0, cached: mib << 20 });
    const freeCached = N.devices()[0].freeMemory;
    // same size: taken from the cache (nothing new from the driver), and it holds the last user's bytes
    const b = c.empty("f32", [mib * 262144]);
    expect(c.memory()).toMatchObject({ inUse: mib << 20, cached: 0 });
    expect(Array.from(b.read().slice(0, 4) as Float32Array)).toEqual([3, 3, 3, 3]);
    // another size: a new block; the cached one stays
    b.dispose();
    const d = c.empty("f32", [1000]);
    expect(c.memory()).toMatchObject({ inUse: 4000, cached: mib << 20 });
    d.dispose();
    c.trimCache();
    expect(c.memory()).toMatchObject({ inUse: 0, cached: 0 });
    // the driver's free memory moves by the trimmed bytes only as far as other processes allow: check loosely
    expect(N.devices()[0].freeMemory).toBeGreaterThan(freeCached - (8 << 20));
    c.dispose();
  });

  it("a captured plan's buffers survive the cache: replays after churn give the same result", () => {
    const c = new N.Context("cuda:0");
    const x = c.fromBuffer("f32", [4, 256], new Float32Array(1024).map((_, i) => Math.sin(i)));
    const y = c.empty("f32", [4, 256]);
    c.beginCapture();
    c.add(y, x, x);
    const plan = c.endCapture();
    c.replay(plan);
    const first = Float32Array.from(y.read() as Float32Array);
    for (let i = 0; i < 20; i++) {
      const t = c.empty("f32", [4, 256]); // same size as y: would alias y if the cache handed out live blocks
      t.write(new Float32Array(1024).fill(7));
      c.flush();
      t.dispose();
    }
    c.replay(plan);
    expect(Array.from(y.read() as Float32Array)).toEqual(Array.from(first));
    plan.dispose();
    c.dispose();
  });
});
