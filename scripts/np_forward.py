"""Float64 numpy forward pass of a GLM-4 (chatglm / GlmForCausalLM) decoder.

An independent, plain implementation used to sanity-check the tiny fixture and to write a
numpy cross-reference (np_logits.*). It is NOT transformers; the transformers goldens come from
scripts/golden_logits.py.

Weights dict (HF names, float64 arrays, [out, in] like torch Linear):
  model.embed_tokens.weight [V, H]
  model.layers.N.input_layernorm.weight [H]
  model.layers.N.self_attn.{q,k,v}_proj.{weight,bias}
  model.layers.N.self_attn.o_proj.weight [H, nH*D]
  model.layers.N.post_attention_layernorm.weight [H]
  model.layers.N.mlp.gate_up_proj.weight [2F, H]   (gate rows first)
  model.layers.N.mlp.down_proj.weight [H, F]
  model.norm.weight [H]
  lm_head.weight [V, H]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np


@dataclass
class Dims:
    num_layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    eps: float
    rope_base: float
    rotary_dim: int


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    var = np.mean(x * x, axis=-1, keepdims=True)
    return x / np.sqrt(var + eps) * w


def rope_interleaved(x: np.ndarray, positions: np.ndarray, base: float, rotary_dim: int) -> np.ndarray:
    """x: [T, heads, D]. Rotates pairs (2i, 2i+1) for 2i < rotary_dim; the rest passes through."""
    half = rotary_dim // 2
    i = np.arange(half, dtype=np.float64)
    inv_freq = base ** (-(2.0 * i) / rotary_dim)  # [half]
    ang = positions.astype(np.float64)[:, None] * inv_freq[None, :]  # [T, half]
    c = np.cos(ang)[:, None, :]
    s = np.sin(ang)[:, None, :]
    out = x.copy()
    x0 = x[..., 0:rotary_dim:2]
    x1 = x[..., 1:rotary_dim:2]
    out[..., 0:rotary_dim:2] = x0 * c - x1 * s
    out[..., 1:rotary_dim:2] = x1 * c + x0 * s
    return out


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def forward(w: Dict[str, np.ndarray], d: Dims, ids: Sequence[int]) -> np.ndarray:
    """Logits [T, V] (float64) for token ids at positions 0..T-1, causal attention."""
    ids = np.asarray(ids, dtype=np.int64)
    T = ids.shape[0]
    pos = np.arange(T)
    h = w["model.embed_tokens.weight"][ids].astype(np.float64)
    rep = d.heads // d.kv_heads
    scale = 1.0 / np.sqrt(d.head_dim)
    mask = np.triu(np.ones((T, T), dtype=bool), k=1)  # True = masked (future)
    for L in range(d.num_layers):
        p = f"model.layers.{L}."
        x = rmsnorm(h, w[p + "input_layernorm.weight"], d.eps)
        q = x @ w[p + "self_attn.q_proj.weight"].T + w[p + "self_attn.q_proj.bias"]
        k = x @ w[p + "self_attn.k_proj.weight"].T + w[p + "self_attn.k_proj.bias"]
        v = x @ w[p + "self_attn.v_proj.weight"].T + w[p + "self_attn.v_proj.bias"]
        q = rope_interleaved(q.reshape(T, d.heads, d.head_dim), pos, d.rope_base, d.rotary_dim)
        k = rope_interleaved(k.reshape(T, d.kv_heads, d.head_dim), pos, d.rope_base, d.rotary_dim)
        v = v.reshape(T, d.kv_heads, d.head_dim)
        att = np.empty((T, d.heads, d.head_dim))
        for hh in range(d.heads):
            g = hh // rep  # query head hh reads KV group hh // (heads / kv_heads)
            sc = (q[:, hh, :] @ k[:, g, :].T) * scale  # [T, T]
            sc = np.where(mask, -np.inf, sc)
            sc = sc - sc.max(axis=-1, keepdims=True)
            pr = np.exp(sc)
            pr /= pr.sum(axis=-1, keepdims=True)
            att[:, hh, :] = pr @ v[:, g, :]
        h = h + att.reshape(T, d.heads * d.head_dim) @ w[p + "self_attn.o_proj.weight"].T
        x = rmsnorm(h, w[p + "post_attention_layernorm.weight"], d.eps)
        gu = x @ w[p + "mlp.gate_up_proj.weight"].T
        gate, up = gu[:, : d.ffn], gu[:, d.ffn :]
        h = h + (silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    x = rmsnorm(h, w["model.norm.weight"], d.eps)
    return x @ w["lm_head.weight"].T


def greedy(w: Dict[str, np.ndarray], d: Dims, ids: Sequence[int], n_new: int):
    """Greedy continuation by full recompute. Returns (new_tokens, margins top1-top2)."""
    seq = list(int(t) for t in ids)
    toks, margins = [], []
    for _ in range(n_new):
        last = forward(w, d, seq)[-1]
        order = np.argsort(-last, kind="stable")
        toks.append(int(order[0]))
        margins.append(float(last[order[0]] - last[order[1]]))
        seq.append(int(order[0]))
    return toks, margins
