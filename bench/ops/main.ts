/**
 * `npm run bench:ops -- [--filter RE] [--device cuda:N|cpu] [--tiny] [--reps N] [--target-ms MS] [--no-torch]
 *                        [--python PATH] [--out DIR | --json FILE] [--render FILE [--brief]]`
 *
 * Every op perf case (bench/ops/cases.ts) checked against the float64 reference, then timed on the device; prints
 * the table and saves bench/results/ops_<card>_<date>.{json,txt} (--out DIR elsewhere; --json FILE writes only
 * the JSON there, after every case, so that a run cut short keeps what it measured). --render FILE turns a saved
 * JSON back into the .json + .txt pair under --out (--brief: only prints one line a case, saves nothing).
 * The addon: GLM4_NATIVE_PATH, else build/Release/glm4_native.node of this checkout.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import type { NativeModule } from "../../lib/engine/native.js";
import { GLM4_9B, TINY } from "./cases.js";
import { type OpsBenchResult, formatOpsBench, formatOpsBrief, runOpsBench } from "./run.js";

/** The checkout's root: the first folder above this file with this package's package.json. */
function repoRoot(): string {
  let d = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const p = path.join(d, "package.json");
    if (existsSync(p) && (JSON.parse(readFileSync(p, "utf8")) as { name?: string }).name === "glm4-int4-native") return d;
    const up = path.dirname(d);
    if (up === d) throw new Error("bench:ops: no glm4-int4-native package.json above " + fileURLToPath(import.meta.url));
    d = up;
  }
}

function save(r: OpsBenchResult, dir: string): string[] {
  mkdirSync(dir, { recursive: true });
  const base = path.join(dir, `ops_${r.card}_${r.date.replace(/[:.]/g, "-")}`);
  writeFileSync(`${base}.json`, JSON.stringify(r, null, 2) + "\n");
  writeFileSync(`${base}.txt`, formatOpsBench(r));
  return [`${base}.json`, `${base}.txt`];
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      filter: { type: "string" },
      device: { type: "string", default: "cuda" },
      tiny: { type: "boolean", default: false },
      reps: { type: "string", default: "5" },
      "target-ms": { type: "string", default: "2" },
      "no-torch": { type: "boolean", default: false },
      python: { type: "string", default: process.env.GLM4_PYTHON ?? "python3" },
      out: { type: "string" },
      json: { type: "string" },
      render: { type: "string" },
      brief: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  const root = repoRoot();
  if (values.help) {
    process.stdout.write(readFileSync(fileURLToPath(import.meta.url), "utf8").split("*/")[0] + "*/\n");
    return 0;
  }
  const outDir = path.resolve(values.out ?? path.join(root, "bench", "results"));
  if (values.render) {
    const r = JSON.parse(readFileSync(values.render, "utf8")) as OpsBenchResult;
    if (values.brief) {
      process.stdout.write(formatOpsBrief(r));
      return 0;
    }
    process.stdout.write(formatOpsBench(r));
    for (const f of save(r, outDir)) console.error(`saved ${f}`);
    return 0;
  }
  const reps = Number(values.reps);
  const targetMs = Number(values["target-ms"]);
  if (!Number.isInteger(reps) || reps < 1 || reps > 100) throw new RangeError(`--reps must be an integer in [1, 100], got ${values.reps}`);
  if (!(targetMs > 0 && targetMs <= 1000)) throw new RangeError(`--target-ms must be in (0, 1000], got ${values["target-ms"]}`);
  if (values.json) mkdirSync(path.dirname(path.resolve(values.json)), { recursive: true });
  const addon = process.env.GLM4_NATIVE_PATH ?? path.join(root, "build", "Release", "glm4_native.node");
  const N = createRequire(import.meta.url)(addon) as NativeModule;
  const r = await runOpsBench(N, {
    device: values.device!,
    dims: values.tiny ? TINY : GLM4_9B,
    filter: values.filter ? new RegExp(values.filter) : undefined,
    reps,
    targetMs,
    python: values["no-torch"] ? null : values.python!,
    root,
    log: (s) => console.error(s),
    onProgress: values.json ? (partial) => writeFileSync(values.json!, JSON.stringify(partial, null, 2) + "\n") : undefined,
  });
  process.stdout.write(formatOpsBench(r));
  if (values.json) {
    writeFileSync(values.json, JSON.stringify(r, null, 2) + "\n");
    console.error(`saved ${values.json}`);
  } else {
    for (const f of save(r, outDir)) console.error(`saved ${f}`);
  }
  return r.cases.some((c) => c.error || c.check !== "ok") ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(`bench:ops: ${(e as Error).stack ?? String(e)}`);
    process.exit(2);
  },
);
