#!/usr/bin/env bash
# dattn (issue 12): decode attention version 2 (decode2_kernel + decode_merge_kernel, csrc/cuda/attention_kernels.cuh)
# against run5's default (decode_kernel with its ticket-tree merge). From the repo root after `. .gpu/prelude.sh`,
# with the harness (sm_90a) built here and carried, and build/Release/glm4_native.node + dist/ for the op tests:
#   nvcc -std=c++17 -O3 -lineinfo -gencode=arch=compute_90a,code=sm_90a -Icsrc bench/kernels/attention_bench.cu \
#        -o bench/kernels/bin/attention_bench          (or: bash scripts/gpu/dattn.sh --build-only)
# Budget 120 s. In order:
#   1. the kernel harness, decode only: every variant validated against float64 (poisoned outputs, repeated launches
#      bit for bit, a workspace reused across shapes), batch == solo bit for bit (B = 17 mixed lengths), then timed at
#      B = 1, 8, 32, 64 x ctx 128, 2K, 8K, 32K as CUDA graphs of back-to-back launches over caches that miss L2;
#      probes (timed, never validated): the same grid doing nothing (launch floor), the loads alone, no merge.
#      A kernel fault kills the process: the script reruns without the variant that was running.
#   2. the op tests on cuda with the new default: `-t "attention"` of test/gpu/ops.test.ts (float64 and CPU op cases,
#      block table == contiguous bit for bit); then the bit-identity tests with bf16 partials and with the old kernel.
# Writes $OUT/dattn.log (everything) and $OUT/dattn.json (figures); prints the summary table last.
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=bench/kernels/bin/attention_bench
build() { nvcc -std=c++17 -O3 -lineinfo -gencode=arch=compute_90a,code=sm_90a -Icsrc bench/kernels/attention_bench.cu -o "$bin"; }
if [[ ${1:-} == --build-only ]]; then mkdir -p "$(dirname "$bin")" && build && echo "built $bin"; exit $?; fi
out=${OUT:-gpu-out}
mkdir -p "$out"
log="$out/dattn.log"
tmp=$(mktemp -d)
start=$SECONDS
{
  nvidia-smi --query-gpu=name,memory.used,clocks.sm,clocks.mem --format=csv
  echo "== 1. kernel harness (decode only)"
  if [[ ! -x $bin ]]; then echo "harness binary missing: $bin (build it with --build-only)"; fi
  if command -v cuobjdump >/dev/null && [[ -x $bin ]]; then
    cuobjdump --dump-resource-usage "$bin" 2>/dev/null | grep -A1 -E "decode2|decode_merge" | grep -oE "REG:[0-9]+|STACK:[0-9]+|LOCAL:[0-9]+" | sort | uniq -c | tr '\n' ' '
    echo "(registers / stack / local of the decode2 and merge instantiations)"
  fi
  skip=""
  for attempt in 1 2 3; do
    left=$((72 - (SECONDS - start)))
    (( left < 12 )) && { echo "no time left for the harness"; break; }
    [[ -x $bin ]] || break
    timeout "$left" "$bin" --no-prefill --bs 1,8,32,64 --ctx 128,2048,8192,32768 --json "$tmp/kernels.jsonl" ${skip:+--skip $skip} | tee "$tmp/harness.out"
    rc=${PIPESTATUS[0]}
    echo "harness exit $rc (attempt $attempt${skip:+, skipping $skip}) after $((SECONDS - start)) s (1 = a validation failed, see FAIL lines; 124 = timeout)"
    (( rc == 0 || rc == 1 || rc == 124 )) && break
    bad=$(grep "^@variant" "$tmp/harness.out" | tail -1 | awk '{print $2}')
    [[ -z $bad ]] && break
    echo "variant $bad crashed: rerunning without it"
    skip=${skip:+$skip,}$bad
  done
  echo "== 2. op tests on cuda (decode version 2 = the default)"
  left=$((108 - (SECONDS - start)))
  timeout $(( left < 60 ? left : 60 )) npx vitest run --config vitest.gpu.config.ts test/gpu/ops.test.ts -t "attention|rotary" --reporter=verbose 2>&1 \
    | grep -vE "^\s*$|↓|skipped" | tail -45
  echo "op tests (attention, rotary) exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
  for envv in "GLM4_ATTN_DECODE=128,64,0,2,1" "GLM4_ATTN_PLAN=v1"; do
    left=$((116 - (SECONDS - start)))
    (( left < 6 )) && { echo "no time left for the bit-identity tests with $envv"; continue; }
    env "$envv" timeout "$left" npx vitest run --config vitest.gpu.config.ts test/gpu/ops.test.ts -t "bit-identical to a contiguous" 2>&1 \
      | grep -E "Tests |FAIL|Error" | head -5
    echo "bit-identity tests with $envv exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
  done
} > "$log" 2>&1
python3 - "$tmp" "$out/dattn.json" <<'PY' | tee -a "$log"
import json, os, sys
tmp, dst = sys.argv[1], sys.argv[2]
rows = []
p = os.path.join(tmp, "kernels.jsonl")
if os.path.exists(p):
    for l in open(p):
        try:
            if l.strip(): rows.append(json.loads(l))
        except ValueError:
            print("unreadable JSON line:", l.strip())
