#!/usr/bin/env python3
"""cuBLAS BF16 (torch.matmul) on the GLM-4-9B linear shapes, for scripts/gpu/gemm.sh: the ceiling that the INT4
GEMMs are reported against, measured in the same device call. y bf16 [M, N] = x bf16 [M, K] @ w bf16 [N, K]^T;
a CUDA graph of back-to-back calls, best of 5 replays; weights rotated over copies (>= 400 MB) for M <= 128 so
that L2 does not serve them (the INT4 kernels are timed the same way).
Usage: gemm_cublas.py OUT.json [M,M,...] (default: 16..8192)"""
import json
import sys

import torch

SHAPES = [("qkv", 4608, 4096), ("o", 4096, 4096), ("gate_up", 27392, 4096), ("down", 4096, 13696), ("output", 151552, 4096)]
MS = [16, 32, 64, 128, 512, 2048, 8192]


def time_graph(fn, calls):
    fn()  # warm-up outside the graph (cuBLAS picks its kernel, allocates its workspace)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(calls):
            fn(i)
    g.replay()
    torch.cuda.synchronize()
    best = float("inf")
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(5):
        e0.record()
        g.replay()
        e1.record()
        e1.synchronize()
        best = min(best, e0.elapsed_time(e1))
    return best * 1e3 / calls  # us per call


def main():
    out = sys.argv[1]
    ms = [int(v) for v in sys.argv[2].split(",")] if len(sys.argv) > 2 else MS
    dev = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    recs = []
    for name, n, k in SHAPES:
        wbytes = n * k * 2
        copies = max(1, min(8, (400 << 20) // wbytes))
        ws = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) for _ in range(copies)]
        for m in ms:
            if m == 8192 and name != "gate_up":
                continue
            if n == 151552 and m > 2048:
                continue
            x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            y = torch.empty(m, n, device=dev, dtype=torch.bfloat16)
            use = ws if m <= 128 else ws[:1]
            calls = 20 if m <= 128 else (6 if m <= 2048 else 3)

            def fn(i=0):
                torch.matmul(x, use[i % len(use)].t(), out=y)

            us = time_graph(fn, calls)
            tf = 2.0 * m * n * k / (us * 1e-6) / 1e12
            print(f"cublas {name:8s} M={m:<5d} {us:9.1f} us {tf:7.1f} TFLOP/s")
            recs.append({"shape": name, "n": n, "k": k, "m": m, "us": us, "tflops": tf})
            del x, y
        del ws
        torch.cuda.empty_cache()
    with open(out, "w") as f:
        json.dump(recs, f)


if __name__ == "__main__":
    main()
