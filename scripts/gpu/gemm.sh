#!/usr/bin/env bash
# GPU run for the INT4 x BF16 tensor-core GEMMs (issue 13 GEMM, small M of issue 14). Budget: 150 s on an H200.
# The lead runs it from the repository root after `. .gpu/prelude.sh`, with bench/kernels/bin/gemm_int4_bench
# built here (sm_90a; see bench/kernels/gemm_int4_bench.cu) and carried; it is rebuilt there when missing.
# Writes $OUT/gemm.log (everything) and $OUT/gemm.json (validation, figures, cuBLAS), prints the table last.
#   1. SASS: the wgmma kernels must show HGMMA (else they run a slower path or nothing).
#   2. gemm_int4_bench: validates each variant in its own process (fresh inputs, poisoned output, odd M, every
#      group size, f64 samples), then in one process validates the ones that passed again (all cases), measures
#      the copy bandwidth and times them at M = 16..2048 (8192 for gate_up).
#   3. cuBLAS BF16 through torch on the same shapes.
#   4. (budget permitting) the op table's GEMM cases and linearPath through the addon (test/gpu/ops.test.ts).
#   5. the summary table: best variant per (shape, M), its share of cuBLAS, time over the INT4 weight read.
set -u
OUT=${OUT:-/tmp/gemm-out}
mkdir -p "$OUT"
TMPD=$(mktemp -d)
BIN=bench/kernels/bin/gemm_int4_bench
{
  echo "== gemm.sh $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader || true
  if [ ! -x "$BIN" ]; then
    echo "building $BIN"
    mkdir -p bench/kernels/bin
    timeout 150 nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Icsrc -o "$BIN" bench/kernels/gemm_int4_bench.cu
  fi
  if command -v cuobjdump >/dev/null; then
    cuobjdump --dump-sass "$BIN" > "$TMPD/sass.txt" 2>/dev/null
    echo "SASS: HGMMA instructions: $(grep -c HGMMA "$TMPD/sass.txt"), HMMA: $(grep -c 'HMMA' "$TMPD/sass.txt"), local loads (LDL): $(grep -c 'LDL' "$TMPD/sass.txt"), UTMALDG: $(grep -c UTMALDG "$TMPD/sass.txt")"
    awk '/Function : /{f=$3} /HGMMA/{c[f]++} END{for(k in c) print "  HGMMA in", k, c[k]}' "$TMPD/sass.txt" | head -20
  fi
  # each variant validated in its own process: a fault (sticky CUDA error) or a hang cannot take the others down
  ok=""
  bad=""
  for v in $("$BIN" --list); do
    if [ "$SECONDS" -gt 70 ]; then bad="$bad,$v"; echo "$v: not validated (budget)"; continue; fi
    if timeout 15 "$BIN" --variants "$v" --validate-only > "$TMPD/val.txt" 2>&1; then ok="$ok,$v"; else bad="$bad,$v"; fi
    grep -E "^$v|f64|error" "$TMPD/val.txt" | head -4
  done
  echo "validated in separate processes: ok=[${ok#,}] failed=[${bad#,}]"
  echo "[\"${bad#,}\"]" | sed 's/,/","/g' > "$TMPD/failed.json"
  if [ -n "$ok" ]; then
    left=$(( 120 - SECONDS )); [ "$left" -lt 20 ] && left=20
    timeout "$left" "$BIN" --variants "${ok#,}" --json "$TMPD/kernels.json"
    echo "harness exit: $?"
  fi
  left=$(( 150 - SECONDS )); [ "$left" -lt 25 ] && left=25
  timeout "$left" python3 scripts/gpu/gemm_cublas.py "$TMPD/cublas.json"
  echo "cublas exit: $?"
  # the addon's path (dispatch conversion to bf16, linear_plan, the kernels through matmul_int4) on the op cases,
  # when the budget allows (needs build/Release/glm4_native.node with sm_90a)
  if [ "$SECONDS" -lt 105 ] && [ -f build/Release/glm4_native.node ]; then
    timeout 40 npx vitest run --config vitest.gpu.config.ts test/gpu/ops.test.ts -t "GEMM|linearPath" 2>&1 | grep -E "✓|✗|×|FAIL|passed|failed|skipped|Error" | head -30
  else
    echo "(op-table GEMM cases skipped: $SECONDS s used, or no addon binary)"
  fi
  python3 scripts/gpu/gemm_summary.py "$TMPD/kernels.json" "$TMPD/cublas.json" "$OUT/gemm.json" "$TMPD/failed.json"
} 2>&1 | tee "$OUT/gemm.log"
rm -rf "$TMPD"
