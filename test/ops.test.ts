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

describe("attention with start (slots of a shared cache)", () => {
  const c = new (native().Context)("cpu");
  afterAll(() => c.dispose());
  const ints = (v: number[]) => c.fromBuffer("i32", [v.length], Int32Array.from(v));

  it("a sequence in slot 2 gets bit for bit what it gets alone at slot 0", () => {
    const S = 16, Hq = 4, Hkv = 2, D = 8, len = 11;
    const rnd = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed) * 3);
    const k = rnd(len * Hkv * D, 1), v = rnd(len * Hkv * D, 2), q = rnd(Hq * D, 3);
    const run = (slot: number, slots: number) => {
      const kc = c.fromBuffer("f32", [slots * S, Hkv, D], new Float32Array(slots * S * Hkv * D).fill(7));
      const vc = c.fromBuffer("f32", [slots * S, Hkv, D], new Float32Array(slots * S * Hkv * D).fill(-7));
      c.kvWrite(kc, vc, c.fromBuffer("f32", [len, Hkv, D], k), c.fromBuffer("f32", [len, Hkv, D], v), ints(Array.from({ length: len }, (_, i) => slot * S + i)));
      const out = c.empty("f32", [1, Hq, D]);
      c.attention(out, c.fromBuffer("f32", [1, Hq, D], q), kc, vc, ints([slot * S + len - 1]), 0.3, ints([slot * S]));
      return Array.from(out.read() as Float32Array);
    };
    expect(run(2, 4)).toEqual(run(0, 1));
  });

  it("rejects a start of the wrong shape or dtype at once, and a start past pos when it runs", () => {
    const kc = c.empty("f32", [8, 1, 8]), vc = c.empty("f32", [8, 1, 8]);
    const q = c.fromBuffer("f32", [2, 1, 8], new Float32Array(16).fill(1));
    const out = c.empty("f32", [2, 1, 8]);
    expect(() => c.attention(out, q, kc, vc, ints([1, 2]), 0.5, ints([0]))).toThrow(/start must be \[2\]/);
    expect(() => c.attention(out, q, kc, vc, ints([1, 2]), 0.5, c.empty("f32", [2]))).toThrow(/start/);
    c.attention(out, q, kc, vc, ints([1, 2]), 0.5, ints([0, 3]));
    expect(() => c.flush()).toThrow(/start 3 of query 1 is not in \[0, 2\]/);
  });
});
