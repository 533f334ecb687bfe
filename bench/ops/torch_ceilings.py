#!/usr/bin/env python3
"""Ceilings for the op bench (bench/ops/run.ts), measured through torch on the same GPU in the same run.

stdin:  {"gemm": [[M, N, K], ...], "sdpa": [{"t", "hq", "hkv", "d", "past"}, ...], "targetMs": 2, "reps": 5}
stdout: one JSON line: {"torch", "device", "gemm": [{"m", "n", "k", "ms"}], "sdpa": [{..., "ms"}]} or {"error": why}

GEMM: y = x @ w.T in BF16 (cuBLAS, fp32 accumulation), x [M, K], w [N, K], the shape the op bench's linear takes.
SDPA: torch.nn.functional.scaled_dot_product_attention, causal, bf16, [1, H, T, D] (GQA through enable_gqa where
torch has it, else K/V expanded to all heads before timing).
Timing as the op bench does it: a CUDA graph of `calls` back-to-back calls (weights rotated through copies that
cover twice the L2, so that they are read cold), replayed once to warm up, then `reps` replays each timed with
CUDA events; the median over `calls` is the per-call time.
"""
import json
import math
import sys


def main():
    spec = json.load(sys.stdin)
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - any import failure means: no ceiling
        print(json.dumps({"error": f"torch is not importable ({type(e).__name__}: {e})"}))
        return
    if not torch.cuda.is_available():
        print(json.dumps({"error": "torch sees no CUDA device"}))
        return
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    target = float(spec.get("targetMs", 2))
    reps = int(spec.get("reps", 5))
    gen = torch.Generator(device=dev).manual_seed(1234)

    def timed(body, calls):
        """Per-call ms: a CUDA graph of body(i) for i < calls, replayed reps times."""
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for i in range(2):
                body(i)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(calls):
                body(i)
        g.replay()
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            g.replay()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        del g
        times.sort()
        return times[len(times) // 2] / calls

    def run(body):
        one = timed(body, 1)
        calls = max(1, min(200, round(target / max(one, 1e-4))))
        return timed(body, calls)

    out = {"torch": torch.__version__, "device": props.name, "gemm": [], "sdpa": []}
    for m, n, k in spec.get("gemm", []):
        copies = max(1, min(64, math.ceil(2 * l2 / (2 * n * k))))
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16, generator=gen)
        ws = [torch.randn(n, k, device=dev, dtype=torch.bfloat16, generator=gen) * 0.02 for _ in range(copies)]
        y = torch.empty(m, n, device=dev, dtype=torch.bfloat16)
        ms = run(lambda i: torch.matmul(x, ws[i % copies].t(), out=y))
        out["gemm"].append({"m": m, "n": n, "k": k, "ms": ms})
        del x, ws, y
        torch.cuda.empty_cache()
    F = torch.nn.functional
    for a in spec.get("sdpa", []):
        t, hq, hkv, d = a["t"], a["hq"], a["hkv"], a["d"]
        q = torch.randn(1, hq, t, d, device=dev, dtype=torch.bfloat16, generator=gen)
        k = torch.randn(1, hkv, t, d, device=dev, dtype=torch.bfloat16, generator=gen)
        v = torch.randn(1, hkv, t, d, device=dev, dtype=torch.bfloat16, generator=gen)
        try:
            F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            body = lambda i: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # noqa: E731
            how = "enable_gqa"
        except TypeError:
            ke = k.repeat_interleave(hq // hkv, dim=1)
            ve = v.repeat_interleave(hq // hkv, dim=1)
            body = lambda i: F.scaled_dot_product_attention(q, ke, ve, is_causal=True)  # noqa: E731
            how = "expanded K/V"
        out["sdpa"].append({**a, "ms": run(body), "how": how})
        torch.cuda.empty_cache()
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - report, never crash the harness
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
