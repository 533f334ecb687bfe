/**
 * Every op of csrc/ops.h on the CPU backend against the float64 references (the case table in
 * test/helpers/cases.ts; thresholds and their reasons are there).
 */
import { afterAll, describe, expect, it } from "vitest";

import { native } from "../lib/native.js";
import { OP_CASES, OPS_COVERED, referenceFailures, runCase } from "./helpers/cases.js";

const ctx = new (native().Context)("cpu");
afterAll(() => ctx.dispose());

const ALL_OPS = [
  "embedding",
  "rmsnorm",
  "quantize_int4",
  "dequantize_int4",
  "matmul_int4",
  "matmul",
  "add_bias",
  "rotary",
  "kv_write",
  "attention",
  "swiglu",
  "add",
  "argmax",
  "softmax",
  "convert",
  "fill_random",
  "sample",
  "copy",
];

describe("op table on cpu", () => {
  it("covers every op of ops.h", () => {
    expect([...OPS_COVERED].sort()).toEqual([...ALL_OPS].sort());
  });

  it("case names are unique (each name is also its seed)", () => {
    const seen = new Set<string>();
    const dups = OP_CASES.filter((c) => (seen.has(c.name) ? true : (seen.add(c.name), false))).map((c) => c.name);
    expect(dups).toEqual([]);
  });

  for (const c of OP_CASES) {
    it(c.name, () => {
      const r = runCase(c, ctx);
      expect(referenceFailures(r, "cpu")).toEqual([]);
    });
  }
});

describe("op table on cpu: results do not depend on the thread count", () => {
  // The reference backend splits rows over threads; every element is computed by one thread in a fixed order, so
  // one thread and several must agree bit for bit.
  const one = new (native().Context)("cpu", 1);
  const four = new (native().Context)("cpu", 4);
  afterAll(() => {
    one.dispose();
    four.dispose();
  });
  for (const c of OP_CASES.filter((x) => ["matmul_int4", "attention", "quantize_int4", "rmsnorm"].includes(x.op)).slice(0, 12)) {
    it(c.name, () => {
      const a = runCase(c, one);
      const b = runCase(c, four);
      a.outputs.forEach((o, i) => expect(Array.from(b.outputs[i].got), o.name).toEqual(Array.from(o.got)));
    });
  }
});
