#!/usr/bin/env python3
"""Peers for the attention harness (scripts/gpu/attention.sh): torch's scaled_dot_product_attention on the shapes
bench/kernels/attention_bench.cu times, in the same device call. GLM-4-9B: Hq 32, Hkv 2, D 128, bf16.

Prefill: causal, one sequence of T tokens, FLOP = 2 * T^2 * Hq * D (causal half of 4 T^2 Hq D). Decode: B queries
of one token over contiguous caches of ctx tokens (torch has no paged cache), over enough cache copies that they
do not sit in L2, GB/s on the K and V bytes. Writes JSON lines to --json and prints a table."""
import argparse
import json
import time

import torch
import torch.nn.functional as F

HQ, HKV, D = 32, 2, 128


def timed(fn, reps):
    fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(reps):
        fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / reps  # ms


def sdpa_variants():
    """(name, fn(q, k, v, causal)) for GQA through enable_gqa (torch >= 2.5) and through repeated KV heads."""
    out = []

    def gqa(q, k, v, causal):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)

    def rep(q, k, v, causal):
        r = q.shape[1] // k.shape[1]
        return F.scaled_dot_product_attention(q, k.repeat_interleave(r, 1), v.repeat_interleave(r, 1), is_causal=causal)

    try:
        q = torch.randn(1, HQ, 16, D, device="cuda", dtype=torch.bfloat16)
        kv = torch.randn(1, HKV, 16, D, device="cuda", dtype=torch.bfloat16)
        gqa(q, kv, kv, True)
        out.append(("sdpa enable_gqa", gqa))
    except Exception as ex:  # older torch
        print(f"enable_gqa unavailable: {ex}")
    out.append(("sdpa repeated kv", rep))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    js = open(a.json, "w") if a.json else None
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    variants = sdpa_variants()
    torch.manual_seed(0)

    print("== torch prefill (causal, one sequence): ms, TFLOP/s")
    for T in ([2048, 8192] if a.quick else [2048, 8192, 32768]):
        q = torch.randn(1, HQ, T, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, HKV, T, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, HKV, T, D, device="cuda", dtype=torch.bfloat16)
        flop = 2.0 * T * T * HQ * D
        for name, fn in variants:
            try:
                ms = timed(lambda: fn(q, k, v, True), 3 if T >= 32768 else 10)
            except Exception as ex:
                print(f"  T={T} {name}: failed ({str(ex)[:120]})")
                continue
            tf = flop / (ms * 1e-3) / 1e12
            print(f"  T={T:<6} {name:<20} {ms:9.3f} ms {tf:7.1f} TFLOP/s")
            if js:
                js.write(json.dumps({"kind": "torch_prefill", "T": T, "variant": name, "ms": ms, "tflops": tf}) + "\n")
        del q, k, v
        torch.cuda.empty_cache()

    print("== torch decode (one query token per sequence over contiguous caches): us, GB/s on the cache")
    for B in (1, 32):
        for ctx in ([2048, 8192] if a.quick else [128, 2048, 8192, 32768]):
            nbytes = B * ctx * HKV * D * 2 * 2
            copies = max(2, min(16, (256 << 20) // nbytes + 1))
            if nbytes * copies > (24 << 30):
                continue
            qs = torch.randn(B, HQ, 1, D, device="cuda", dtype=torch.bfloat16)
            ks = [torch.randn(B, HKV, ctx, D, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
            vs = [torch.randn(B, HKV, ctx, D, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
            for name, fn in variants:
                def step():
                    for c in range(copies):
                        fn(qs, ks[c], vs[c], False)
                try:
                    ms = timed(step, 5)
                except Exception as ex:
                    print(f"  B={B} ctx={ctx} {name}: failed ({str(ex)[:120]})")
                    continue
                us = ms * 1e3 / copies
                gbs = nbytes / (us * 1e-6) / 1e9
                print(f"  B={B:<3} ctx={ctx:<6} {name:<20} {us:9.2f} us {gbs:8.0f} GB/s")
                if js:
                    js.write(json.dumps({"kind": "torch_decode", "B": B, "ctx": ctx, "variant": name, "us": us, "gbs": gbs}) + "\n")
            del qs, ks, vs
            torch.cuda.empty_cache()
    if js:
        js.close()


if __name__ == "__main__":
    main()
