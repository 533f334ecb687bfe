"""Independent numpy reference of the project's canonical INT4 layout (bit-exact spec).

Layout, per output row n of a [N, K] weight and per group g of G consecutive input columns
(k in [g*G, (g+1)*G), G in {32, 64, 128}, K % G == 0):

  all arithmetic in float32, every operation rounded to float32, round-half-to-even where noted
    lo    = min(min(w), 0)
    hi    = max(max(w), 0)
    s     = float32(hi - lo) / float32(15)          (float32 subtraction, float32 division)
    scale = 1.0 if s == 0 else s
    scale_bf16 = bf16_round(scale)                  (nearest, ties to even, on the float32 bits)
    zero_bf16  = bf16_round(float32(-lo) / float32(scale_bf16))
    code  = clip(rint(float32(w / scale_bf16) + zero_bf16), 0, 15)
            i.e. t = w / scale (float32 division, NOT w * (1/scale)), t = t + zero (float32 add),
            rint = round half to even; no fused multiply-add, no fast-math reciprocal
  storage
    packed[n, k // 2] = code[n, k] | (code[n, k + 1] << 4)   for even k  (low nibble = even k)
    scales[n, g] = bf16 bits of scale_bf16,  zeros[n, g] = bf16 bits of zero_bf16   (uint16)
  dequantization
    w' = (float32(code) - float32(zero_bf16)) * float32(scale_bf16)   (float32 sub, float32 mul)

The zero point is a bf16 real number (not an integer): zero = -lo/scale rounded to bf16.

Run as a script to write the bit-exact fixtures fixtures/tiny-glm4/golden/quant_*.{json,bin}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_io import bf16_bits_to_f32, dump_json, f32_to_bf16_bits  # noqa: E402

GROUP_SIZES = (32, 64, 128)


def quantize(w: np.ndarray, G: int):
    """w: float32 [N, K] -> (packed uint8 [N, K/2], scales_bf16 uint16 [N, K/G], zeros_bf16 uint16 [N, K/G])."""
    w = np.asarray(w)
    if w.dtype != np.float32:
        raise TypeError(f"quantize wants float32, got {w.dtype}")
    if w.ndim != 2:
        raise ValueError(f"quantize wants [N, K], got {w.shape}")
    N, K = w.shape
    if G not in GROUP_SIZES:
        raise ValueError(f"group size {G} not in {GROUP_SIZES}")
    if K % G != 0:
        raise ValueError(f"K={K} not a multiple of G={G}")
    if not np.all(np.isfinite(w)):
        raise ValueError("non-finite weight")
    wg = w.reshape(N, K // G, G)
    f32 = np.float32
    lo = np.minimum(wg.min(axis=2), f32(0))  # float32 [N, K/G]
    hi = np.maximum(wg.max(axis=2), f32(0))
    s = (hi - lo).astype(f32) / f32(15)
    assert s.dtype == np.float32
    scale = np.where(s == f32(0), f32(1), s).astype(f32)
    scale_bits = f32_to_bf16_bits(scale)
    scale_b = bf16_bits_to_f32(scale_bits)
    zero_bits = f32_to_bf16_bits((-lo).astype(f32) / scale_b)
    zero_b = bf16_bits_to_f32(zero_bits)
    t = (wg / scale_b[:, :, None]).astype(f32)  # float32 division
    assert t.dtype == np.float32
    t = (t + zero_b[:, :, None]).astype(f32)  # float32 add
    codes = np.clip(np.rint(t), 0, 15).astype(np.uint8).reshape(N, K)
    packed = (codes[:, 0::2] | (codes[:, 1::2] << np.uint8(4))).astype(np.uint8)
    return packed, scale_bits.astype(np.uint16), zero_bits.astype(np.uint16)


def unpack(packed: np.ndarray) -> np.ndarray:
    """packed uint8 [N, K/2] -> codes uint8 [N, K]."""
    N, K2 = packed.shape
    codes = np.empty((N, K2 * 2), dtype=np.uint8)
    codes[:, 0::2] = packed & np.uint8(0x0F)
    codes[:, 1::2] = packed >> np.uint8(4)
    return codes


def dequantize(packed: np.ndarray, scales_bf16: np.ndarray, zeros_bf16: np.ndarray, G: int) -> np.ndarray:
    """-> float32 [N, K]: (code - zero) * scale, float32 arithmetic."""
    codes = unpack(packed).astype(np.float32)
    N, K = codes.shape
    if scales_bf16.shape != (N, K // G) or zeros_bf16.shape != (N, K // G):
        raise ValueError(f"scales {scales_bf16.shape} / zeros {zeros_bf16.shape} do not fit [{N}, {K}] G={G}")
    sc = bf16_bits_to_f32(scales_bf16)[:, :, None]
    zr = bf16_bits_to_f32(zeros_bf16)[:, :, None]
    out = ((codes.reshape(N, K // G, G) - zr).astype(np.float32) * sc).astype(np.float32)
    return out.reshape(N, K)


def fake_quant(w: np.ndarray, G: int = 128) -> np.ndarray:
    """dequantize(quantize(w)) for float32 [N, K]."""
    p, s, z = quantize(w, G)
    return dequantize(p, s, z, G)


def quantize_scalar(w: np.ndarray, G: int):
    """Element-by-element restatement of quantize() with numpy float32 scalars (self-test only)."""
    f32 = np.float32
    N, K = w.shape
    packed = np.zeros((N, K // 2), dtype=np.uint8)
    scales = np.zeros((N, K // G), dtype=np.uint16)
    zeros = np.zeros((N, K // G), dtype=np.uint16)
    for n in range(N):
        for g in range(K // G):
            vals = [f32(v) for v in w[n, g * G : (g + 1) * G]]
            lo, hi = f32(0), f32(0)
            for v in vals:
                lo = v if v < lo else lo
                hi = v if v > hi else hi
            s = f32(f32(hi - lo) / f32(15))
            if s == f32(0):
                s = f32(1)
            sb = int(f32_to_bf16_bits(np.array([s], dtype=f32))[0])
            sf = bf16_bits_to_f32(np.array([sb], dtype=np.uint16))[0]
            zb = int(f32_to_bf16_bits(np.array([f32(f32(-lo) / sf)], dtype=f32))[0])
            zf = bf16_bits_to_f32(np.array([zb], dtype=np.uint16))[0]
            scales[n, g], zeros[n, g] = sb, zb
            for j, v in enumerate(vals):
                t = f32(f32(v / sf) + zf)
                q = int(min(max(np.rint(t), 0), 15))
                k = g * G + j
                packed[n, k // 2] |= np.uint8(q << (4 * (k % 2)))
    return packed, scales, zeros


# ---------------------------------------------------------------- fixture cases

def _bf16(x: np.ndarray) -> np.ndarray:
    return f32_to_bf16_bits(np.asarray(x, dtype=np.float32))


def build_cases():
    """Return list of (name, G, input_bits uint16 [N,K], description)."""
    cases = []

    rng = np.random.default_rng(20251125)
    cases.append(("rand_3x128_g32", 32, _bf16(rng.normal(0, 0.05, (3, 128))), "normal(0, 0.05)"))

    rng = np.random.default_rng(20251126)
    a = rng.normal(0, 1.0, (5, 256)).astype(np.float32)
    a[1] *= 100.0  # large magnitudes
    a[2] *= 1e-3  # small magnitudes
    a[3] = np.abs(a[3]) + 0.25  # all positive (lo = 0, zero = 0)
    a[4] = -np.abs(a[4]) - 0.25  # all negative (hi = 0, zero ~ 15)
    cases.append(("rand_5x256_g64", 64, _bf16(a), "normal(0,1); row1 x100, row2 x1e-3, row3 all positive, row4 all negative"))

    rng = np.random.default_rng(20251127)
    b = rng.standard_t(3, (4, 512)).astype(np.float32) * 0.02  # heavy tails, like real weights
    cases.append(("rand_4x512_g128", 128, _bf16(b), "student-t(3) * 0.02"))

    # special rows, G = 32, K = 128 (4 groups a row)
    c = np.zeros((8, 128), dtype=np.float32)
    c[0, :] = 0.0  # all zero: s == 0 -> scale 1, zero 0, codes 0
    c[1, :] = 0.375  # constant positive: lo 0, hi 0.375
    c[2, :] = -1.25  # constant negative
    c[3, :32] = 0.0  # group 0 zero, group 1 constant 3.0, groups 2/3 ramps
    c[3, 32:64] = 3.0
    c[3, 64:96] = np.linspace(-1.0, 2.0, 32)
    c[3, 96:128] = np.linspace(0.5, 4.0, 32)
    # exact midpoints with scale exactly 1 (lo = -7, hi = 8 -> s = 1, zero = 7): w + 7 = x.5
    mid = np.array([-7.0, 8.0] + [k + 0.5 for k in range(-7, 8)] + [-6.5, -0.5, 0.5, 1.5, 2.5, 3.5, 7.5, -7.0, 8.0, 0.0, 0.5, -0.5, 6.5, -3.5, 4.5], dtype=np.float32)
    assert mid.size == 32, mid.size
    c[4, :32] = mid
    # scale exactly 0.5 (lo = -3.5, hi = 4 -> s = 0.5, zero = 7): w = 0.25 * odd -> t = x.5
    c[4, 32:64] = np.concatenate([[-3.5, 4.0], 0.25 * np.array([2 * k + 1 for k in range(-7, 8)] * 2, dtype=np.float32)])
    # zero not an integer: lo = -1, hi = 0.5 -> s = 0.1 (inexact), zero = 10 -> midpoints off by rounding
    c[4, 64:96] = np.concatenate([[-1.0, 0.5], np.linspace(-1.0, 0.5, 30)])
    # scale exactly 2 (lo = -10, hi = 20), zero = 5: w = odd -> t = x.5
    c[4, 96:128] = np.concatenate([[-10.0, 20.0], np.array([2 * k + 1 for k in range(-5, 10)] * 2, dtype=np.float32)])
    # all-positive row and all-negative row with distinct values
    c[5] = np.linspace(0.01, 1.0, 128)
    c[6] = -np.linspace(0.01, 1.0, 128)[::-1]
    # a single nonzero per group (max at many places), one positive one negative
    c[7, 5] = 1.0
    c[7, 40] = -1.0
    c[7, 64 + 31] = 1e-2
    c[7, 96] = -3e4
    cases.append(("special_8x128_g32", 32, _bf16(c), "zero/constant rows, exact rounding midpoints (scale 1, 0.5, 2), ramps, single spikes"))

    # the same midpoint rows at G = 64 and G = 128 as well (groups then span several sub-blocks)
    cases.append(("special_8x128_g64", 64, _bf16(c), "special_8x128_g32's input at G = 64"))
    cases.append(("special_8x128_g128", 128, _bf16(c), "special_8x128_g32's input at G = 128"))

    # a real tensor of the tiny checkpoint is added by main() when the checkpoint exists
    return cases


def _write(path: str, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        f.write(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(root, "fixtures", "tiny-glm4", "golden"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    cases = build_cases()
    hf_dir = os.path.join(root, "fixtures", "tiny-glm4", "hf")
    if os.path.exists(os.path.join(hf_dir, "model.safetensors.index.json")):
        from st_io import read_sharded

        t = read_sharded(hf_dir)
        name = "model.layers.0.self_attn.o_proj.weight"
        cases.append(("tiny_l0_o_proj_rows0_63_g128", 128, t[name][:64],
                      f"rows 0..63 of the tiny checkpoint's {name} (HF naming) at G = 128"))
    else:
        print("warning: fixtures/tiny-glm4/hf not found; the real-tensor case is skipped", file=sys.stderr)

    listing = []
    for name, G, bits, desc in cases:
        bits = np.ascontiguousarray(bits, dtype=np.uint16)
        N, K = bits.shape
        w = bf16_bits_to_f32(bits)
        packed, sc, zr = quantize(w, G)
        deq = dequantize(packed, sc, zr, G)
        p2, s2, z2 = quantize_scalar(w, G)
        assert np.array_equal(packed, p2) and np.array_equal(sc, s2) and np.array_equal(zr, z2), f"{name}: scalar restatement disagrees"
        files = {
            "input": (f"quant_{name}_input.bin", "bf16", [N, K], bits),
            "packed": (f"quant_{name}_packed.bin", "uint8", [N, K // 2], packed),
            "scales": (f"quant_{name}_scales.bin", "bf16", [N, K // G], sc),
            "zeros": (f"quant_{name}_zeros.bin", "bf16", [N, K // G], zr),
            "dequant": (f"quant_{name}_dequant.bin", "float32", [N, K], deq),
        }
        entry = {"name": name, "description": desc, "N": N, "K": K, "G": G}
        for key, (fname, dt, shape, arr) in files.items():
            _write(os.path.join(args.out, fname), arr)
            entry[key] = {"file": fname, "dtype": dt, "shape": shape}
        codes = unpack(packed)
        entry["stats"] = {
            "codes_histogram": np.bincount(codes.ravel(), minlength=16).tolist(),
            "max_abs_err": float(np.max(np.abs(deq - w))),
        }
        listing.append(entry)
        print(f"{name:24s} [{N}x{K}] G={G:3d} max|w'-w|={entry['stats']['max_abs_err']:.4g} codes={entry['stats']['codes_histogram']}")

    doc = {
        "format": "glm4-int4-native quantizer goldens v1",
        "generated_by": "scripts/int4_ref.py (numpy " + np.__version__ + ")",
        "layout": {
            "group": "per output row n, groups of G consecutive input columns k",
            "lo_hi": "lo = min(min(w_group), 0), hi = max(max(w_group), 0), float32",
            "scale": "s = float32(hi - lo) / 15 (float32 division); scale = 1.0 if s == 0 else s; scale_bf16 = bf16_rne(scale)",
            "zero": "zero_bf16 = bf16_rne(float32(-lo) / scale_bf16) (float32 division)",
            "code": "clip(rint_half_even(float32(float32(w / scale_bf16) + zero_bf16)), 0, 15)",
            "packing": "packed[n, k/2] = code[n, k] | code[n, k+1] << 4 (low nibble = even k)",
            "dequant": "w' = float32(code - zero_bf16) * scale_bf16",
        },
        "files": "little-endian, row-major, no header; bf16 stored as uint16 bits",
        "cases": listing,
    }
    dump_json(os.path.join(args.out, "quant_cases.json"), doc)


if __name__ == "__main__":
    main()
