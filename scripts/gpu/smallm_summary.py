#!/usr/bin/env python3
"""Table of scripts/gpu/smallm.sh: per (shape, M = 16/32/48/64) the addon's plan against every smallm variant (us),
the best variant's time over the INT4 weight read (at the copy rate measured in the same run) and over bf16 at
790 TFLOP/s, and the probes (no wgmma / no dequantization) beside their real kernel. Merges everything into one JSON.
Usage: smallm_summary.py KERNELS.json OUT.json [FAILED.json [STEPS.txt]]"""
import json
import sys

COLS = [  # (variant, short name)
    ("plan_new", "plan"), ("plan_v3", "v3"),
    ("wgmma_r256_t64_sk", "r256t64"), ("c2_r128_t64_sk", "c2t64"), ("c2_r128_t32_sk", "c2t32"),
    ("wg4_r256_t64_sk", "wg4t64"), ("wg4_r256_t32_sk", "wg4t32"),
    ("la_r256_t64_sk", "la_t64"), ("la_c2_r128_t64_sk", "la_c2t64"), ("la_c2_r128_t32_sk", "la_c2t32"),
    ("la_wg4_r256_t64_sk", "la_wg4t64"), ("la_wg4_r256_t32_sk", "la_wg4t32"),
    ("swap_r256_t64_sk", "swap"), ("swap256_r256_t64_sk", "swap256"), ("swapdq_r256_t64_sk", "swapdq"),
    # run14's other variants (2 accumulator sets, WIN 8, r256/r128 t32 with choose_sched), if timed
    ("a2_r256_t64_sk", "a2t64"), ("w8_r256_t64_sk", "w8t64"),
]
PROBES = [("wgmma_r256_t64_sk", "probe_nomma_r256_t64_sk", "probe_ss_r256_t64_sk", "probe_swap_r256_t64_sk", None),
          ("swap_r256_t64_sk", "probe_swap_nofence_sk", "probe_swap_nobar_sk", "probe_swap_nosts_sk", None)]


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
    checks = [r for r in kern if "check" in r]
    times = [r for r in kern if r.get("time")]
    failed = sorted({r["variant"] for r in checks if r.get("check") == "variant" and not r["ok"]})
    if len(sys.argv) > 3:
        try:
            failed = sorted(set(failed) | {v for v in json.load(open(sys.argv[3])) if v})
        except Exception as e:
            print(f"(no list of separately failed variants: {e})")
    tmap = {(r["shape"], r["m"], r["variant"]): r for r in times}
    order = {"qkv": 0, "o": 1, "gate_up": 2, "down": 3, "output": 4}
    keys = sorted({(r["shape"], r["m"]) for r in times}, key=lambda t: (order.get(t[0], 9), t[1]))
    rows = []
    print("\n== probes (us): r256t64: real | no wgmma | A from smem (SS) | swapped m64n128 SS;   swap: real | no fence.proxy.async | no named barrier | no st.shared")
    for shape, m in keys:
        cells = []
        for vs in PROBES:
            rs = [tmap.get((shape, m, v)) if v else None for v in vs]
            if any(rs):
                f = lambda r: f"{r['us']:7.1f}" if r else f"{'-':>7s}"
                cells.append(f"{vs[0].split('_')[0]}: " + " ".join(f(r) for r in rs))
        if cells:
            print(f"{shape:8s} {m:3d}  " + "   ".join(cells))
    print("\nvalidation failures:", ", ".join(failed) if failed else "none")
    steps = []
    if len(sys.argv) > 4:
        try:
            steps = [l.strip() for l in open(sys.argv[4]) if l.startswith("STEP")]
        except Exception as e:
            print(f"(no step figures: {e})")
    print("\n== decode step graph, context 128 (plan = this commit's; small=i: kSm90Cfgs[i] forced at M = 17..64)")
    for l in steps:
        print("  " + l)
    if not steps:
        print("  (none)")
    print("\nplan per (shape, M): " + "; ".join(f"{s} {m}: {tmap[(s, m, 'plan_new')]['plan']}" for s, m in keys if (s, m, "plan_new") in tmap))
    print("\n== smallm: us per call; plan = the addon's plan_sm90 now, v3 = main's before smallm (GLM4_INT4_GEMM_PLAN=v3)")
    print("   read = INT4 weights + scales/zeros at the copy rate of this run; bf16 = 2MNK at 790 TFLOP/s")
    head = f"{'shape':8s} {'M':>3s} " + " ".join(f"{s:>9s}" for _, s in COLS) + "  best: variant, us, x read, x bf16, plan/best"
    print(head)
    for shape, m in keys:
        vals = [tmap.get((shape, m, v)) for v, _ in COLS]
        cells = " ".join(f"{r['us']:9.1f}" if r else f"{'-':>9s}" for r in vals)
        cand = [r for r in vals[2:] if r]
        best = min(cand, key=lambda r: r["us"]) if cand else None
        plan = vals[0]
        btxt = ""
        if best:
            btxt = f"  {dict(COLS)[best['variant']]:8s} {best['us']:6.1f} x{best['us'] / best['read_us']:.2f} x{best['us'] / best['bf16_us']:.2f}"
            if plan:
                btxt += f" {plan['us'] / best['us']:.2f}"
        print(f"{shape:8s} {m:3d} {cells}{btxt}")
        rows.append({"shape": shape, "m": m, "variants": {v: r for (v, _), r in zip(COLS, vals) if r},
                     "best": best["variant"] if best else None})
    json.dump({"checks": checks, "rows": rows, "failed": failed, "times": times, "steps": steps}, open(sys.argv[2], "w"), indent=1)


if __name__ == "__main__":
    main()
