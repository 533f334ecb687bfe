#!/usr/bin/env bash
# elt (issues 13, 14): the small ops of a layer (rotary_kv_write_qkv, rmsnorm / add_rmsnorm, swiglu on an f32 or a bf16
# gate_up), v2 of csrc/cuda/elt_kernels.cuh against v1 (run12's kernels). From the repo root after `. .gpu/prelude.sh`,
# with the harness (sm_90a) built here and carried, and build/Release/glm4_native.node (this branch, sm_90a) + dist/
# for the op tests:
#   nvcc -std=c++17 -O3 -lineinfo --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a -Icsrc \
#        bench/kernels/elt_bench.cu -o bench/kernels/bin/elt_bench          (or: bash scripts/gpu/elt.sh --build-only)
# Budget 120 s. In order:
#   1. the kernel harness: every variant validated (v2 == v1 bit for bit, each vs float64, poisoned outputs, odd and
#      GLM-4 sizes), then timed at T = 2048, 64, 32 as CUDA graphs of back-to-back launches beside a copy kernel of the
#      same bytes and an empty grid; then the chain of a layer's four small ops x 40, old vs new. A kernel fault kills
#      the process: the script reruns without the variant that was running.
#   2. the op tests on cuda (v2 + PDL the defaults): `-t "rotary|rmsnorm|swiglu"` of test/gpu/ops.test.ts (float64,
#      CPU, bit-identity to the unpacked rotary_kv_write / add + rmsnorm / swiglu on the f32 copy); then the same with
#      GLM4_ELT_OLD=all (the v1 kernels) and with GLM4_ELT_PDL=0.
# Writes $OUT/elt.log (everything) and $OUT/elt.json (figures); prints the summary table last.
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=bench/kernels/bin/elt_bench
build() { nvcc -std=c++17 -O3 -lineinfo --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a -Icsrc bench/kernels/elt_bench.cu -o "$bin"; }
if [[ ${1:-} == --build-only ]]; then mkdir -p "$(dirname "$bin")" && build && echo "built $bin"; exit $?; fi
out=${OUT:-gpu-out}
mkdir -p "$out"
log="$out/elt.log"
tmp=$(mktemp -d)
start=$SECONDS
{
  nvidia-smi --query-gpu=name,memory.used,clocks.sm,clocks.mem --format=csv
  echo "== 1. kernel harness"
  if [[ ! -x $bin ]]; then echo "harness binary missing: $bin (build it with --build-only and carry it)"; fi
  skip=""
  for attempt in 1 2 3 4; do
    left=$((55 - (SECONDS - start)))
    (( left < 8 )) && { echo "no time left for the harness"; break; }
    [[ -x $bin ]] || break
    timeout "$left" "$bin" --json "$tmp/kernels.jsonl" ${skip:+--skip $skip} | tee "$tmp/harness.out"
    rc=${PIPESTATUS[0]}
    echo "harness exit $rc (attempt $attempt${skip:+, skipping $skip}) after $((SECONDS - start)) s (1 = a validation failed, see FAIL lines; 124 = timeout)"
    (( rc == 0 || rc == 1 || rc == 124 )) && break
    bad=$(grep "^@variant" "$tmp/harness.out" | tail -1 | awk '{print $2}')
    [[ -z $bad ]] && break
    echo "variant $bad crashed: rerunning without it"
    skip=${skip:+$skip,}$bad
    : > "$tmp/kernels.jsonl"
  done
  echo "== 2. op tests on cuda (v2 + PDL, the defaults)"
  left=$((100 - (SECONDS - start)))
  timeout $(( left < 45 ? left : 45 )) npx vitest run --config vitest.gpu.config.ts test/gpu/ops.test.ts -t "rotary|rmsnorm|swiglu" --reporter=verbose 2>&1 \
    | grep -vE "^\s*$|↓|skipped" | grep -E "✓|×|FAIL|Error|Tests |expected|AssertionError" | tail -60
  echo "op tests (rotary|rmsnorm|swiglu) exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
  for envv in "GLM4_ELT_OLD=all" "GLM4_ELT_PDL=0"; do
    left=$((117 - (SECONDS - start)))
    (( left < 8 )) && { echo "no time left for the op tests with $envv"; continue; }
    env "$envv" timeout "$left" npx vitest run --config vitest.gpu.config.ts test/gpu/ops.test.ts -t "rotary|rmsnorm|swiglu" 2>&1 \
      | grep -E "Tests |FAIL|×" | head -8
    echo "op tests with $envv exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
  done
} > "$log" 2>&1
grep -E "harness exit|validation: |op tests .*exit|Tests |no time left" "$log" | tail -8
python3 - "$tmp" "$out/elt.json" <<'PY' | tee -a "$log"
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
nval = len([r for r in rows if r["kind"] == "validate"])
copy = dev.get("copy_gbs", 0) or 1
print(f"\n== elt summary ({dev.get('name', '?')}, cudaMemcpy copy {copy:.0f} GB/s); validation checks {nval}, failing {len(bad)}")
for r in bad:
    print(f"  FAIL {r['case']} / {r['variant']} / {r['check']}: err {r['err']}")
