#!/usr/bin/env bash
# The attention helper's GPU run (issues 12, 13, 14; budget 120 s on the H200). From the repo root, after
# `. .gpu/prelude.sh`, with build/Release/glm4_native.node (sm_90a) and bench/kernels/bin/attention_bench built
# here and carried (build the harness with: bash scripts/gpu/attention.sh --build-only).
#   1. the op on cuda: the attention cases of the op table (float64 reference, poisoned outputs, paged == contiguous,
#      a batch == each sequence alone) and the block-table bit-identity tests (test/gpu/ops.test.ts);
#   2. the kernel harness: every variant validated (float64, poisoned outputs, repeated launches bit-identical), then
#      decode timed at B = 1, 32 and contexts 128 .. 32K (GB/s on the cache, share of the copy bandwidth measured in
#      the same run) and prefill at T = 2K, 8K, 32K (TFLOP/s);
#   3. torch scaled_dot_product_attention on the same shapes (enable_gqa and repeated KV).
# Writes $OUT/attention.log (everything) and $OUT/attention.json (figures); prints a short table last.
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=bench/kernels/bin/attention_bench
build() { nvcc -std=c++17 -O3 -lineinfo -gencode=arch=compute_90a,code=sm_90a -Icsrc bench/kernels/attention_bench.cu -o "$bin"; }
if [[ ${1:-} == --build-only ]]; then mkdir -p "$(dirname "$bin")" && build && echo "built $bin"; exit $?; fi
out=${OUT:-gpu-out}
mkdir -p "$out"
log="$out/attention.log"
tmp=$(mktemp -d)
start=$SECONDS
{
  nvidia-smi --query-gpu=name,memory.used,clocks.sm,clocks.mem --format=csv
  echo "== 1. op tests on cuda: block-table bit-identity, then the attention cases of the op table"
  timeout 25 npx vitest run --config vitest.gpu.config.ts test/gpu/ops.test.ts -t "bit-identical to a contiguous" --reporter=verbose 2>&1 \
    | grep -vE "^\s*$|↓|skipped" | tail -12
  echo "bit-identity tests exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
  timeout 40 npx vitest run --config vitest.gpu.config.ts test/gpu/ops.test.ts -t "attention\(" --reporter=verbose 2>&1 \
    | grep -vE "^\s*$|↓|skipped" | tail -60
  echo "op tests exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
  echo "== 2. kernel harness"
  if [[ ! -x $bin ]]; then mkdir -p "$(dirname "$bin")"; timeout 100 build || echo "harness build failed"; fi
  if command -v cuobjdump >/dev/null; then
    cuobjdump --dump-sass "$bin" > "$tmp/sass.txt" 2>/dev/null
    echo "SASS: HMMA $(grep -c HMMA "$tmp/sass.txt"), LDSM $(grep -c LDSM "$tmp/sass.txt"), LDGSTS $(grep -c LDGSTS "$tmp/sass.txt"), local loads LDL $(grep -c 'LDL' "$tmp/sass.txt")"
    awk '/Function : /{f=$3} /HMMA/{c[f]++} END{for(k in c) print "  HMMA in", k, c[k]}' "$tmp/sass.txt" | head -20
  fi
  # A kernel fault kills the process: rerun without the variant that was running (its "@variant" line), twice at most.
  skip=""
  for attempt in 1 2 3; do
    left=$((100 - (SECONDS - start)))
    (( left < 15 )) && { echo "no time left for the harness"; break; }
    quick=""
    (( left < 55 )) && quick="--quick"
    timeout $(( left < 50 ? left : 50 )) "$bin" $quick --json "$tmp/kernels.jsonl" ${skip:+--skip $skip} | tee "$tmp/harness.out"
    rc=${PIPESTATUS[0]}
    echo "harness exit $rc (attempt $attempt${skip:+, skipping $skip}) after $((SECONDS - start)) s"
    (( rc == 0 || rc == 1 )) && break
    bad=$(grep "^@variant" "$tmp/harness.out" | tail -1 | awk '{print $2}')
    [[ -z $bad ]] && break
    echo "variant $bad crashed or hung: rerunning without it"
    skip=${skip:+$skip,}$bad
  done
  echo "== 3. torch SDPA peers"
  quick=""
  (( SECONDS - start > 95 )) && quick="--quick"
  timeout $(( SECONDS - start > 100 ? 12 : 20 )) python3 scripts/gpu/attention_torch.py $quick --json "$tmp/torch.jsonl"
  echo "torch exit $? after $((SECONDS - start)) s"
} > "$log" 2>&1
python3 - "$tmp" "$out/attention.json" <<'PY' | tee -a "$log"
import json, os, sys
tmp, dst = sys.argv[1], sys.argv[2]
rows = []
for f in ("kernels.jsonl", "torch.jsonl"):
    p = os.path.join(tmp, f)
    if os.path.exists(p):
        rows += [json.loads(l) for l in open(p) if l.strip()]
json.dump(rows, open(dst, "w"), indent=1)
dev = next((r for r in rows if r["kind"] == "device"), {})
bad = [r for r in rows if r["kind"] == "validate" and not r["ok"]]
print(f"\n== attention summary ({dev.get('name', '?')}, copy {dev.get('copy_gbs', 0):.0f} GB/s); validation failures: {len(bad)}")
for r in bad:
    print(f"  FAIL {r['case']} / {r['variant']}: err {r['err']}")
print(f"{'decode':<14}{'best variant':<30}{'us':>9}{'GB/s':>8}{'share':>7}{'default us':>11}{'torch us':>10}")
keys = sorted({(r["B"], r["ctx"]) for r in rows if r["kind"] == "decode"})
for B, ctx in keys:
    ours = [r for r in rows if r["kind"] == "decode" and r["B"] == B and r["ctx"] == ctx]
    best = min(ours, key=lambda r: r["us"])
    dflt = next((r for r in ours if "default" in r["variant"]), best)
    th = [r["us"] for r in rows if r["kind"] == "torch_decode" and r["B"] == B and r["ctx"] == ctx]
    print(f"B={B:<3}ctx={ctx:<6} {best['variant']:<30}{best['us']:9.2f}{best['gbs']:8.0f}{100*best['share']:6.1f}%{dflt['us']:11.2f}{(min(th) if th else float('nan')):10.2f}")
print(f"{'prefill':<14}{'best variant':<30}{'ms':>9}{'TFLOP/s':>9}{'torch TFLOP/s':>15}")
for T in sorted({r["T"] for r in rows if r["kind"] == "prefill"}):
    ours = [r for r in rows if r["kind"] == "prefill" and r["T"] == T]
    best = max(ours, key=lambda r: r["tflops"])
    th = [r["tflops"] for r in rows if r["kind"] == "torch_prefill" and r["T"] == T]
    print(f"T={T:<12} {best['variant']:<30}{best['ms']:9.3f}{best['tflops']:9.1f}{(max(th) if th else float('nan')):15.1f}")
PY
grep -E "bit-identity tests exit|op tests exit|harness exit|torch exit|Tests " "$log" | tail -8
rm -rf "$tmp"
