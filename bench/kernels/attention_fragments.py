# Checks the fragment index math of csrc/cuda/attention_kernels.cuh (qk_tile, softmax_update, pv_tile: the ldmatrix
# row/column addresses, the P -> A-fragment packing, the quad reductions) on the CPU: a warp is emulated lane by lane
# with the PTX semantics of ldmatrix .x4 (and .trans) and mma.m16n8k16, and compared with plain attention on one tile.
# Run: python3 bench/kernels/attention_fragments.py (numpy). Keep the expressions in step with the kernel header.
import numpy as np
rng = np.random.default_rng(0)
D = 128; LD = D + 8; NK = 64

def ldsm_x4(smem, addrs, trans):
    # smem: 2D array [rows, LD] of values; addrs[lane] = (row, col) start of an 8-element row
    regs = [[None]*4 for _ in range(32)]
    for j in range(4):
        M = np.array([smem[addrs[8*j + r][0], addrs[8*j + r][1]:addrs[8*j + r][1] + 8] for r in range(8)])
        for lane in range(32):
            g, t = lane // 4, lane % 4
            if not trans: regs[lane][j] = (M[g, 2*t], M[g, 2*t+1])
            else: regs[lane][j] = (M[2*t, g], M[2*t+1, g])
    return regs

def mma(c, a, b0, b1):
    # c[lane] = [4], a[lane] = 4 pairs, b0/b1[lane] = pairs ; compute D = A B + C in fragment form
    A = np.zeros((16, 16)); B = np.zeros((16, 8))
    for lane in range(32):
        g, t = lane // 4, lane % 4
        A[g, 2*t:2*t+2] = a[lane][0]; A[g+8, 2*t:2*t+2] = a[lane][1]
        A[g, 2*t+8:2*t+10] = a[lane][2]; A[g+8, 2*t+8:2*t+10] = a[lane][3]
        B[2*t:2*t+2, g] = b0[lane]; B[2*t+8:2*t+10, g] = b1[lane]
    C = A @ B
    for lane in range(32):
        g, t = lane // 4, lane % 4
        c[lane][0] += C[g, 2*t]; c[lane][1] += C[g, 2*t+1]; c[lane][2] += C[g+8, 2*t]; c[lane][3] += C[g+8, 2*t+1]

