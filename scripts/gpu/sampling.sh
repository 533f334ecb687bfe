#!/usr/bin/env bash
# GPU run for the sampling kernels (issue 12 sampling point, batched sampling of issue 14). Budget: 60 s on an
# H200. The lead runs it from the repository root after `. .gpu/prelude.sh`, with build/Release/glm4_native.node
# (sm_90a) built here and carried. Writes $OUT/sampling.log (everything) and $OUT/sampling.json (validation and
# figures); prints the table last.
#   1. validation: every variant (GLM4_SAMPLING_BLOCKS = auto, single, 4, 8) x setting x B = 1, 8, 64 rows of
#      151552 logits against the CPU backend's picks on the same inputs ("FAIL" lines name the rows).
#   2. copy bandwidth (the ceiling: reading B rows at that rate is the "read@copy" column).
#   3. time per call: graph replay of 20 calls (device time), and profile() of the op (with its launch cost).
# `scripts/gpu/sampling.sh tests` also runs the sample/argmax cases of the GPU op table (all variants; ~60 s more).
set -u
OUT=${OUT:-/tmp/sampling-out}
mkdir -p "$OUT"
{
  echo "== sampling.sh $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader || true
  timeout 75 node scripts/gpu/sampling.mjs
  echo "sampling.mjs exit: $?"
  if [ "${1:-}" = tests ]; then
    timeout 240 npx vitest run --config vitest.gpu.config.ts test/gpu/ops.test.ts -t "sample|argmax" 2>&1 | grep -E "✓|×|Test Files|Tests|FAIL" | tail -60
  fi
} 2>&1 | tee "$OUT/sampling.log"
