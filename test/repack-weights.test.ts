/**
 * The engine's side of layout 1 (lib/engine/weights.ts repackForKernels, lib/engine/forward.ts fusedDecode), checked
 * on the CPU backend, which can repack and dequantize layout 1 (its reference of the layout) but never runs it: the
 * tiny checkpoint's INT4 linears repacked one by one stand for the same weights (dequantized bit for bit), q, k, v are
 * row views of the repacked fused QKV weight again, and the fused decode path is chosen exactly for <= 8 tokens.
 */
import path from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { readConfig } from "../lib/checkpoint/config.js";
import { fusedDecode } from "../lib/engine/forward.js";
import { loadCheckpointWeights } from "../lib/engine/loader.js";
import type { QWeight } from "../lib/engine/native.js";
import { native } from "../lib/engine/native-binary.js";
import { disposeWeights, repackForKernels, type Linear, type ModelWeights } from "../lib/engine/weights.js";
import { packageRoot } from "../lib/util.js";

const ctx = new (native().Context)("cpu");
afterAll(() => ctx.dispose());

function deq(q: QWeight): Float32Array {
  const [n, k] = q.codes.shape;
  const out = ctx.fromBuffer("f32", [n, k], new Float32Array(n * k).fill(NaN));
  ctx.dequantizeInt4(out, q);
  const r = (out.read() as Float32Array).slice();
  out.dispose();
  return r;
}
const int4 = (l: Linear): QWeight => {
  if (l.kind !== "int4") throw new Error("expected an INT4 linear");
  return l.q;
};

describe("repackForKernels (lib/engine/weights.ts) on the tiny checkpoint", () => {
  it("repacks every INT4 linear to layout 1 without changing a weight; q, k, v are row views of the repacked QKV", async () => {
    const dir = path.join(packageRoot(), "fixtures/tiny-glm4/original");
    const cfg = await readConfig(dir);
    const w: ModelWeights = await loadCheckpointWeights(dir, cfg, ctx, { quantization: "int4", groupSize: 64 });
    try {
      const names = (L: ModelWeights["layers"][number]) => ({ qkv: L.qkv!, q: L.q, k: L.k, v: L.v, attnOut: L.attnOut, gateUp: L.gateUp, down: L.down });
      const before = w.layers.map((L) => Object.fromEntries(Object.entries(names(L)).map(([n, l]) => [n, deq(int4(l))])));
      const outBefore = deq(int4(w.output));
      expect(fusedDecode(w, 1), "canonical weights: the unfused path").toBe(false);
      await repackForKernels(ctx, w);
      w.layers.forEach((L, i) => {
        for (const [n, l] of Object.entries(names(L))) {
          expect(int4(l).layout, `layer ${i} ${n}`).toBe(1);
          expect(Array.from(deq(int4(l))), `layer ${i} ${n} dequantized`).toEqual(Array.from(before[i][n]));
        }
        // the views are rows of the fused weight (shared memory): q = rows [0, nq), k and v after it
        const nq = L.q.n, nk = L.k.n;
        expect(int4(L.q).codes.shape).toEqual([nq, cfg.hiddenSize]);
        expect(L.qkv!.n).toBe(nq + 2 * nk);
      });
      expect(int4(w.output).layout).toBe(1);
      expect(Array.from(deq(int4(w.output)))).toEqual(Array.from(outBefore));
      expect(fusedDecode(w, 1)).toBe(true);
      expect(fusedDecode(w, 8)).toBe(true);
      expect(fusedDecode(w, 9), "more than 8 tokens: the GEMM path").toBe(false);
      // repacking twice changes nothing
      const codes = int4(w.layers[0].down).codes;
      await repackForKernels(ctx, w);
      expect(int4(w.layers[0].down).codes).toBe(codes);
    } finally {
      disposeWeights(w);
    }
  });
});
