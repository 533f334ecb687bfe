#!/usr/bin/env bash
# gemv2 (issue 12): the cp.async ring GEMV (gemv_int4.cuh, RING > 0) beside run 2's kernel ("old"), on the GPU machine
# from the repo root after `. .gpu/prelude.sh`; budget 120 s (gemv_bench ~60-80 s, cuBLAS ~20 s).
#   1. bench/kernels/bin/gemv_bench, one process a shape (a crash loses one shape, not the run): copy / read
#      bandwidth, then every variant validated (float64 reference on fresh random x, poisoned outputs, M = 1, 3, 8;
#      for "auto": batched rows == solo rows bit for bit, and the q/k/v row views == the fused qkv) BEFORE it is timed
#      (a CUDA graph of back-to-back calls rotating over weight copies that miss L2)
#   2. bench/kernels/tinygemm.py with GEMV_TORCH_KERNELS=cublas: cuBLAS BF16 on the same shapes (the ceiling;
#      tinygemm's figures are in run 2's gemv.log)
# Build here first (no GPU needed; the lead carries bench/kernels/bin):
#   mkdir -p bench/kernels/bin && nvcc -std=c++17 -O3 -lineinfo --expt-relaxed-constexpr -Icsrc \
#     -gencode=arch=compute_90a,code=sm_90a bench/kernels/gemv_bench.cu -o bench/kernels/bin/gemv_bench
# Writes $OUT/gemv2.log (everything) and $OUT/gemv2.json (figures); prints the summary table last.
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
log="$out/gemv2.log"
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
  for s in qkv o gate_up down output; do
    echo "== gemv_bench $s"
    timeout 25 "$bin" "$tmp/kernels_$s.json" "$s"
    echo "gemv_bench $s exit $?"
  done
  echo "== cuBLAS BF16 (torch)"
  GEMV_TORCH_KERNELS=cublas GEMV_TORCH_MS=1,8 timeout 35 python3 bench/kernels/tinygemm.py "$tmp/torch.json"
  echo "torch exit $?"
} > "$log" 2>&1
python3 - "$tmp" "$out/gemv2.json" <<'PY' 2>&1 | tee -a "$log"
import glob, json, os, sys
tmp, dst = sys.argv[1], sys.argv[2]
def load(p):
    try:
        return json.load(open(p))
    except Exception as e:
        return {"error": f"{os.path.basename(p)}: {e}"}
shapes = ["qkv", "o", "gate_up", "down", "output"]
ks = {s: load(os.path.join(tmp, f"kernels_{s}.json")) for s in shapes}
t = load(os.path.join(tmp, "torch.json"))
json.dump({"kernels": ks, "torch": t}, open(dst, "w"), indent=1)
copy = next((k.get("copy_GBs") for k in ks.values() if k.get("copy_GBs")), 0) or 0
fails = sum(k.get("failures", 0) or 0 for k in ks.values())
missing = [s for s in shapes if "results" not in ks[s]]
print(f"\ngemv2 summary: copy {copy:.0f} GB/s (read+write); failed validations: {fails}; shapes that did not finish: {missing or 'none'}")
peer = {(r["shape"], r["M"]): r["us"] for r in t.get("results", []) if "us" in r and r.get("kernel") == "cublas_bf16"}
print(f"{'shape':8s} {'M':>2s} | {'auto us':>8s} {'%copy':>6s} | {'old us':>7s} {'%copy':>6s} | {'best variant':>14s} {'us':>7s} {'%copy':>6s} | {'cublas':>7s} | {'probe us':>8s} {'%copy':>6s}")
for s in shapes:
    res = [r for r in ks[s].get("results", []) if r.get("valid") and "us" in r]
    for m in (1, 2, 4, 8):
        a = next((r for r in res if r["variant"] == "auto" and r["M"] == m), None)
        if not a:
            continue
        o = next((r for r in res if r["variant"] == "old" and r["M"] == m), None)
        b = min((r for r in res if r["M"] == m and r["variant"] not in ("auto-plain", "probe")), key=lambda r: r["us"])
        f = lambda r: f"{r['us']:7.2f} {100 * r['share_copy']:5.1f}%" if r else "      -      -"
        cb = peer.get((s, m))
        pr = next((r for r in res if r["variant"] == "probe" and r["M"] == m), None)
        print(f"{s:8s} {m:2d} | {a['us']:8.2f} {100 * a['share_copy']:5.1f}% | {f(o)} | {b['variant']:>14s} {f(b)} | "
              f"{(f'{cb:7.2f}' if cb else '      -')} | {(f(pr) + ' ') if pr else '       -      -'}")
print("probe = auto's plan streaming the same tiles with no arithmetic (memory side alone; not a GEMV, not validated)")
for s in shapes:
    for r in ks[s].get("results", []):
        if not r.get("valid", True):
            print("INVALID:", r["shape"], r["variant"], r.get("why"), r.get("plan"))
PY
rm -rf "$tmp"
