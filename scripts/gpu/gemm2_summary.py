#!/usr/bin/env python3
"""Table of scripts/gpu/gemm2.sh: per (shape, M) the addon's new plan against the first version's and cuBLAS BF16,
and the fixed-tile variants (uniform K split vs whole tiles then K pieces). Also merges everything into one JSON.
Usage: gemm2_summary.py KERNELS.json CUBLAS.json OUT.json [FAILED.json]"""
import json
import sys

COLS = ["plan_new", "plan_old", "wgmma_r256_t64_sk", "wgmma_r128_t192_sk", "wgmma_r128_t128_w8_sk", "wgmma_r128_t256_sk"]
SHORT = {"plan_new": "new", "plan_old": "old", "wgmma_r256_t64_sk": "r256t64sk", "wgmma_r128_t192_sk": "t192sk",
         "wgmma_r128_t128_w8_sk": "t128w8sk", "wgmma_r128_t256_sk": "t256sk"}


def load(path, fix_cut=False):
    try:
        text = open(path).read().strip()
        if fix_cut and text and not text.endswith("]"):
            text += "]"  # the harness was cut short by its timeout: keep what it wrote
        return json.loads(text) if text else []
    except Exception as e:
        print(f"(no figures from {path}: {e})")
        return []


def main():
    kern = load(sys.argv[1], True)
    cub = load(sys.argv[2])
    cmap = {(r["shape"], r["m"]): r for r in cub}
    checks = [r for r in kern if "check" in r]
    times = [r for r in kern if r.get("time")]
    failed = sorted({r["variant"] for r in checks if r.get("check") == "variant" and not r["ok"]})
    if len(sys.argv) > 4:
        try:
            failed = sorted(set(failed) | {v for v in json.load(open(sys.argv[4])) if v})
        except Exception as e:
            print(f"(no list of separately failed variants: {e})")
    print("\nvalidation failures:", ", ".join(failed) if failed else "none")
    tmap = {(r["shape"], r["m"], r["variant"]): r for r in times}
    order = {"qkv": 0, "o": 1, "gate_up": 2, "down": 3, "output": 4}
    keys = sorted({(r["shape"], r["m"]) for r in times}, key=lambda t: (order.get(t[0], 9), t[1]))
    head = f"{'shape':8s} {'M':>5s} " + " ".join(f"{SHORT[c]:>9s}" for c in COLS) + f" {'cuBLAS':>7s} {'new%':>5s} {'old%':>5s}  new plan"
    print("\nus per call (share = cuBLAS us / ours)\n" + head)
    rows = []
    for shape, m in keys:
        c = cmap.get((shape, m))
        vals = [tmap.get((shape, m, v)) for v in COLS]
        cells = " ".join(f"{r['us']:9.1f}" if r else f"{'-':>9s}" for r in vals)
        new, old = vals[0], vals[1]
        pn = f"{c['us'] / new['us'] * 100:4.0f}%" if c and new else "    -"
        po = f"{c['us'] / old['us'] * 100:4.0f}%" if c and old else "    -"
        plan = new.get("plan", "") if new else ""
        print(f"{shape:8s} {m:5d} {cells} {(c['us'] if c else float('nan')):7.1f} {pn:>5s} {po:>5s}  {plan}")
        rows.append({"shape": shape, "m": m, "variants": {v: r for v, r in zip(COLS, vals) if r}, "cublas": c})
    json.dump({"checks": checks, "rows": rows, "cublas": cub, "failed": failed, "times": times},
              open(sys.argv[3], "w"), indent=1)


if __name__ == "__main__":
    main()
