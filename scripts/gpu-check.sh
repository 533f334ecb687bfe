#!/usr/bin/env bash
# One GPU-machine cycle (run there after `. .gpu/prelude.sh`): addon info, GPU tests, compute-sanitizer on a
# short generation, the bench. Logs and results go to $OUT (or ./gpu-out). Build here first:
#   GLM4_REQUIRE_CUDA=1 GLM4_CUDA_ARCHS=90a-real node scripts/build-native.mjs && npx tsc -p tsconfig.build.json
# then carry .gpu, build and dist.
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
what=${1:-all}
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.mem --format=csv | tee "$out/nvidia-smi.txt"
node -e "const m=require('./build/Release/glm4_native.node'); console.log(JSON.stringify(m.buildInfo()), JSON.stringify(m.devices()))" 2>&1 | tee "$out/buildinfo.txt"
if [[ $what == all || $what == tests ]]; then
  echo "== GPU tests"
  timeout 300 npx vitest run --config vitest.gpu.config.ts --reporter=verbose > "$out/gpu-tests.log" 2>&1
  echo "gpu tests exit $?"
  grep -E "✓|×|Tests|FAIL|passed|failed|\[gpu|\[synthetic" "$out/gpu-tests.log" | tail -80
fi
if [[ $what == all || $what == sanitize ]]; then
  echo "== compute-sanitizer memcheck on a short generation (tiny checkpoint, both paths)"
  timeout 180 compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 node dist/cli.js generate --model fixtures/tiny-glm4/original --prompt "hello" --max-new-tokens 8 --device cuda > "$out/memcheck.log" 2>&1
  echo "memcheck exit $?"; tail -5 "$out/memcheck.log"
  timeout 120 compute-sanitizer --tool racecheck --error-exitcode 9 node dist/cli.js generate --model fixtures/tiny-glm4/original --prompt "hello" --max-new-tokens 4 --device cuda --quantization none > "$out/racecheck.log" 2>&1
  echo "racecheck exit $?"; tail -3 "$out/racecheck.log"
fi
if [[ $what == all || $what == bench ]]; then
  echo "== bench"
  timeout 400 node dist/cli.js bench --save --json ${BENCH_ARGS:-} > "$out/bench.json" 2> "$out/bench.err"
  echo "bench exit $?"; tail -5 "$out/bench.err"
  node --input-type=module -e "import fs from 'node:fs'; import {formatBench} from './dist/cli/bench.js'; process.stdout.write(formatBench(JSON.parse(fs.readFileSync('$out/bench.json','utf8'))))" 2>&1 | tee "$out/bench.txt" || true
  cp bench/results/*.json "$out/" 2>/dev/null || true
fi
