#!/usr/bin/env bash
# INT4 GEMV kernel harness (issue 12), on the GPU machine from the repo root after `. .gpu/prelude.sh`; ~60-120 s.
#   1. bench/kernels/bin/gemv_bench: copy / read bandwidth, then every GEMV variant validated (float64 reference,
#      poisoned outputs, batched rows == solo rows bit for bit) and timed on the GLM-4-9B shapes at M = 1, 2, 4, 8
#   2. bench/kernels/tinygemm.py: PyTorch's int4 kernel (tinygemm) and cuBLAS BF16 on the same shapes, same method
# Build the binary here first (no GPU needed; the lead carries bench/kernels/bin):
#   nvcc -std=c++17 -O3 -lineinfo --expt-relaxed-constexpr -Icsrc -gencode=arch=compute_90a,code=sm_90a \
#        bench/kernels/gemv_bench.cu -o bench/kernels/bin/gemv_bench
# Writes $OUT/gemv.log (everything) and $OUT/gemv.json (figures); prints the summary table last.
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
log="$out/gemv.log"
tmp=$(mktemp -d)
bin=bench/kernels/bin/gemv_bench
{
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv
  if [[ ! -x $bin ]]; then
    echo "== building $bin"
    mkdir -p bench/kernels/bin
    timeout 150 nvcc -std=c++17 -O3 -lineinfo --expt-relaxed-constexpr -Icsrc -gencode=arch=compute_90a,code=sm_90a \
      bench/kernels/gemv_bench.cu -o "$bin"
  fi
  echo "== gemv_bench"
  timeout 100 "$bin" "$tmp/kernels.json"
  echo "gemv_bench exit $?"
  echo "== tinygemm / cuBLAS (torch)"
  timeout 90 python3 bench/kernels/tinygemm.py "$tmp/torch.json"
  echo "tinygemm exit $?"
} > "$log" 2>&1
python3 - "$tmp" "$out/gemv.json" <<'PY' 2>&1 | tee -a "$log"
import json, os, sys
tmp, dst = sys.argv[1], sys.argv[2]
def load(p):
    try:
        return json.load(open(os.path.join(tmp, p)))
    except Exception as e:
        return {"error": str(e)}
k, t = load("kernels.json"), load("torch.json")
json.dump({"kernels": k, "torch": t}, open(dst, "w"), indent=1)
copy = k.get("copy_GBs") or 0
print(f"\nGEMV summary ({k.get('device')}): copy {copy:.0f} GB/s (read+write), read {k.get('read_GBs', 0):.0f} GB/s; "
      f"failed validations: {k.get('failures')}")
peer = {(r["shape"], r["kernel"], r["M"]): r["us"] for r in t.get("results", []) if "us" in r}
best = {}
for r in k.get("results", []):
    if not r.get("valid") or "us" not in r:
        continue
    key = (r["shape"], r["M"])
    if key not in best or r["us"] < best[key]["us"]:
        best[key] = r
print(f"{'shape':8s} {'M':>2s} {'auto us':>8s} {'%copy':>6s} | {'best variant':>14s} {'us':>8s} {'%copy':>6s} | {'tinygemm':>8s} {'cublas':>8s}")
for r in k.get("results", []):
    if r.get("variant") != "auto" or "us" not in r:
        continue
    b = best[(r["shape"], r["M"])]
    tg = peer.get((r["shape"], "tinygemm", r["M"]))
    cb = peer.get((r["shape"], "cublas_bf16", r["M"]))
    f = lambda v: f"{v:8.2f}" if v else "       -"
    print(f"{r['shape']:8s} {r['M']:2d} {r['us']:8.2f} {100 * r['share_copy']:5.1f}% | {b['variant']:>14s} {b['us']:8.2f} "
          f"{100 * b['share_copy']:5.1f}% | {f(tg)} {f(cb)}")
for r in k.get("results", []):
    if not r.get("valid", True):
        print("INVALID:", r["shape"], r["variant"], r.get("why"))
PY
rm -rf "$tmp"
