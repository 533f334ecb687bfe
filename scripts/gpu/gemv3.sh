#!/usr/bin/env bash
# gemv3 (issue 12 / 14): the persistent GEMV (csrc/cuda/gemv_v3.cuh) beside the old kernel (library default) and the
# ring kernel (GLM4_GEMV_PLAN=ring), on the GPU machine from the repo root after `. .gpu/prelude.sh`; budget ~150 s.
#   bench/kernels/bin/gemv_bench, one process a shape (a crash loses one shape, not the run): copy / read bandwidth,
#   then every variant validated (float64 reference on fresh random x, poisoned outputs, M = 1, 3, 8; for v3, its
#   C neighbours and group sizes, and ring: batched rows == solo rows bit for bit, and on qkv the row views == the
#   whole weight) BEFORE it is timed (a CUDA graph of back-to-back calls rotating over weight copies that miss L2).
#   v3 variants run first; the ring kernel (illegal instruction in the final run of 2026-12-03) runs last.
# Build here first (no GPU needed; the lead carries bench/kernels/bin):
#   mkdir -p bench/kernels/bin && nvcc -std=c++17 -O3 -lineinfo --expt-relaxed-constexpr -Icsrc \
#     -gencode=arch=compute_90a,code=sm_90a bench/kernels/gemv_bench.cu -o bench/kernels/bin/gemv_bench
# Writes $OUT/gemv3.log (everything) and $OUT/gemv3.json (figures); prints the summary table last.
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
log="$out/gemv3.log"
tmp=$(mktemp -d)
bin=bench/kernels/bin/gemv_bench
{
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv
  if [[ ! -x $bin ]]; then
    echo "== building $bin"
    mkdir -p bench/kernels/bin
    timeout 200 nvcc -std=c++17 -O3 -lineinfo --expt-relaxed-constexpr -Icsrc -gencode=arch=compute_90a,code=sm_90a \
      bench/kernels/gemv_bench.cu -o "$bin"
  fi
  for s in qkv o gate_up down output; do
    echo "== gemv_bench $s"
    timeout 28 "$bin" "$tmp/kernels_$s.json" "$s"
    echo "gemv_bench $s exit $?"
  done
} > "$log" 2>&1
python3 - "$tmp" "$out/gemv3.json" <<'PY' 2>&1 | tee -a "$log"
import json, os, sys
tmp, dst = sys.argv[1], sys.argv[2]
def load(p):
    try:
        return json.load(open(p))
    except Exception as e:
        return {"error": f"{os.path.basename(p)}: {e}"}
shapes = ["qkv", "o", "gate_up", "down", "output"]
ks = {s: load(os.path.join(tmp, f"kernels_{s}.json")) for s in shapes}
json.dump({"kernels": ks}, open(dst, "w"), indent=1)
copies = [k.get("copy_GBs") for k in ks.values() if k.get("copy_GBs")]
copy = sum(copies) / len(copies) if copies else 0
fails = sum(k.get("failures", 0) or 0 for k in ks.values())
missing = [s for s in shapes if "results" not in ks[s]]
for s in shapes:
    for r in ks[s].get("results", []):
        if not r.get("valid", True):
            print("INVALID:", r["shape"], r["variant"], r.get("why"), r.get("plan"))
print(f"\ngemv3 summary: copy {copy:.0f} GB/s (read+write, mean of the shapes' runs); failed validations: {fails}; "
      f"shapes that did not finish: {missing or 'none'}")
print("us / GB/s / % of copy; best = fastest valid GEMV variant (not v3-plain, not the probe); probe = v3's loads, no arithmetic")
f = lambda r: f"{r['us']:7.2f} {r['GBs']:5.0f} {100 * r['share_copy']:4.1f}%" if r else "      -     -     -"
print(f"{'shape':8s} {'M':>2s} | {'v3':^20s} | {'old':^20s} | {'ring':^20s} | {'best':>12s} {'':^20s} | {'probe':^20s}")
for s in shapes:
    res = [r for r in ks[s].get("results", []) if r.get("valid") and "us" in r]
    for m in (1, 2, 4, 8):
        get = lambda v: next((r for r in res if r["variant"] == v and r["M"] == m), None)
        v3 = get("v3")
        if not v3 and m in (2, 4):
            continue
        cand = [r for r in res if r["M"] == m and r["variant"] not in ("v3-plain", "v3probe", "v3probe-nohint", "readfloor")]
        b = min(cand, key=lambda r: r["us"]) if cand else None
        print(f"{s:8s} {m:2d} | {f(v3)} | {f(get('old'))} | {f(get('ring'))} | {(b['variant'] if b else '-'):>12s} {f(b)} | {f(get('v3probe'))}")
print("every valid variant, us at M = 1 / M = 8:")
for s in shapes:
    res = [r for r in ks[s].get("results", []) if r.get("valid") and "us" in r]
    names = []
    for r in res:
        if r["variant"] not in names:
            names.append(r["variant"])
    cell = lambda v, m: next((f"{r['us']:.1f}" for r in res if r["variant"] == v and r["M"] == m), "-")
    print(f"  {s:8s} " + ", ".join(f"{v} {cell(v, 1)}/{cell(v, 8)}" for v in names))
PY
rm -rf "$tmp"
