#!/usr/bin/env bash
# GPU run of the smallm helper (issue 14: the wgmma INT4 GEMM at M = 17..64, batched decode). Budget: 120 s, H200.
# Build here first (sm_90a; carry bench/kernels/bin/, and for steps 4-5 build/Release/ and dist/):
#   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Icsrc -o bench/kernels/bin/gemm_int4_bench bench/kernels/gemm_int4_bench.cu
# Run from the repository root after `. .gpu/prelude.sh`:  bash scripts/gpu/smallm.sh
# Writes $OUT/smallm.log (everything), $OUT/smallm.json (validation + figures), $OUT/sass_*.txt; table LAST.
#   1. SASS of two kernels (r256 t64 as planned today, and its 2-accumulator twin): HGMMA / WARPGROUP.DEPBAR /
#      WARPGROUP.ARRIVE counts (a wgmma serialized by ptxas shows a DEPBAR after every HGMMA);
#   2. each non-probe variant validated in its own process (poisoned y, odd M 9/17/33/47/63/118/2049, G 32/64/128,
#      bias, NF4, f64 samples, the real shapes' K pieces): a fault or hang loses that variant only;
#   3. the ones that passed + the probes, validated again (quick cases) and timed at M = 16, 32, 48, 64 on the
#      five GLM-4 shapes (weights rotated over copies so that L2 does not serve them);
#   4. (after 5, budget permitting) the addon's matmul_int4 op cases + linearPath (test/gpu/ops.test.ts) with the plan;
#   5. the decode step graph (synthetic GLM-4-9B, context 128) at B = 32 / 64 replayed: the plan (smallm's), main's
#      v3 (GLM4_INT4_GEMM_PLAN=v3), swapdq and swap256 forced at M = 17..64 (GLM4_INT4_GEMM_SMALL=21 / 20) if they
#      validated;
#   6. the table: per (shape, M) the plan vs every variant (us), x of the weight read at the copy rate and of bf16
#      at 790 TFLOP/s; the probes' k-step split; the step times.
set -u
OUT=${OUT:-/tmp/smallm-out}
mkdir -p "$OUT"
TMPD=$(mktemp -d)
BIN=bench/kernels/bin/gemm_int4_bench
VALIDATE="plan_new plan_v3 wgmma_r256_t64_sk c2_r128_t64_sk c2_r128_t32_sk wg4_r256_t64_sk wg4_r256_t32_sk swap_r256_t64_sk swap256_r256_t64_sk swapdq_r256_t64_sk la_r256_t64_sk la_wg4_r256_t64_sk la_c2_r128_t64_sk la_wg4_r256_t32_sk la_c2_r128_t32_sk"
PROBES="probe_swap_nofence_sk probe_swap_nobar_sk probe_swap_nosts_sk probe_swap_r256_t64_sk probe_nomma_r256_t64_sk probe_ss_r256_t64_sk"
{
  echo "== smallm.sh $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null)"
  timeout 5 nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.sm,memory.total --format=csv,noheader || true
  if [ ! -x "$BIN" ]; then
    echo "building $BIN"
    mkdir -p bench/kernels/bin
    timeout 100 nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Icsrc -o "$BIN" bench/kernels/gemm_int4_bench.cu
  fi
  if command -v cuobjdump >/dev/null; then
    timeout 20 cuobjdump -sass "$BIN" > "$TMPD/sass.txt" 2>/dev/null
    for pat in "Sm90CfgILi2ELi64ELi12ELb1ELi4ELi2ELi1ELi1ELi0E" "Sm90CfgILi2ELi64ELi12ELb1ELi4ELi2ELi1ELi2ELi0E"; do
      awk -v p="$pat" '/Function : /{on = (index($0, p) > 0 && index($0, "sm90_kernel") > 0)} on' "$TMPD/sass.txt" > "$OUT/sass_$pat.txt"
      echo "SASS $pat: $(wc -l < "$OUT/sass_$pat.txt") lines, HGMMA $(grep -c HGMMA "$OUT/sass_$pat.txt"), WARPGROUP.DEPBAR $(grep -c 'WARPGROUP.DEPBAR' "$OUT/sass_$pat.txt"), WARPGROUP.ARRIVE $(grep -c 'WARPGROUP.ARRIVE' "$OUT/sass_$pat.txt"), LDL $(grep -c LDL "$OUT/sass_$pat.txt")"
      grep -E "HGMMA|WARPGROUP|SYNCS|LDS" "$OUT/sass_$pat.txt" | head -60 > "$OUT/sass_${pat}_mainloop.txt"
    done
  else
    echo "(no cuobjdump: SASS step skipped)"
  fi
  ok=""
  bad=""
  for v in $VALIDATE; do
    if [ "$SECONDS" -gt 55 ]; then bad="$bad,$v"; echo "$v: not validated (budget)"; continue; fi
    timeout 10 "$BIN" --variants "$v" --validate-only > "$TMPD/val_$v.txt" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then ok="$ok,$v"; else bad="$bad,$v"; echo "$v: exit $rc"; fi
    grep -E "^$v|f64|error|FAILED" "$TMPD/val_$v.txt" | head -3
  done
  echo "validated in separate processes ($SECONDS s): ok=[${ok#,}] failed=[${bad#,}]"
  echo "[\"${bad#,}\"]" | sed 's/,/","/g' > "$TMPD/failed.json"
  sel="${ok#,}"
  for p in $PROBES; do sel="$sel,$p"; done
  left=$(( 92 - SECONDS )); [ "$left" -lt 15 ] && left=15
  timeout "$left" "$BIN" --quick --variants "${sel#,}" --ms 16,32,48,64 --json "$TMPD/kernels.json"
  echo "harness exit: $? ($SECONDS s)"
  # the decode step graph at B = 32 / 64 with the plan, then with each candidate forced at M = 17..64 (only those
  # whose harness variant validated above): ms a step, tok/s
  : > "$TMPD/steps.txt"
  for pair in ":plan_new" "v3:plan_v3" "21:swapdq_r256_t64_sk" "20:swap256_r256_t64_sk"; do
    small=${pair%%:*}; var=${pair#*:}
    case ",${ok#,}," in *",$var,"*) ;; *) echo "(step with GLM4_INT4_GEMM_SMALL=$small skipped: $var not validated)"; continue ;; esac
    if [ "$SECONDS" -lt 90 ] && [ -f build/Release/glm4_native.node ] && [ -f dist/index.js ]; then
      if [ "$small" = v3 ]; then pl=v3; small=""; else pl=""; fi
      GLM4_INT4_GEMM_PLAN=$pl GLM4_INT4_GEMM_SMALL=$small timeout 15 node scripts/gpu/smallm-step.mjs 2>&1 | grep -E "STEP|Error|error" | head -4 | tee -a "$TMPD/steps.txt"
    else
      echo "(step with GLM4_INT4_GEMM_SMALL=${small:-unset} skipped: $SECONDS s used, or no addon / dist)"
    fi
  done
  # the addon's op cases (M = 9..2049, GEMM at 17/33/40/64 rows) with the plan, then with candidates forced at 17..64
  for small in ""; do
    if [ "$SECONDS" -lt 100 ] && [ -f build/Release/glm4_native.node ]; then
      echo "-- ops.test matmul_int4|linearPath, GLM4_INT4_GEMM_SMALL=${small:-unset} ($SECONDS s)"
      GLM4_INT4_GEMM_SMALL=$small timeout $(( 117 - SECONDS )) npx vitest run --config vitest.gpu.config.ts test/gpu/ops.test.ts -t "matmul_int4|linearPath" > "$TMPD/ops.txt" 2>&1
      echo "   exit $?"; grep -E "✗|×|FAIL|Tests |Error" "$TMPD/ops.txt" | head -12
    else
      echo "(op cases GLM4_INT4_GEMM_SMALL=${small:-unset} skipped: $SECONDS s used, or no addon binary)"
    fi
  done
  python3 scripts/gpu/smallm_summary.py "$TMPD/kernels.json" "$OUT/smallm.json" "$TMPD/failed.json" "$TMPD/steps.txt"
} 2>&1 | tee "$OUT/smallm.log"
rm -rf "$TMPD"
