#!/usr/bin/env bash
# GPU run of the gemm2 helper (issues 13/14: INT4 GEMM schedule and plan). Budget: 120 s on an H200.
# Build here first (sm_90a; the lead carries bench/kernels/bin/):
#   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Icsrc -o bench/kernels/bin/gemm_int4_bench bench/kernels/gemm_int4_bench.cu
# Run from the repository root after `. .gpu/prelude.sh`. Writes $OUT/gemm2.log (everything) and $OUT/gemm2.json
# (validation, figures, cuBLAS), prints the table last.
#   1. each variant validated in its own process (fresh inputs, poisoned y, odd M, every group size, NF4, f64
#      samples; a case of whole tiles + K pieces): plan_new (the addon's linear_plan on sm_90a: run 2's winners),
#      plan_old (GLM4_INT4_GEMM_PLAN=old), and the fixed tiles of the plan with choose_sched (r256 t64, r128 t192,
#      r128 t128 WIN 8, r128 t256) for reference;
#   2. the ones that passed, validated again and timed at M = 16, 32, 64, 128, 512, 2048 on the five GLM-4 shapes;
#   3. cuBLAS BF16 through torch on the same shapes and M;
#   4. (budget permitting) the addon's GEMM op cases and linearPath (test/gpu/ops.test.ts), through the new plan;
#   5. the table: plan_new vs plan_old vs cuBLAS per (shape, M).
set -u
OUT=${OUT:-/tmp/gemm2-out}
mkdir -p "$OUT"
TMPD=$(mktemp -d)
BIN=bench/kernels/bin/gemm_int4_bench
VARIANTS="plan_new plan_old wgmma_r256_t64_sk wgmma_r128_t192_sk wgmma_r128_t128_w8_sk wgmma_r128_t256_sk"
MS=16,32,64,128,512,2048
{
  echo "== gemm2.sh $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader || true
  if [ ! -x "$BIN" ]; then
    echo "building $BIN"
    mkdir -p bench/kernels/bin
    timeout 100 nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Icsrc -o "$BIN" bench/kernels/gemm_int4_bench.cu
  fi
  ok=""
  bad=""
  for v in $VARIANTS; do
    if [ "$SECONDS" -gt 45 ]; then bad="$bad,$v"; echo "$v: not validated (budget)"; continue; fi
    if timeout 12 "$BIN" --variants "$v" --validate-only > "$TMPD/val.txt" 2>&1; then ok="$ok,$v"; else bad="$bad,$v"; fi
    grep -E "^$v|f64|error|FAILED" "$TMPD/val.txt" | head -4
  done
  echo "validated in separate processes: ok=[${ok#,}] failed=[${bad#,}]"
  echo "[\"${bad#,}\"]" | sed 's/,/","/g' > "$TMPD/failed.json"
  if [ -n "$ok" ]; then
    left=$(( 80 - SECONDS )); [ "$left" -lt 15 ] && left=15
    timeout "$left" "$BIN" --variants "${ok#,}" --ms "$MS" --json "$TMPD/kernels.json"
    echo "harness exit: $?"
  fi
  left=$(( 105 - SECONDS )); [ "$left" -lt 15 ] && left=15
  timeout "$left" python3 scripts/gpu/gemm_cublas.py "$TMPD/cublas.json" "$MS"
  echo "cublas exit: $?"
  if [ "$SECONDS" -lt 90 ] && [ -f build/Release/glm4_native.node ]; then
    timeout $(( 118 - SECONDS )) npx vitest run --config vitest.gpu.config.ts test/gpu/ops.test.ts -t "GEMM|linearPath" 2>&1 | grep -E "✓|✗|×|FAIL|passed|failed|skipped|Error" | head -30
  else
    echo "(op-table GEMM cases skipped: $SECONDS s used, or no addon binary)"
  fi
  python3 scripts/gpu/gemm2_summary.py "$TMPD/kernels.json" "$TMPD/cublas.json" "$OUT/gemm2.json" "$TMPD/failed.json"
} 2>&1 | tee "$OUT/gemm2.log"
rm -rf "$TMPD"