t = [r for r in rows if r["kind"] == "time"]
def get(op, T, v):
    return next((r for r in t if r["op"] == op and r["T"] == T and r["variant"] == v), None)
f = lambda r: f"{r['us']:.2f}" if r else "-"
pc = lambda r: f"{100 * r['gbs'] / copy:.0f}" if r and r["bytes"] else "-"
print("us per launch in a graph (T = 2048: inputs from DRAM; 64/32: L2-warm); % = bytes / time over cudaMemcpy copy;")
print("copy = a float4 copy kernel moving the same bytes; empty = an empty grid of the op's blocks with PDL")
print(f"{'op':<13}{'T':>5}{'v1 old':>9}{'v2 pdl':>9}{'v2 %':>6}{'v2 nopdl':>10}{'x':>6}{'copy':>8}{'copy %':>8}")
for op in ["rotary", "rotary bf16", "rmsnorm", "add_rmsnorm", "swiglu f32", "swiglu bf16"]:
    for T in sorted({r["T"] for r in t}, reverse=True):
        o = get(op, T, "v1 old") or get(op, T, "v1 scalar") or get(op, T, "v1 pdl")
        n = get(op, T, "v2 pdl"); n0 = get(op, T, "v2 nopdl"); c = get(op, T, "copy same bytes")
        x = f"{o['us'] / n['us']:.2f}" if o and n else "-"
        print(f"{op:<13}{T:>5}{f(o):>9}{f(n):>9}{pc(n):>6}{f(n0):>10}{x:>6}{f(c):>8}{pc(c):>8}")
print("every timed variant (us):")
for op in ["rotary", "rotary bf16", "rmsnorm", "add_rmsnorm", "swiglu f32", "swiglu bf16"]:
    for T in sorted({r["T"] for r in t}, reverse=True):
        vs = [r for r in t if r["op"] == op and r["T"] == T]
        print(f"  {op:<12} T={T:<5} " + "  ".join(f"{r['variant']} {r['us']:.2f}" for r in vs))
for T in sorted({r["T"] for r in t}, reverse=True):
    e1 = get("rmsnorm", T, "empty grid pdl"); e0 = get("rmsnorm", T, "empty grid nopdl")
    print(f"empty grid of {T} blocks: pdl {f(e1)} us, plain {f(e0)} us")
print("chain: a layer's rmsnorm + rotary + add_rmsnorm + swiglu back to back, us a layer (x 40 = a step's or a chunk's share);")
print("old = v1 on f32 qkv and gate_up; new = v2 on bf16 qkv and gate_up:")
for T in sorted({r["T"] for r in t}, reverse=True):
    a, b, c = get("chain/layer", T, "old (v1, f32 gu)"), get("chain/layer", T, "new (v2 pdl, bf16 gu)"), get("chain/layer", T, "new nopdl")
    sav = f"{40 * (a['us'] - b['us']) / 1000:.3f} ms" if a and b else "-"
    print(f"  T={T:<5} old {f(a)}  new {f(b)}  new nopdl {f(c)}  -> x40 saving {sav}")
PY
rm -rf "$tmp"
