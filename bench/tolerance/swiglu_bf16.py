#!/usr/bin/env python3
"""The measured reason for TOL.matmulSwiglu (test/helpers/cases.ts): the normalized squared error that rounding the
activations to bf16 (what the CUDA INT4 kernels stage for the tensor cores) alone causes in a SwiGLU-fused INT4
linear, over many random draws of the op table case linear_int4(M=1,N=224,K=256,G=128,swiglu,norm=bf16).
silu(g) * u has a heavy-tailed relative error (outputs near zero), unlike a plain linear. Run: python3 bench/tolerance/swiglu_bf16.py
"""
import numpy as np
rng=np.random.default_rng(1)
def bf16(a):
    a=np.asarray(a,np.float32); b=a.view(np.uint32).astype(np.uint64)
    b=((b+0x7FFF+((b>>16)&1))>>16)<<16
    return b.astype(np.uint32).view(np.float32).astype(np.float64)
def silu(g): return g/(1+np.exp(-g))
errs=[];errs_store=[]
K,N,G=256,224,128
for t in range(4000):
    x=(rng.standard_normal(K)*3).astype(np.float32)
    nw=bf16(rng.standard_normal(K)*0.5+1)
    q=rng.integers(0,16,(N,K)); s=bf16(rng.uniform(0.01,0.05,(N,K//G))); z=bf16(rng.uniform(0,15,(N,K//G)))
    W=(q-np.repeat(z,G,1))*np.repeat(s,G,1)
    r=1/np.sqrt(np.mean(x.astype(np.float64)**2)+1.5625e-7)
    xt=x.astype(np.float64)*nw
    y=r*(W@xt); ye=r*(W@bf16(xt.astype(np.float32)))
    ref=silu(y[:N//2])*y[N//2:]; got=silu(ye[:N//2])*ye[N//2:]
    errs.append(((got-ref)**2).sum()/(ref**2).sum())
    errs_store.append(((ye-y)**2).sum()/(y**2).sum())
e=np.array(errs); es=np.array(errs_store)
print("swiglu: mean %.2e p50 %.2e p99 %.2e max %.2e; frac>5e-5 %.4f"%(e.mean(),np.median(e),np.quantile(e,.99),e.max(),(e>5e-5).mean()))
print("store : mean %.2e p99 %.2e max %.2e"%(es.mean(),np.quantile(es,.99),es.max()))
