/**
 * lib/ has no import cycle (dependency-cruiser, with the rules of .dependency-cruiser.cjs; type-only imports
 * count). A cycle fails here with the modules that form it.
 */
import { createRequire } from "node:module";
import path from "node:path";
import { cruise, type IReporterOutput } from "dependency-cruiser";
import { expect, it } from "vitest";

const ROOT = path.resolve(import.meta.dirname, "..");

it("lib/ has no import cycle (dependency-cruiser)", async () => {
  const config = createRequire(import.meta.url)(path.join(ROOT, ".dependency-cruiser.cjs")) as { forbidden: unknown[]; options: Record<string, unknown> };
  const cwd = process.cwd();
  process.chdir(ROOT); // the config names tsconfig.json relative to the root
  let out: IReporterOutput;
  try {
    out = await cruise(["lib"], { ...config.options, validate: true, ruleSet: { forbidden: config.forbidden } } as never);
  } finally {
    process.chdir(cwd);
  }
  const result = out.output as Exclude<IReporterOutput["output"], string>;
  expect(result.summary.totalCruised).toBeGreaterThan(40); // it really read lib/
  const cycles = result.summary.violations.map((v) => [v.from, ...(v.cycle ?? []).map((c) => c.name)].join(" -> "));
  expect(cycles).toEqual([]);
}, 300_000); // room for a loaded machine
