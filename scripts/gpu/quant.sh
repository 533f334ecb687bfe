#!/usr/bin/env bash
# quant (issue 15) on the GPU: do the quantization settings run through the fast kernels, and what do they cost?
#   1. GPU tests: test/gpu/quant.test.ts (sym, NF4, output layer bf16, AWQ checkpoints on cuda vs the CPU backend;
#      quantize on cuda == on the CPU byte for byte; eval on cuda == on the CPU) and the op cases of quantize_int4
#      (every scheme, column factors) and of the NF4 kernels in test/gpu/ops.test.ts;
#   2. eval on the synthetic GLM-4-9B (random weights, 2 windows of 512 random tokens): BF16 and 4 INT4 settings
#      side by side in one process; its time says what the host statistics cost next to the forward passes;
#   3. the bench's decode and prefill speed for each setting (bench --quant SETTING, short runs).
# Run from the repo root on the GPU machine after `. .gpu/prelude.sh`, with build/Release (sm_90a) and dist/ carried.
# Writes $OUT/quant.log (everything) and $OUT/quant.json (eval report + one bench summary per setting). ~6 minutes.
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
log="$out/quant.log"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
since() { echo "$(( $(date +%s) - start )) s"; }
SETTINGS="asym-g128 sym-g128 nf4-g128 nf4-g64 asym-g128-out-bf16"
{
  nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.max.sm --format=csv
  echo "== GPU tests: test/gpu/quant.test.ts ($(since))"
  timeout 200 npx vitest run --config vitest.gpu.config.ts --reporter=verbose test/gpu/quant.test.ts
  echo "quant tests exit $? ($(since))"
  echo "== GPU op cases: quantize_int4 and NF4 ($(since))"
  timeout 100 npx vitest run --config vitest.gpu.config.ts --reporter=verbose test/gpu/ops.test.ts -t "quantize_int4|nf4"
  echo "op cases exit $? ($(since))"
  echo "== eval, synthetic GLM-4-9B ($(since))"
  timeout 150 node dist/cli.js eval --synthetic glm-4-9b --tokens 1024 --context 512 \
    --settings asym-g128,sym-g128,nf4-g64,asym-g32-out-bf16 --device cuda --json "$tmp/eval.json"
  echo "eval exit $? ($(since))"
  for q in $SETTINGS; do
    echo "== bench --quant $q ($(since))"
    timeout 70 node dist/cli.js bench --quant "$q" --contexts 128,2048 --prefills 512 --new-tokens 64 --runs 2 --batch 1,8 --json >"$tmp/bench_$q.json" 2>"$tmp/bench_$q.err"
    echo "bench $q exit $? ($(since))"
    cat "$tmp/bench_$q.err"
  done
} >"$log" 2>&1
node --input-type=module - "$tmp" "$out/quant.json" $SETTINGS >>"$log" 2>&1 <<'JS'
import fs from "node:fs";
import path from "node:path";
const [dir, outFile, ...settings] = process.argv.slice(2);
const read = (f) => { try { return JSON.parse(fs.readFileSync(path.join(dir, f), "utf8")); } catch (e) { return { error: String(e.message) }; } };
const res = { eval: read("eval.json"), bench: {} };
for (const q of settings) res.bench[q] = read(`bench_${q}.json`);
fs.writeFileSync(outFile, JSON.stringify(res, null, 2) + "\n");
for (const q of settings) {
  const b = res.bench[q];
  if (!b.decode) { console.log(`bench ${q}: ${b.error ?? "no result"}`); continue; }
  const d = b.decode.map((x) => `ctx ${x.context}: ${x.tokensPerSecond.toFixed(1)} tok/s (${x.shareOfFloor === null ? "?" : (100 * x.shareOfFloor).toFixed(1)} % of floor, ${(x.bytesPerToken / 1e9).toFixed(2)} GB/token)`).join("; ");
  const p = b.prefill.map((x) => `prefill ${x.tokens}: ${x.tokensPerSecond.toFixed(0)} tok/s`).join("; ");
  console.log(`bench ${q}: ${d}; ${p}; weights ${(b.memory.weightsBytes / 2 ** 30).toFixed(2)} GiB; step ${b.decodeStepMs.toFixed(3)} ms`);
}
if (res.eval.results) for (const r of res.eval.results) console.log(`eval ${r.label}: PPL ratio ${r.pplRatio.toFixed(4)} KL mean ${r.klMean.toExponential(3)} p99 ${r.klP99.toExponential(3)} same top ${(100 * r.sameTop).toFixed(2)} % (${res.eval.seconds.toFixed(1)} s in all)`);
JS
grep -E "Tests |tests exit|cases exit|eval exit|bench .* exit|FAIL|×|^bench |^eval " "$log" | tail -30