def qk_tile(NP, qa, ks, kbase):
    s = [[[0.0]*4 for _ in range(32)] for _ in range(NP)]
    for kd in range(D // 16):
        for np_ in range(NP // 2):
            addrs = []
            for lane in range(32):
                krow = kbase + (lane & 7) + ((lane >> 4) << 3)
                kcol = ((lane >> 3) & 1) * 8
                addrs.append((krow + np_*16, kd*16 + kcol))
            r = ldsm_x4(ks, addrs, False)
            mma(s[2*np_], [qa[l][kd] for l in range(32)], [r[l][0] for l in range(32)], [r[l][1] for l in range(32)])
            mma(s[2*np_+1], [qa[l][kd] for l in range(32)], [r[l][2] for l in range(32)], [r[l][3] for l in range(32)])
    return s

def pv_tile(NP, o, p, vs, kbase):
    for kk in range(NP // 2):
        pa = [((p[2*kk][l][0], p[2*kk][l][1]), (p[2*kk][l][2], p[2*kk][l][3]), (p[2*kk+1][l][0], p[2*kk+1][l][1]), (p[2*kk+1][l][2], p[2*kk+1][l][3])) for l in range(32)]
        for dn in range(D // 16):
            addrs = []
            for lane in range(32):
                vrow = (lane & 7) + ((lane >> 3) & 1) * 8
                vcol = (lane >> 4) * 8
                addrs.append((kbase + kk*16 + vrow, dn*16 + vcol))
            r = ldsm_x4(vs, addrs, True)
            mma(o[2*dn], pa, [r[l][0] for l in range(32)], [r[l][1] for l in range(32)])
            mma(o[2*dn+1], pa, [r[l][2] for l in range(32)], [r[l][3] for l in range(32)])

def q_frags(Q):  # Q [16, D]
    qa = []
    for lane in range(32):
        g, t = lane // 4, lane % 4
        fr = []
        for kd in range(D // 16):
            c = kd*16 + 2*t
            fr.append(((Q[g, c], Q[g, c+1]), (Q[g+8, c], Q[g+8, c+1]), (Q[g, c+8], Q[g, c+9]), (Q[g+8, c+8], Q[g+8, c+9])))
        qa.append(fr)
    return qa

def softmax_update(NP, s, m, l, o):
    for i in range(2):
        for lane in range(32):
            pass
        # quad max
        mx = [max(max(s[n][lane][2*i], s[n][lane][2*i+1]) for n in range(NP)) for lane in range(32)]
        mxq = [max(mx[(lane & ~3) + k] for k in range(4)) for lane in range(32)]
        for lane in range(32):
            mn = max(m[lane][i], mxq[lane]); mu = 0.0 if mn == -np.inf else mn
            corr = 2.0 ** (m[lane][i] - mu)
            sm = 0.0
            for n in range(NP):
                for e in (2*i, 2*i+1):
                    s[n][lane][e] = 2.0 ** (s[n][lane][e] - mu); sm += s[n][lane][e]
            l[lane][i] = l[lane][i] * corr + sm
            for n in range(D // 8):
                o[n][lane][2*i] *= corr; o[n][lane][2*i+1] *= corr
            m[lane][i] = mn

def run(NP, nkeys_valid, per_row_pos=None):
    Q = rng.standard_normal((16, D)); K = rng.standard_normal((NK, D)); V = rng.standard_normal((NK, D))
    ks = np.zeros((NK, LD)); vs = np.zeros((NK, LD)); ks[:, :D] = K; vs[:, :D] = V
    qa = q_frags(Q)
    o = [[[0.0]*4 for _ in range(32)] for _ in range(D // 8)]
    m = [[-np.inf, -np.inf] for _ in range(32)]; l = [[0.0, 0.0] for _ in range(32)]
    nkeys = 8 * NP
    for kbase in range(0, NK, nkeys):
        s = qk_tile(NP, qa, ks, kbase)
        for n in range(NP):
            for lane in range(32):
                g, t = lane // 4, lane % 4
                for e in range(4):
                    key = kbase + n*8 + 2*t + (e & 1); row = g + 8*(e >> 1)
                    lim = per_row_pos[row] if per_row_pos is not None else nkeys_valid - 1
                    if key > lim: s[n][lane][e] = -np.inf
        softmax_update(NP, s, m, l, o)
        pv_tile(NP, o, s, vs, kbase)
    out = np.zeros((16, D))
    for lane in range(32):
        g, t = lane // 4, lane % 4
        for i in range(2):
            lq = sum(l[(lane & ~3) + k][i] for k in range(4))
            for n in range(D // 8):
                out[g + 8*i, n*8 + 2*t] = o[n][lane][2*i] / lq; out[g + 8*i, n*8 + 2*t + 1] = o[n][lane][2*i+1] / lq
    # reference (log2 domain: scores are Q.K used as log2 values)
    S = Q @ K.T
    ref = np.zeros((16, D))
    for r in range(16):
        lim = per_row_pos[r] if per_row_pos is not None else nkeys_valid - 1
        sr = S[r, :lim+1]; w = 2.0 ** (sr - sr.max()); w /= w.sum(); ref[r] = w @ V[:lim+1]
    return np.abs(out - ref).max()

print("decode-like NP=2 (16 keys a step), 64 keys:", run(2, 64))
print("decode-like NP=2, 50 valid keys:", run(2, 50))
print("prefill-like NP=8 (64 keys), causal per-row:", run(8, 64, per_row_pos=[5*r + 3 for r in range(16)]))
