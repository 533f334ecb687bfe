#!/usr/bin/env python3
"""Checks the index math of the INT4 GEMMs (csrc/cuda/gemm_int4_common.cuh, gemm_int4_mma.cuh, gemm_int4_sm90.cuh)
on the CPU, lane by lane, before any GPU run: the layout-1 words as the spec (core/int4_layout.h) writes them,
dequant_word's bit tricks with bf16 rounding, the shared-memory stage layouts (cp.async writes of the mma kernel;
the TMA boxes of the wgmma kernel with the 128-byte swizzle), ldmatrix .x4 and mma.m16n8k16 / wgmma m64nNk16
fragment semantics (PTX), the scale/zero offsets, K splits (uniform, and whole tiles then K pieces with the tail
tiles zeroed), the tile order and the epilogue's (m, n) mapping.
Everything is compared with Y = X W^T computed plainly from the canonical weights.

What this cannot check: the hardware's reading of the wgmma descriptor and of the TMA swizzle. Both are modelled
here by the same address XOR (16-byte chunk ^= (address >> 7) & 7 inside 1024-byte atoms), so their agreement is by
construction; the GPU run checks the real thing. Run: python3 bench/kernels/gemm_fragments.py (numpy).
Keep the expressions in step with the headers."""
import itertools
import sys

import numpy as np

rng = np.random.default_rng(0)


# ------------------------------------------------------------------ bf16 arithmetic
def bf16(x):
    """Round float64 values to bf16 (nearest even), returned as float64."""
    a = np.asarray(x, dtype=np.float64).astype(np.float32)
    u = a.view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


def bf16_bits(x):
    a = np.asarray(bf16(x), dtype=np.float32)
    return (a.view(np.uint32) >> 16).astype(np.uint16)


def bits_to_f(h):
    return (np.asarray(h, dtype=np.uint32) << 16).view(np.float32).astype(np.float64)


def fma_bf16x2(a, b, c):
    """a, b, c: (lo, hi) float pairs; fma.rn.bf16x2: one rounding of the exact a*b + c."""
    return tuple(float(bf16(a[i] * b[i] + c[i])) for i in range(2))


