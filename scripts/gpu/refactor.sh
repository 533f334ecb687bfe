#!/usr/bin/env bash
# refactor (issue 11, TypeScript side): is the one-engine lib/ as fast as the two-engine lib/ it replaced, on this
# card, with this binary? And do the GPU tests pass on it?
#   1. the GPU tests (test/gpu) of the lib/ in this tree;
#   2. the bench A/B: the lib/ from before the refactor (build/refactor-ab/before, commit ce42c73) and after it
#      (build/refactor-ab/after, 340597e), both compiled here beforehand, run against the SAME native binary
#      (build/Release/glm4_native.node), alternated before/after/before/after; each run is `glm4-int4 bench` on the
#      synthetic GLM-4-9B INT4 g128 (decode at contexts 128 and 2048, prefill 512 and 2048, batched decode B = 1/4/8,
#      the captured step replayed alone). The bench measures its own copy-bandwidth ceiling in the same run.
# Run from the repo root on the GPU machine after `. .gpu/prelude.sh`, with build/Release (sm_90a), build/refactor-ab
# and dist/ carried. Writes $OUT/refactor.log (everything) and $OUT/refactor.json (the figures). About 4 minutes.
# Expected: after/before within noise (0.97..1.03) on every figure; GPU tests all pass.
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
log="$out/refactor.log"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
since() { echo "$(( $(date +%s) - start )) s"; }
{
  nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.max.sm,clocks.mem --format=csv
  node -e "const m=require('./build/Release/glm4_native.node'); console.log(JSON.stringify(m.buildInfo()))"
  echo "== GPU tests, current lib/ ($(since))"
  timeout 150 npx vitest run --config vitest.gpu.config.ts --reporter=verbose
  echo "gpu tests exit $? ($(since))"
  for round in 1 2; do
    for v in before after; do
      if [[ ! -f build/refactor-ab/$v/dist/cli.js ]]; then echo "build/refactor-ab/$v is missing: not carried"; continue; fi
      echo "== bench $v (lib at $(cat build/refactor-ab/$v/REV)), round $round ($(since))"
      GLM4_NATIVE_PATH="$PWD/build/Release/glm4_native.node" GLM4_NATIVE_CHECK=0 \
        timeout 110 node "build/refactor-ab/$v/dist/cli.js" bench --json --batch 1,4,8 >"$tmp/${v}_$round.json" 2>"$tmp/${v}_$round.err"
      echo "bench $v exit $? ($(since))"
      cat "$tmp/${v}_$round.err"
    done
  done
} >"$log" 2>&1
grep -E "Tests |gpu tests exit|bench .* exit|FAIL|×" "$log" | tail -20
node --input-type=module - "$tmp" "$out/refactor.json" >>"$log" 2>&1 <<'EOF'
import fs from "node:fs";
import path from "node:path";
const [dir, outFile] = process.argv.slice(2);
const median = (xs) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] : null);
const runs = {};
for (const f of fs.readdirSync(dir).filter((f) => f.endsWith(".json"))) {
  try {
    const r = JSON.parse(fs.readFileSync(path.join(dir, f), "utf8"));
    (runs[f.split("_")[0]] ??= []).push(r);
  } catch (e) {
    console.log(`${f}: ${e.message}`);
  }
}
const figures = (r) => ({
  ...Object.fromEntries(r.decode.map((d) => [`decode ctx ${d.context} tok/s`, d.tokensPerSecond])),
  ...Object.fromEntries(r.prefill.map((p) => [`prefill ${p.tokens} tok/s`, p.tokensPerSecond])),
  ...Object.fromEntries((r.batched ?? []).map((b) => [`batched B=${b.batch} tok/s`, b.tokensPerSecond])),
  "step replay ms": r.decodeReplayMs,
  "share of floor ctx 128": r.decode[0]?.shareOfFloor,
});
const per = Object.fromEntries(Object.entries(runs).map(([v, rs]) => [v, rs.map(figures)]));
const keys = [...new Set(Object.values(per).flat().flatMap((f) => Object.keys(f)))];
const table = keys.map((k) => {
  const b = median((per.before ?? []).map((f) => f[k]).filter((x) => x != null));
  const a = median((per.after ?? []).map((f) => f[k]).filter((x) => x != null));
  return { figure: k, before: b, after: a, ratio: a != null && b ? a / b : null, runsBefore: (per.before ?? []).map((f) => f[k]), runsAfter: (per.after ?? []).map((f) => f[k]) };
});
const card = (runs.after ?? runs.before ?? [])[0]?.card ?? "?";
const bw = (runs.after ?? runs.before ?? [])[0]?.copyBandwidthGBs ?? null;
fs.writeFileSync(outFile, JSON.stringify({ card, copyBandwidthGBs: bw, revs: { before: "ce42c73", after: "340597e" }, table, runs }, null, 2) + "\n");
console.log(`\nrefactor A/B on ${card} (copy ${bw ? bw.toFixed(0) : "n/a"} GB/s), medians of the rounds; ratio = after / before`);
console.log("figure                     before      after   ratio");
for (const t of table) console.log(`${t.figure.padEnd(24)} ${t.before == null ? "n/a".padStart(9) : t.before.toFixed(3).padStart(9)} ${t.after == null ? "n/a".padStart(10) : t.after.toFixed(3).padStart(10)} ${t.ratio == null ? "n/a" : t.ratio.toFixed(3).padStart(7)}`);
EOF
tail -12 "$log"
