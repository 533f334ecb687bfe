#!/usr/bin/env bash
# core (issue 11): the op perf harness on the GPU (bench/ops: `npm run bench:ops`). Every op at the GLM-4-9B shapes
# (decode M = 1..8, prefill M = 512 / 2048, attention at contexts 512 / 4096 / 32768 and B = 8, sampling, the load-time
# ops) is checked against the float64 reference on sampled rows, then timed as a CUDA graph of back-to-back calls
# (cold weight / KV copies rotated past L2), against the ceilings measured in the same run: this harness's device copy
# bandwidth, cuBLAS BF16 and SDPA on the same shapes through torch.
# Run from the repo root on the GPU machine after `. .gpu/prelude.sh`, with build/Release (sm_90a) and dist/ carried
# (and build/bench-ops if built here: `npx tsc -p bench/ops/tsconfig.json`; else it is compiled here, ~10 s).
# Writes $OUT/core.log (everything) and $OUT/core.json (the figures; saved after every case). Budget: 90 s.
# To commit the figures: node build/bench-ops/bench/ops/main.js --render core.json  (-> bench/results/ops_<card>_<date>.{json,txt})
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
log="$out/core.log"
start=$(date +%s)
{
  nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.max.sm,clocks.mem --format=csv
  if [[ ! -f build/bench-ops/bench/ops/main.js ]]; then
    echo "== compiling bench/ops (tsc)"
    timeout 40 npx tsc -p bench/ops/tsconfig.json || echo "tsc exit $?"
  fi
  echo "== bench:ops ($(( $(date +%s) - start )) s)"
  left=$(( 86 - ($(date +%s) - start) ))
  timeout "$left" node build/bench-ops/bench/ops/main.js --json "$out/core.json" ${CORE_ARGS:-}
  echo "bench:ops exit $? ($(( $(date +%s) - start )) s)"
} > "$log" 2>&1
grep -E "CHECK FAILED|ERROR|exit|ceiling" "$log" | tail -20
# last: one line a case (time, share of its ceiling)
[[ -f "$out/core.json" ]] && node build/bench-ops/bench/ops/main.js --render "$out/core.json" --brief
