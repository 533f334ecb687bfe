#!/usr/bin/env python3
"""Merges the kernel harness's records and cuBLAS's into one JSON and prints the table that picks the winners.
Usage: gemm_summary.py KERNELS.json CUBLAS.json OUT.json [FAILED.json]"""
import json
import sys


def main():
    try:
        text = open(sys.argv[1]).read().strip()
        if text and not text.endswith("]"):
            text += "]"  # the harness was cut short by its timeout: keep what it wrote
        kern = json.loads(text) if text else []
    except Exception as e:
        print(f"(no kernel figures: {e})")
        kern = []
    try:
        cub = json.load(open(sys.argv[2]))
    except Exception as e:  # torch missing or failed: report without the ceiling
        print(f"(no cuBLAS figures: {e})")
        cub = []
    cmap = {(r["shape"], r["m"]): r for r in cub}
    checks = [r for r in kern if "check" in r]
    times = [r for r in kern if r.get("time")]
    bw = next((r["bytes_per_s"] for r in kern if r.get("ceiling") == "copy_bw"), None)
    failed = sorted({r["variant"] for r in checks if r.get("check") == "variant" and not r["ok"]})
    if len(sys.argv) > 4:  # variants that failed (or crashed, or hung) in their own validation process
        try:
            failed = sorted(set(failed) | {v for v in json.load(open(sys.argv[4])) if v})
        except Exception as e:
            print(f"(no list of separately failed variants: {e})")
    print("\nvalidation failures:", ", ".join(failed) if failed else "none")
    if bw:
        print(f"copy bandwidth {bw / 1e9:.0f} GB/s (read + write)")
    rows = []
    print(f"\n{'shape':8s} {'M':>5s} {'best variant':18s} {'us':>8s} {'TFLOP/s':>8s} {'cuBLAS us':>9s} {'share':>6s} "
          f"{'x wread':>7s} {'+conv us':>8s}   runner-up")
    keys = sorted({(r["shape"], r["m"]) for r in times}, key=lambda t: (t[0], t[1]))
    order = {"qkv": 0, "o": 1, "gate_up": 2, "down": 3, "output": 4}
    keys.sort(key=lambda t: (order.get(t[0], 9), t[1]))
    for shape, m in keys:
        rs = sorted([r for r in times if r["shape"] == shape and r["m"] == m], key=lambda r: r["us"])
        best = rs[0]
        c = cmap.get((shape, m))
        share = c["us"] / best["us"] if c else None
        runner = f"{rs[1]['variant']} {rs[1]['us']:.1f}" if len(rs) > 1 else ""
        print(f"{shape:8s} {m:5d} {best['variant']:18s} {best['us']:8.1f} {best['tflops']:8.1f} "
              f"{(c['us'] if c else float('nan')):9.1f} {(share * 100 if share else float('nan')):5.0f}% "
              f"{best['us'] / best['weight_read_us']:7.2f} {best['convert_us']:8.1f}   {runner}")
        rows.append({"shape": shape, "m": m, "best": best, "all": rs, "cublas": c, "share_of_cublas": share})
    json.dump({"checks": checks, "copy_bw": bw, "rows": rows, "cublas": cub, "failed": failed}, open(sys.argv[3], "w"), indent=1)


if __name__ == "__main__":
    main()
