#!/usr/bin/env bash
# The attention2 helper's GPU run (issues 12, 13, 14, phase 2; budget 120 s on the H200). From the repo root, after
# `. .gpu/prelude.sh`, with build/Release/glm4_native.node (sm_90a), dist/ and the harness built here and carried:
#   nvcc -std=c++17 -O3 -lineinfo -gencode=arch=compute_90a,code=sm_90a -Icsrc bench/kernels/attention_bench.cu \
#        -o bench/kernels/bin/attention_bench          (or: bash scripts/gpu/attention2.sh --build-only)
# What it checks, in order:
#   1. the op on cuda with the new defaults (prefill2_kernel, decode m256 p64 s3, the split-K workspace whose ticket
#      area no longer moves with the shapes): the attention cases of the op table and the block-table bit-identity
#      tests (test/gpu/ops.test.ts);
#   2. the kernel harness: every variant validated against float64 (poisoned outputs, repeated launches bit-identical,
#      B = 32 decode on a workspace reused from other shapes: run2's failure), then decode timed at B = 1, 32 and
#      contexts 128 .. 32K, prefill at T = 2K, 8K, 32K, for every variant ("(default)" = plan_attention's defaults,
#      "(old)" = GLM4_ATTN_PLAN=old, the configuration of run2);
#   3. torch scaled_dot_product_attention on the same shapes (the peers).
# Writes $OUT/attention2.log (everything) and $OUT/attention2.json (figures); prints a short table last.
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=bench/kernels/bin/attention_bench
build() { nvcc -std=c++17 -O3 -lineinfo -gencode=arch=compute_90a,code=sm_90a -Icsrc bench/kernels/attention_bench.cu -o "$bin"; }
if [[ ${1:-} == --build-only ]]; then mkdir -p "$(dirname "$bin")" && build && echo "built $bin"; exit $?; fi
out=${OUT:-gpu-out}
mkdir -p "$out"
log="$out/attention2.log"
tmp=$(mktemp -d)
start=$SECONDS
{
  nvidia-smi --query-gpu=name,memory.used,clocks.sm,clocks.mem --format=csv
  echo "== 1. op tests on cuda (new defaults): block-table bit-identity, then the attention cases of the op table"
  timeout 25 npx vitest run --config vitest.gpu.config.ts test/gpu/ops.test.ts -t "bit-identical to a contiguous" --reporter=verbose 2>&1 \
    | grep -vE "^\s*$|↓|skipped" | tail -12
  echo "bit-identity tests exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
  timeout 40 npx vitest run --config vitest.gpu.config.ts test/gpu/ops.test.ts -t "attention\(" --reporter=verbose 2>&1 \
    | grep -vE "^\s*$|↓|skipped" | tail -60
  echo "op tests exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
  echo "== 2. kernel harness"
  if [[ ! -x $bin ]]; then mkdir -p "$(dirname "$bin")"; timeout 150 build || echo "harness build failed"; fi
  if command -v cuobjdump >/dev/null; then
    cuobjdump --dump-sass "$bin" > "$tmp/sass.txt" 2>/dev/null
    echo "SASS: HMMA $(grep -c HMMA "$tmp/sass.txt"), LDSM $(grep -c LDSM "$tmp/sass.txt"), LDGSTS $(grep -c LDGSTS "$tmp/sass.txt"), local loads LDL $(grep -c 'LDL' "$tmp/sass.txt")"
  fi
  # A kernel fault kills the process: rerun without the variant that was running (its "@variant" line), twice at most.
  skip=""
  for attempt in 1 2 3; do
    left=$((95 - (SECONDS - start)))
    (( left < 15 )) && { echo "no time left for the harness"; break; }
    quick=""
    (( left < 55 )) && quick="--quick"
    timeout $(( left < 65 ? left : 65 )) "$bin" $quick --json "$tmp/kernels.jsonl" ${skip:+--skip $skip} | tee "$tmp/harness.out"
    rc=${PIPESTATUS[0]}
    echo "harness exit $rc (attempt $attempt${skip:+, skipping $skip}) after $((SECONDS - start)) s (1 = a validation failed, see FAIL lines)"
    (( rc == 0 || rc == 1 )) && break
    bad=$(grep "^@variant" "$tmp/harness.out" | tail -1 | awk '{print $2}')
    [[ -z $bad ]] && break
    echo "variant $bad crashed or hung: rerunning without it"
    skip=${skip:+$skip,}$bad
  done
  echo "== 3. torch SDPA peers"
  left=$((112 - (SECONDS - start)))
  if (( left >= 8 )); then
    quick=""
    (( left < 14 )) && quick="--quick"
    timeout "$left" python3 scripts/gpu/attention_torch.py $quick --json "$tmp/torch.jsonl"
    echo "torch exit $? after $((SECONDS - start)) s"
  else
    echo "torch skipped (no time left; run2 has the peers)"
  fi
} > "$log" 2>&1
python3 - "$tmp" "$out/attention2.json" <<'PY' | tee -a "$log"
import json, os, sys
tmp, dst = sys.argv[1], sys.argv[2]
rows = []
for f in ("kernels.jsonl", "torch.jsonl"):
    p = os.path.join(tmp, f)
    if os.path.exists(p):
        for l in open(p):
            try:
                if l.strip(): rows.append(json.loads(l))
            except ValueError:
                print("unreadable JSON line:", l.strip())