json.dump(rows, open(dst, "w"), indent=1)
dev = next((r for r in rows if r["kind"] == "device"), {})
bad = [r for r in rows if r["kind"] == "validate" and not r["ok"]]
copy = dev.get("copy_gbs", 0) or 1
print(f"\n== dattn summary ({dev.get('name', '?')}, copy {copy:.0f} GB/s); validation failures: {len(bad)}")
for r in bad:
    print(f"  FAIL {r['case']} / {r['variant']}: err {r['err']}")
def pick(rs, tag):
    return next((r for r in rs if tag in r["variant"]), None)
f = lambda r: f"{r['us']:.2f}" if r else "-"
print("us per launch in a graph; share = cache bytes / time over copy; empty = v2 grid doing nothing (+ merge grid),")
print("empty1 = the split grid alone, loads = v2's tile loads alone, nomerge = v2 without its merge kernel")
print(f"{'shape':<15}{'old us':>8}{'new us':>8}{'new %':>7}{'x':>6}  {'best valid variant':<26}{'us':>8}{'%':>6}{'empty':>7}{'empty1':>7}{'loads':>7}{'nomerge':>8}")
for B, ctx in sorted({(r["B"], r["ctx"]) for r in rows if r["kind"] == "decode"}):
    rs = [r for r in rows if r["kind"] == "decode" and r["B"] == B and r["ctx"] == ctx]
    valid = [r for r in rs if not r.get("probe")]
    best = min(valid, key=lambda r: r["us"]) if valid else None
    o, d = pick(valid, "(old)"), pick(valid, "(default)")
    sp = lambda r: f"{100 * r['share']:.1f}" if r else "-"
    x = f"{o['us'] / d['us']:.2f}" if o and d else "-"
    pr = lambda tag: f(next((r for r in rs if r.get("probe") and r["variant"].endswith(tag)), None))
    print(f"B={B:<3}ctx={ctx:<6}{f(o):>8}{f(d):>8}{sp(d):>7}{x:>6}  {(best['variant'] if best else '-'):<26}{f(best):>8}{sp(best):>6}"
          f"{pr(' empty'):>7}{pr(' empty1'):>7}{pr(' loads'):>7}{pr(' nomerge'):>8}")
names = []
for r in rows:
    if r["kind"] == "decode" and r["variant"] not in names: names.append(r["variant"])
print("every variant, us at B=1 ctx 128/2K/8K/32K | B=32 ctx 128/2K/8K/32K:")
for n in names:
    cell = lambda B, c: next((f"{r['us']:.1f}" for r in rows if r["kind"] == "decode" and r["variant"] == n and r["B"] == B and r["ctx"] == c), "-")
    print(f"  {n:<34} " + "/".join(cell(1, c) for c in (128, 2048, 8192, 32768)) + " | " + "/".join(cell(32, c) for c in (128, 2048, 8192, 32768)))
PY
grep -E "harness exit|op tests .*exit|bit-identity tests with|Tests |no time left" "$log" | tail -8
rm -rf "$tmp"
