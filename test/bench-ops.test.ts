/**
 * The op perf harness (bench/ops) on the CPU at tiny shapes, so that it cannot rot between GPU runs: every perf case
 * passes its reference check and gets a finite time, the report names every case, and a case whose check fails is
 * reported and not timed. The figures themselves mean nothing here (nothing asserts a time).
 */
import { describe, expect, it } from "vitest";

import { TINY, type PerfCase, perfCases } from "../bench/ops/cases.js";
import { type OpsBenchOptions, formatOpsBench, runOpsBench } from "../bench/ops/run.js";
import { native } from "../lib/engine/native-binary.js";
import { packageRoot } from "../lib/util.js";

const base: OpsBenchOptions = { device: "cpu", dims: TINY, reps: 1, targetMs: 0.2, python: null, root: packageRoot(), log: () => {} };

describe("bench:ops on the CPU (tiny shapes)", () => {
  it("checks and times every case; the report and the JSON carry them all", { timeout: 300_000 }, async () => {
    const r = await runOpsBench(native(), base);
    const bad = r.cases.filter((c) => c.check !== "ok" || c.error).map((c) => `${c.name}: ${c.error ?? c.check}`);
    expect(bad).toEqual([]);
    expect(r.cases.map((c) => c.name)).toEqual(perfCases(TINY).map((c) => c.name));
    for (const c of r.cases) {
      expect(Number.isFinite(c.ms) && c.ms! > 0, c.name).toBe(true);
      expect(c.calls! >= 1 && c.copies === 1, c.name).toBe(true); // no L2 to rotate past on the CPU
      expect(c.bytes > 0, c.name).toBe(true);
    }
    expect(r.ceilings.copyGBs).toBeGreaterThan(0);
    expect(r.opsWithoutCase).toEqual(native().opList().map((o) => o.name).filter((n) => !r.cases.some((c) => c.op === n)));
    expect(r.ceilings.torch.ok).toBe(false); // not on CUDA: no cuBLAS ceiling, and the report says so
    const text = formatOpsBench(r);
    for (const c of r.cases) expect(text).toContain(c.name);
    expect(text).toContain("cuBLAS BF16: none");
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
  });

  it("a case whose reference check fails is reported and not timed", async () => {
    const wrong: PerfCase = {
      ...perfCases(TINY).find((c) => c.op === "add")!,
      name: "add with a wrong reference",
    };
    const setup = wrong.setup;
    wrong.setup = (env) => ({ ...setup(env), check: () => ["out: normalized squared error 1 > 0"] });
    const r = await runOpsBench(native(), { ...base, cases: [wrong] });
    expect(r.cases).toHaveLength(1);
    expect(r.cases[0]).toMatchObject({ check: "out: normalized squared error 1 > 0" });
    expect(r.cases[0].ms).toBeUndefined();
    expect(formatOpsBench(r)).toMatch(/FAILED[\s\S]*## failures[\s\S]*add with a wrong reference: out: normalized/);
  });
});