json.dump(rows, open(dst, "w"), indent=1)
dev = next((r for r in rows if r["kind"] == "device"), {})
bad = [r for r in rows if r["kind"] == "validate" and not r["ok"]]
print(f"\n== attention2 summary ({dev.get('name', '?')}, copy {dev.get('copy_gbs', 0):.0f} GB/s); validation failures: {len(bad)}")
for r in bad:
    print(f"  FAIL {r['case']} / {r['variant']}: err {r['err']}")
def pick(rs, tag):
    return next((r for r in rs if tag in r["variant"]), None)
print(f"{'decode':<14}{'best variant':<30}{'us':>8}{'share':>7}{'default us':>11}{'old us':>8}{'torch us':>9}")
for B, ctx in sorted({(r["B"], r["ctx"]) for r in rows if r["kind"] == "decode"}):
    ours = [r for r in rows if r["kind"] == "decode" and r["B"] == B and r["ctx"] == ctx]
    best = min(ours, key=lambda r: r["us"])
    d, o = pick(ours, "(default)"), pick(ours, "(old)")
    th = [r["us"] for r in rows if r["kind"] == "torch_decode" and r["B"] == B and r["ctx"] == ctx]
    f = lambda r: f"{r['us']:.2f}" if r else "-"
    print(f"B={B:<3}ctx={ctx:<6} {best['variant']:<30}{best['us']:8.2f}{100*best['share']:6.1f}%{f(d):>11}{f(o):>8}{(min(th) if th else float('nan')):9.2f}")
print(f"{'prefill':<10}{'best variant':<30}{'TFLOP/s':>8}{'default':>9}{'old':>7}{'torch':>7}   all variants")
lab = lambda r: r.get("label", str(r["T"]))
for T in sorted({lab(r) for r in rows if r["kind"] == "prefill"}, key=lambda x: (len(x), x)):
    ours = [r for r in rows if r["kind"] == "prefill" and lab(r) == T]
    best = max(ours, key=lambda r: r["tflops"])
    d, o = pick(ours, "(default)"), pick(ours, "(old)")
    th = [r["tflops"] for r in rows if r["kind"] == "torch_prefill" and str(r["T"]) == T]
    f = lambda r: f"{r['tflops']:.1f}" if r else "-"
    allv = " ".join(f"{r['variant'].split(' (')[0]}={r['tflops']:.0f}" for r in ours)
    print(f"T={T:<20} {best['variant']:<30}{best['tflops']:8.1f}{f(d):>9}{f(o):>7}{(max(th) if th else float('nan')):7.0f}   {allv}")
PY
grep -E "bit-identity tests exit|op tests exit|harness exit|torch exit|torch skipped|Tests " "$log" | tail -8
rm -rf "$tmp"