# ------------------------------------------------------------------ layout 1 (the spec)
def l1_pos(K, n, k):
    nt, kt, r, kk = n // 16, k // 64, n % 16, k % 64
    j, c = kk // 16, kk % 16
    g, hi, t, second, e = r % 8, r // 8, (c % 8) // 2, c // 8, c % 2
    ai = e + 2 * hi + 4 * second
    pos = (ai % 2) * 4 + ai // 2
    lane = g * 4 + t
    return 512 * (nt * (K // 64) + kt) + 16 * lane + 4 * j + pos // 2, (pos % 2) * 4


def make_weight(N, K, G, codebook):
    q = rng.integers(0, 16, size=(N, K))
    s = bf16(rng.uniform(0.002, 0.02, size=(N, K // G)))
    z = bf16(rng.uniform(-0.25, 0.25, size=(N, K // G)) if codebook else rng.uniform(0, 15, size=(N, K // G)))
    codes = np.zeros(N * K // 2, dtype=np.uint8)
    for n in range(N):
        for k in range(K):
            b, sh = l1_pos(K, n, k)
            codes[b] |= np.uint8(q[n, k] << sh)
    s1 = np.zeros(N * (K // G), dtype=np.uint16)
    z1 = np.zeros_like(s1)
    for n in range(N):
        for gi in range(K // G):
            idx = ((n // 16) * (K // G) + gi) * 16 + n % 16
            s1[idx] = bf16_bits(s[n, gi])
            z1[idx] = bf16_bits(z[n, gi])
    return q, s, z, codes, s1, z1


NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]


# ------------------------------------------------------------------ dequant_word (gemm_int4_common.cuh)
def u16_bf(v):
    return float(bits_to_f(v & 0xFFFF))


def make_sz(s_g, z_g, s_g8, z_g8, zc):
    sg, zg, sh, zh = u16_bf(s_g), u16_bf(z_g), u16_bf(s_g8), u16_bf(z_g8)
    nzl = float(bf16(np.float32(-(zg - zc) * sg)))  # -(zg - zc) * sg in f32, then __float2bfloat16_rn
    nzh = float(bf16(np.float32(-(zh - zc) * sh)))
    return (sg, nzl, sh, nzh)


def dequant_word(w, sz, codebook):
    a = []
    for s in range(4):
        v = (w >> (4 * s)) & 0x000F000F
        if codebook == 1:
            idx = (v | (v >> 12)) & 0xFF
            pair = (float(bf16(NF4[idx & 15])), float(bf16(NF4[idx >> 4])))
        else:
            m = v | 0x43004300
            pair = fma_bf16x2((u16_bf(m), u16_bf(m >> 16)), (1.0, 1.0), (-136.0, -136.0))
        sc, nz = (sz[2], sz[3]) if s & 1 else (sz[0], sz[1])
        a.append(fma_bf16x2(pair, (sc, sc), (nz, nz)))
    return a


def frag_A(a_lane):
    """mma.m16n8k16 A fragments of 32 lanes -> the 16 x 16 matrix (PTX layout)."""
    A = np.zeros((16, 16))
    for lane in range(32):
        g, t = lane // 4, lane % 4
        A[g, 2 * t:2 * t + 2] = a_lane[lane][0]
        A[g + 8, 2 * t:2 * t + 2] = a_lane[lane][1]
        A[g, 2 * t + 8:2 * t + 10] = a_lane[lane][2]
        A[g + 8, 2 * t + 8:2 * t + 10] = a_lane[lane][3]
    return A


def word(smem, off):
    return int(smem[off]) | (int(smem[off + 1]) << 8) | (int(smem[off + 2]) << 16) | (int(smem[off + 3]) << 24)


def u16_at(smem, off):
    return int(smem[off]) | (int(smem[off + 1]) << 8)


def put_bytes(smem, off, data):
    b = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
    smem[off:off + len(b)] = b


def expected_dequant(q, s, z, codebook):
    """The kernel's arithmetic on the whole weight: fma(value, s, bf16(-(z - zc) s)) rounded to bf16, where
    value = q - 8 (exact) and zc = 8 for integer codes, value = bf16(NF4[q]) and zc = 0 for NF4."""
    G = q.shape[1] // s.shape[1]
    val = np.array(NF4)[q] if codebook else q.astype(np.float64) - 8.0
    val = bf16(val) if codebook else val
    zc = 0.0 if codebook else 8.0
    S = np.repeat(s, G, axis=1)
    Z = np.repeat(z, G, axis=1)
    nz = bf16(np.float32(-(Z - zc) * S).astype(np.float64))
    return bf16(val * S + nz)


# ------------------------------------------------------------------ the mma.sync kernel (gemm_int4_mma.cuh)
def ldmatrix_x4(smem, addrs):
    regs = [[None] * 4 for _ in range(32)]
    for mtx in range(4):
        rows = [np.frombuffer(smem[addrs[8 * mtx + r]:addrs[8 * mtx + r] + 16].tobytes(), dtype=np.uint16) for r in range(8)]
        for lane in range(32):
            g, t = lane // 4, lane % 4
            regs[lane][mtx] = (u16_bf(rows[g][2 * t]), u16_bf(rows[g][2 * t + 1]))
    return regs


def run_mma(X, codes, s1, z1, M, N, K, G, codebook, WW, WT, MW, NT, splits, bias):
    BR, BT, RT = WW * MW * 16, WT * NT * 8, WW * MW
    X_BYTES, W_BYTES, SZ_BYTES = BT * 128, RT * 512, RT * 64
    KT, KG, NTILES = K // 64, K // G, N // 16
    gps = 2 if G == 32 else 1
    Xbits = bf16_bits(X)
    Y = np.zeros((M, N))
    for bx, by, bz in itertools.product(range((M + BT - 1) // BT), range((N // 16 + RT - 1) // RT), range(splits)):
        m0, rt0 = bx * BT, by * RT
        kb, ke = KT * bz // splits, KT * (bz + 1) // splits
        acc = {}
        for kt in range(kb, ke):
            st = np.zeros(X_BYTES + W_BYTES + 2 * SZ_BYTES, dtype=np.uint8)
            for c in range(BT * 8):  # load_stage: X
                r, ch = c >> 3, c & 7
                m = m0 + r
                src = Xbits[m, kt * 64 + ch * 8: kt * 64 + ch * 8 + 8] if m < M else np.zeros(8, np.uint16)
                put_bytes(st, r * 128 + ((ch ^ (r & 7)) << 4), src)
            sw = X_BYTES
            for c in range(RT * 32):  # W
                rt = c >> 5
                nt = rt0 + rt
                src = codes[(nt * KT + kt) * 512 + (c & 31) * 16:(nt * KT + kt) * 512 + (c & 31) * 16 + 16] if nt < NTILES else np.zeros(16, np.uint8)
                put_bytes(st, sw + c * 16, src)
            ss, sz = sw + W_BYTES, sw + W_BYTES + SZ_BYTES
            gi0 = (kt * 64) // G
            for c in range(RT * 2 * gps):  # S, Z
                rt, rem = c // (2 * gps), c % (2 * gps)
                nt = rt0 + rt
                e = ((nt if nt < NTILES else 0) * KG + gi0) * 16 + rem * 8
                put_bytes(st, ss + rt * 64 + rem * 16, s1[e:e + 8] if nt < NTILES else np.zeros(8, np.uint16))
                put_bytes(st, sz + rt * 64 + rem * 16, z1[e:e + 8] if nt < NTILES else np.zeros(8, np.uint16))
            for warp in range(WW * WT):
                ww, wt = warp % WW, warp // WW
                for j in range(4):
                    a = {}
                    for i in range(MW):
                        lanes = []
                        for lane in range(32):
                            g = lane >> 2
                            raw = st[sw + (ww * MW + i) * 512 + lane * 16: sw + (ww * MW + i) * 512 + lane * 16 + 16]
                            wd = word(raw, 4 * j)
                            o0 = (ww * MW + i) * 64 + (32 if (j == 2 and gps == 2) or (j == 3 and gps == 2) else 0) + g * 2
                            gsz = make_sz(u16_at(st, ss + o0), u16_at(st, sz + o0), u16_at(st, ss + o0 + 16), u16_at(st, sz + o0 + 16), 0.0 if codebook == 1 else 8.0)
                            lanes.append(dequant_word(wd, gsz, codebook))
                        a[i] = frag_A(lanes)
                    for p in range(NT // 2):
                        addrs = []
                        for lane in range(32):
                            r = wt * NT * 8 + p * 16 + (lane & 7) + ((lane >> 4) << 3)
                            ch = 2 * j + ((lane >> 3) & 1)
                            addrs.append(r * 128 + ((ch ^ (r & 7)) << 4))
                        b = ldmatrix_x4(st, addrs)
                        for half in range(2):
                            B = np.zeros((16, 8))
                            for lane in range(32):
                                g, t = lane // 4, lane % 4
                                B[2 * t:2 * t + 2, g] = b[lane][2 * half]
                                B[2 * t + 8:2 * t + 10, g] = b[lane][2 * half + 1]
                            for i in range(MW):
                                key = (warp, i, 2 * p + half)
                                acc[key] = acc.get(key, np.zeros((16, 8))) + a[i] @ B
        # epilogue: store_column
        for (warp, i, jn), D in acc.items():
            ww, wt = warp % WW, warp // WW
            for lane in range(32):
                g = lane >> 2
                mc = m0 + wt * NT * 8 + (lane & 3) * 2
                for h in range(2):
                    n = (rt0 + ww * MW + i) * 16 + g + 8 * h
                    if n >= N:
                        continue
                    for e in range(2):
                        m = mc + 8 * jn + e
                        if m < M:
                            v = D[g + 8 * h, (lane & 3) * 2 + e] + (bias[n] if bz == 0 else 0.0)
                            Y[m, n] += v  # split: red.add into zeroed y; else a plain store (each element once)
    return Y


# ------------------------------------------------------------------ the wgmma kernel (gemm_int4_sm90.cuh)
def tile_coord(t, n_mb, n_nb, panel=8):
    per_split = n_mb * n_nb
    split = t // per_split
    r = t - split * per_split
    full = n_mb // panel
    in_full = full * panel * n_nb
    if r < in_full:
        p = r // (panel * n_nb)
        r -= p * panel * n_nb
        return p * panel + r % panel, r // panel, split
    r -= in_full
    w = n_mb - full * panel
    return full * panel + r % w, r // w, split


def sched_unit(u, tiles, dp, splits):
    """gemm_int4_sm90.cuh sched_unit: (tile, split, nsplit) of unit u."""
    if u < dp:
        return u, 0, 1
    v, tail = u - dp, tiles - dp
    return dp + v % tail, v // tail, splits


def run_sm90(X, codes, s1, z1, M, N, K, G, codebook, WR, TT, splits, grid, bias, dp=None):
    """dp: whole tiles first (gemmk::Sched); None: the uniform split (dp = 0, or all tiles when splits = 1)."""
    RT, BR = 2 * WR * 4, 2 * WR * 4 * 16
    X_BYTES, W_BYTES, SZ_BYTES = TT * 128, RT * 512, RT * 64
    KT, KG = K // 64, K // G
    gps = 2 if G == 32 else 1
    n_mb, n_nb = (M + TT - 1) // TT, (N // 16 + RT - 1) // RT
    tiles = n_mb * n_nb
    if dp is None:
        dp = 0 if splits > 1 else tiles
    total = dp + (tiles - dp) * splits  # sched_units
    Xbits = bf16_bits(X)
    codes32 = np.frombuffer(codes.tobytes(), dtype=np.uint32).reshape(N // 16, KT * 128)
    S2 = s1.reshape(N // 16, KG * 16)
    Z2 = z1.reshape(N // 16, KG * 16)
    Y = np.full((M, N), np.nan)  # poisoned: what no store and no zeroing reaches stays NaN
    if splits > 1 and dp < tiles:  # launch_gemm_int4_sm90_sched: memset when dp = 0, else gemm_zero_tiles_kernel
        if dp == 0:
            Y[:] = 0.0
        for b in range(tiles - dp):
            zmb, znb, _ = tile_coord(dp + b, n_mb, n_nb)
            rows, cols = min(TT, M - zmb * TT), min(BR, N - znb * BR)
            for i in range(rows * cols):
                Y[zmb * TT + i // cols, znb * BR + i % cols] = 0.0
    seen = set()
    for blk in range(grid):
        for t in range(blk, total, grid):
            tile, split, nsplit = sched_unit(t, tiles, dp, splits)
            mb, nb, _ = tile_coord(tile, n_mb, n_nb)
            assert (mb, nb, split) not in seen
            seen.add((mb, nb, split))
            kb, ke = KT * split // nsplit, KT * (split + 1) // nsplit
            m0, rt0 = mb * TT, nb * RT
            acc = {}
            for kt in range(kb, ke):
                st = np.zeros(X_BYTES + W_BYTES + 2 * SZ_BYTES, dtype=np.uint8)
                # TMA X: box [TT][64] bf16 at (kt*64, m0), 128B swizzle, out-of-range rows zero
                for r in range(TT):
                    m = m0 + r
                    row = Xbits[m, kt * 64:kt * 64 + 64] if m < M else np.zeros(64, np.uint16)
                    for c in range(8):
                        put_bytes(st, r * 128 + ((c ^ (r % 8)) * 16), row[8 * c:8 * c + 8])
                # TMA W: box [RT][128 u32] at (kt*128, rt0)
                for r in range(RT):
                    row = codes32[rt0 + r, kt * 128:kt * 128 + 128] if rt0 + r < N // 16 else np.zeros(128, np.uint32)
                    put_bytes(st, X_BYTES + r * 512, row)
                # TMA S, Z: box [RT][16 gps] bf16 at (gi0*16, rt0)
                gi0 = (kt * 64) // G
                for r in range(RT):
                    for arr, base in ((S2, X_BYTES + W_BYTES), (Z2, X_BYTES + W_BYTES + SZ_BYTES)):
                        row = arr[rt0 + r, gi0 * 16:gi0 * 16 + 16 * gps] if rt0 + r < N // 16 else np.zeros(16 * gps, np.uint16)
                        put_bytes(st, base + r * 32 * gps, row)
                sw, ss = X_BYTES, X_BYTES + W_BYTES
                sz = ss + SZ_BYTES
                for c in range(2):  # consumer warpgroups
                    for r in range(WR):
                        for j in range(4):
                            lanes_by_warp = []
                            for warp in range(4):
                                rt = (c * WR + r) * 4 + warp
                                lanes = []
                                for lane in range(32):
                                    g = lane >> 2
                                    wd = word(st, sw + rt * 512 + lane * 16 + 4 * j)
                                    o0 = rt * 32 * gps + g * 2
                                    q = 32 if (gps == 2 and j >= 2) else 0
                                    gsz = make_sz(u16_at(st, ss + o0 + q), u16_at(st, sz + o0 + q), u16_at(st, ss + o0 + q + 16), u16_at(st, sz + o0 + q + 16), 0.0 if codebook == 1 else 8.0)
                                    lanes.append(dequant_word(wd, gsz, codebook))
                                lanes_by_warp.append(frag_A(lanes))
                            A = np.vstack(lanes_by_warp)  # 64 x 16: warp w owns rows 16w..16w+15
                            # B through the descriptor: K-major, SW128, start + 32 j bytes, 8-row groups 1024 apart
                            B = np.zeros((16, TT))
                            for nn in range(TT):
                                for kk in range(16):
                                    addr = 32 * j + (nn // 8) * 1024 + (nn % 8) * 128 + kk * 2
                                    phys = addr ^ (((addr >> 7) & 7) << 4)
                                    B[kk, nn] = u16_bf(u16_at(st, phys))
                            acc[(c, r)] = acc.get((c, r), np.zeros((64, TT))) + A @ B
            # epilogue: acc[r][4i + 2h + e] = D[16 warp + g + 8h][8i + 2t + e] -> store_column
            for (c, r), D in acc.items():
                for warp in range(4):
                    for lane in range(32):
                        g = lane >> 2
                        mc = mb * TT + (lane & 3) * 2
                        for h in range(2):
                            n = nb * BR + (c * WR + r) * 64 + warp * 16 + g + 8 * h
                            if n >= N:
                                continue
                            for i in range(TT // 8):
                                for e in range(2):
                                    m = mc + 8 * i + e
                                    if m < M:
                                        v = D[warp * 16 + g + 8 * h, 8 * i + (lane & 3) * 2 + e] + (bias[n] if split == 0 else 0.0)
                                        if nsplit > 1:
                                            Y[m, n] += v  # red.add into the zeroed tile
                                        else:
                                            Y[m, n] = v
    assert len(seen) == total
    assert not np.isnan(Y).any(), "an output element was never written"
    return Y


def main():
    worst = 0.0
    cases = [  # (kernel, M, N, K, G, codebook, cfg, splits)
        ("mma", 20, 144, 192, 32, 0, (4, 1, 2, 2), 1),
        ("mma", 9, 80, 256, 128, 0, (4, 1, 2, 2), 2),
        ("mma", 33, 48, 128, 64, 1, (4, 2, 2, 2), 1),
        ("sm90", 20, 272, 192, 32, 0, (1, 16), 1),
        ("sm90", 17, 144, 256, 128, 0, (2, 16), 2),
        ("sm90", 40, 80, 128, 64, 1, (1, 32), 1),
        # whole tiles then K pieces (gemmk::Sched): 9 tiles on a grid of 4, dp = 8 whole, the last in 3 pieces
        ("sm90", 40, 272, 256, 64, 0, (1, 16, 8), 3),
    ]
    for kernel, M, N, K, G, cb, cfg, splits in cases:
        q, s, z, codes, s1, z1 = make_weight(N, K, G, cb)
        X = bf16(rng.standard_normal((M, K)))
        bias = bf16(rng.standard_normal(N) * 0.3)
        W = expected_dequant(q, s, z, cb)
        ref = X @ W.T + bias
        if kernel == "mma":
            Y = run_mma(X, codes, s1, z1, M, N, K, G, cb, *cfg, splits, bias)
        else:
            WR, TT = cfg[:2]
            n_tiles = ((M + TT - 1) // TT) * ((N // 16 + 2 * WR * 4 - 1) // (2 * WR * 4)) * splits
            if len(cfg) > 2:  # (WR, TT, dp): grid 4
                Y = run_sm90(X, codes, s1, z1, M, N, K, G, cb, WR, TT, splits, 4, bias, dp=cfg[2])
            else:
                Y = run_sm90(X, codes, s1, z1, M, N, K, G, cb, WR, TT, splits, max(1, n_tiles // 2 + 1), bias)
        err = np.abs(Y - ref).max() / np.abs(ref).max()
        worst = max(worst, err)
        print(f"{kernel:5s} M={M} N={N} K={K} G={G} codebook={cb} cfg={cfg} splits={splits}: max rel diff {err:.2e}")
    # dequant vs the f32 canonical (q - z) s: the bf16 rounding the tolerance comment speaks of
    q, s, z, *_ = make_weight(64, 256, 64, 0)
    Wk = expected_dequant(q, s, z, 0)
    We = (q - np.repeat(z, 64, axis=1)) * np.repeat(s, 64, axis=1)
    print(f"dequant: kernel vs exact weights, normalized squared {((Wk - We) ** 2).sum() / (We ** 2).sum():.2e}")
    # the first version's arithmetic (subtract 128, round -z s): the error the change removed
    S, Z = np.repeat(s, 64, axis=1), np.repeat(z, 64, axis=1)
    Wold = bf16(q.astype(np.float64) * S + bf16(np.float32(-Z * S).astype(np.float64)))
    print(f"dequant: the first version (fma(q, s, bf16(-z s))) vs exact weights, normalized squared {((Wold - We) ** 2).sum() / (We ** 2).sum():.2e}")
    ok = worst < 1e-9
    print("fragment math:", "ok" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
