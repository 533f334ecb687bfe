/**
 * Every op of csrc/ops.h on the CPU backend against the float64 references (the case table in
 * test/helpers/cases.ts; thresholds and their reasons are there).
 */
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";

import ts from "typescript";
import { afterAll, describe, expect, it } from "vitest";

import { native } from "../lib/engine/native-binary.js";
import { packageRoot } from "../lib/util.js";
import { OP_CASES, OPS_COVERED, referenceFailures, runCase } from "./helpers/cases.js";

const ctx = new (native().Context)("cpu");
afterAll(() => ctx.dispose());

/** The methods of the NativeContext interface (wherever in lib/ it is declared) with their parameter names. */
function nativeContextMethods(): Map<string, string[]> {
  const files = readdirSync(path.join(packageRoot(), "lib"), { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".ts"));
  const found: Map<string, string[]>[] = [];
  for (const f of files) {
    const text = readFileSync(path.join(packageRoot(), "lib", f), "utf8");
    if (!/interface NativeContext\b/.test(text)) continue;
    const src = ts.createSourceFile(f, text, ts.ScriptTarget.Latest, true);
    src.forEachChild((node) => {
      if (!ts.isInterfaceDeclaration(node) || node.name.text !== "NativeContext") return;
      const methods = new Map<string, string[]>();
      for (const m of node.members)
        if (ts.isMethodSignature(m)) methods.set(m.name.getText(src), m.parameters.map((p) => p.name.getText(src)));
      found.push(methods);
    });
  }
  expect(found.length, "exactly one `interface NativeContext` in lib/").toBe(1);
  return found[0];
}

describe("op table on cpu", () => {
  it("covers every op of csrc/op_list.h (the addon's opList()), and only those", () => {
    const listed = native().opList().map((o) => o.name);
    expect(new Set(listed).size).toBe(listed.length);
    expect([...OPS_COVERED].sort()).toEqual([...listed].sort());
  });

  it("NativeContext types every op as a method with the op's arguments, in order, and nothing the addon lacks", () => {
    const typed = nativeContextMethods();
    const camel = (s: string) => s.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
    for (const op of native().opList()) {
      expect(typed.get(op.method), `NativeContext has no method ${op.method} for the op ${op.name}`).toBeDefined();
      expect(typed.get(op.method), `arguments of ${op.method}`).toEqual(op.args.map(camel));
    }
    const proto = native().Context.prototype as unknown as Record<string, unknown>;
    const missing = [...typed.keys()].filter((m) => typeof proto[m] !== "function");
    expect(missing, "NativeContext methods the addon's Context does not have").toEqual([]);
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

describe("attention through a block table: bad tables are refused", () => {
  const c = new (native().Context)("cpu");
  afterAll(() => c.dispose());
  const ints = (shape: number[], v: number[]) => c.fromBuffer("i32", shape, Int32Array.from(v));
  const f32 = (shape: number[]) => c.fromBuffer("f32", shape, new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.5));
  // A pool of 4 blocks of 16 rows; two sequences of 2 blocks each.
  const kc = f32([64, 1, 8]), vc = f32([64, 1, 8]);
  const q = f32([2, 2, 8]), out = c.empty("f32", [2, 2, 8]);
  const table = ints([2, 2], [3, 0, 1, 2]);

  it("checks shapes, dtypes and the block size when the op is called", () => {
    expect(() => c.attention(out, q, kc, vc, ints([2], [0, 1]), 0.5, 24, table, null)).toThrow(/block size 24 is not a power of two in \[16, 256\]/);
    expect(() => c.attention(out, q, kc, vc, ints([2], [0, 1]), 0.5, 512, table, null)).toThrow(/block size 512/);
    expect(() => c.attention(out, q, kc, vc, ints([2], [0, 1]), 0.5, 16.5, table, null)).toThrow(/block_size must be an integer/);
    expect(() => c.attention(out, q, kc, vc, ints([2], [0, 1]), 0.5, 16, f32([2, 2]), null)).toThrow(/table/);
    expect(() => c.attention(out, q, kc, vc, ints([2], [0, 1]), 0.5, 16, ints([4], [0, 1, 2, 3]), null)).toThrow(/table/);
    expect(() => c.attention(out, q, kc, vc, ints([2], [0, 1]), 0.5, 16, table, ints([3], [0, 1, 1]))).toThrow(/seq must be \[2\]/);
    expect(() => c.attention(out, q, kc, vc, ints([2], [0, 1]), 0.5, 0, null, ints([2], [0, 1]))).toThrow(/seq needs a block table/);
    expect(() => c.attention(out, q, kc, vc, ints([2], [0, 1]), 0.5, 16)).toThrow(/block size 16 without a block table/);
  });

  it("a position past the table, a sequence outside it, a block outside the pool, when it runs", () => {
    c.attention(out, q, kc, vc, ints([2], [5, 32]), 0.5, 16, table, ints([2], [0, 1]));
    expect(() => c.flush()).toThrow(/position 32 of query 1 is past the 2 blocks of 16 tokens/);
    c.attention(out, q, kc, vc, ints([2], [5, 3]), 0.5, 16, table, ints([2], [0, 2]));
    expect(() => c.flush()).toThrow(/sequence 2 of query 1 is not in \[0, 2\)/);
    c.attention(out, q, kc, vc, ints([2], [5, 20]), 0.5, 16, ints([2, 2], [3, 0, 1, 4]), ints([2], [0, 1]));
    expect(() => c.flush()).toThrow(/block table entry 4 \(block 1 of sequence 1, read by query 1\) is outside the pool of 64 rows/);
    c.attention(out, q, kc, vc, ints([2], [5, -1]), 0.5, 16, table, ints([2], [0, 1]));
    expect(() => c.flush()).toThrow(/position -1 of query 1 is negative/);
    // Entries past a sequence's last block are never read: garbage there is fine.
    c.attention(out, q, kc, vc, ints([2], [5, 3]), 0.5, 16, ints([2, 2], [3, -7, 1, 99]), ints([2], [0, 1]));
    c.flush();
  });
});
