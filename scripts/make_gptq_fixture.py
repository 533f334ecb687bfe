"""GPTQ-format checkpoints of the tiny GLM-4 (fixtures/gptq-tiny/<variant>/), numpy only.

An independent statement of the GPTQ checkpoint format as AutoGPTQ / GPTQModel write it, used to test
lib/checkpoint/gptq.ts. The weights are quantized round-to-nearest (RTN) with GPTQ's parameter rule (no Hessian,
no error feedback: the format does not depend on how the codes were chosen), then packed:

  W [N, K] (N outputs, K inputs), groups of G input columns (G = -1: one group), ng = ceil(K / G)
  per group g and output n (over the group's columns, in act-order when desc_act):
    xmin = min(min(w), 0), xmax = max(max(w), 0)
    sym:  xmax = max(|xmin|, xmax); xmin = -xmax if xmin < 0;  zero = 8
    both zero -> xmin = -1, xmax = 1
    scale = (xmax - xmin) / 15 (float32), stored as float16; the codes use the stored scale
    asym: zero = rint(-xmin / scale16), clipped to 0..15
    code  = clip(rint(w / scale16) + zero, 0, 15)
  qweight I32 [K/8, N]:  word (k/8, n) holds code(n, k) at bits 4*(k % 8) .. +3   (low bits first along K)
  qzeros  I32 [ng, N/8]: word (g, n/8) holds stored(g, n) at bits 4*(n % 8) .. +3 (low bits first along N)
                         v1 ("gptq"): stored = (zero - 1) & 15   (a zero of 0 is stored as 15, read as 16)
                         v2 ("gptq_v2"): stored = zero
  scales  F16 [ng, N];  g_idx I32 [K] = the group of each input column (k // G without act-order)
  reading: W(n, k) = (code(n, k) - zero(g_idx[k], n)) * scale(g_idx[k], n), zero = stored + 1 (v1) or stored (v2)

Variants (one layer of the tiny model, so that the fixture stays small; embedding, norms, biases and
unquantized linears in F16 as GPTQ exports store them):
  v1-sym-g128-original   checkpoint_format gptq, sym, G 128, original naming (fused query_key_value),
                         lm_head quantized too (lm_head: true), quantize_config.json
  v1-asym-g32-hf         gptq, asym, G 32, HF naming (q/k/v_proj separate), quantization_config in
                         config.json only (transformers style); row 0 of q_proj has an all-positive first
                         group, so its true zero 0 is stored as 15 and read back as 16 (v1's known limit)
  v2-asym-g64-original   gptq_v2 (zero stored as is), asym, G 64, no g_idx tensors (k // G implied)
  v1-sym-g64-descact-hf  gptq, sym, G 64, desc_act: a random column permutation per layer (q/k/v share
                         one, as they share their input), g_idx scattered
Per variant, <variant>/../<variant>.qkv0.bin (float32 [384, 256], layer 0's fused [q; k; v]) is read back
from the packed tensors by an unpacker written separately from the packer:
  exact variants: (code - zero) * bf16_round(scale16)  -- what the canonical repack must give, bit for bit
  desc_act:       (code - zero) * scale16 (exact)       -- the input of the library's re-quantization
manifest.json lists the variants and files. Deterministic: re-running rewrites identical bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_io import bf16_bits_to_f32, bf16_round, dump_json, read_sharded, write_safetensors  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TINY = os.path.join(ROOT, "fixtures", "tiny-glm4")
OUT = os.path.join(ROOT, "fixtures", "gptq-tiny")

f32, f16 = np.float32, np.float16


def rtn_params(W: np.ndarray, G: int, sym: bool, order: np.ndarray):
    """GPTQ-rule RTN. W float32 [N, K] -> codes uint8 [N, K], scale16 float16 [ng, N], zero int [ng, N], g_idx int32 [K]."""
    N, K = W.shape
    gs = K if G == -1 else G
    ng = -(-K // gs)
    codes = np.zeros((N, K), dtype=np.uint8)
    scale16 = np.zeros((ng, N), dtype=f16)
    zero = np.zeros((ng, N), dtype=np.int64)
    g_idx = np.empty(K, dtype=np.int32)
    for g in range(ng):
        cols = order[g * gs:(g + 1) * gs]
        g_idx[cols] = g
        x = W[:, cols]
        xmin = np.minimum(x.min(axis=1), f32(0))
        xmax = np.maximum(x.max(axis=1), f32(0))
        if sym:
            xmax = np.maximum(np.abs(xmin), xmax)
            xmin = np.where(xmin < 0, -xmax, xmin)
        both = (xmin == 0) & (xmax == 0)
        xmin = np.where(both, f32(-1), xmin).astype(f32)
        xmax = np.where(both, f32(1), xmax).astype(f32)
        s16 = ((xmax - xmin) / f32(15)).astype(f32).astype(f16)
        s = s16.astype(f32)
        z = np.full(N, 8, dtype=np.int64) if sym else np.clip(np.rint(-xmin / s), 0, 15).astype(np.int64)
        q = np.clip(np.rint(x / s[:, None]) + z[:, None], 0, 15).astype(np.uint8)
        codes[:, cols] = q
        scale16[g] = s16
        zero[g] = z
    return codes, scale16, zero, g_idx


def pack(codes: np.ndarray, zero: np.ndarray, v1: bool):
    """codes [N, K], zero [ng, N] -> qweight uint32 [K/8, N], qzeros uint32 [ng, N/8]."""
    N, K = codes.shape
    cT = codes.T.astype(np.uint32)
    qweight = np.zeros((K // 8, N), dtype=np.uint32)
    for i in range(8):
        qweight |= cT[i::8, :] << np.uint32(4 * i)
    stored = ((zero - 1) & 15) if v1 else zero
    assert stored.min() >= 0 and stored.max() <= 15
    stored = stored.astype(np.uint32)
    qzeros = np.zeros((zero.shape[0], N // 8), dtype=np.uint32)
    for i in range(8):
        qzeros |= stored[:, i::8] << np.uint32(4 * i)
    return qweight, qzeros


def unpack_dequant(qweight: np.ndarray, qzeros: np.ndarray, scale16: np.ndarray, g_idx: np.ndarray, v1: bool, bf16_scales: bool) -> np.ndarray:
    """The reader: packed tensors -> float32 W [N, K] (every product exact in float32)."""
    K8, N = qweight.shape
    K = K8 * 8
    codes = np.empty((K, N), dtype=np.int64)
    for i in range(8):
        codes[i::8, :] = (qweight >> np.uint32(4 * i)) & np.uint32(15)
    ng = qzeros.shape[0]
    stored = np.empty((ng, N), dtype=np.int64)
    for i in range(8):
        stored[:, i::8] = (qzeros >> np.uint32(4 * i)) & np.uint32(15)
    zero = stored + 1 if v1 else stored
    s = scale16.astype(f32)
    if bf16_scales:
        s = bf16_round(s)
    diff = (codes - zero[g_idx, :]).astype(f32)
    W = (diff * s[g_idx, :]).astype(f32)
    return np.ascontiguousarray(W.T)


def to_f16(bits: np.ndarray) -> np.ndarray:
    return bf16_bits_to_f32(bits).astype(f16)


VARIANTS = [
    dict(name="v1-sym-g128-original", naming="original", v1=True, sym=True, G=128, desc_act=False, lm_head=True, g_idx=True, where="quantize_config.json"),
    dict(name="v1-asym-g32-hf", naming="hf", v1=True, sym=False, G=32, desc_act=False, lm_head=False, g_idx=True, where="config.json"),
    dict(name="v2-asym-g64-original", naming="original", v1=False, sym=False, G=64, desc_act=False, lm_head=False, g_idx=False, where="quantize_config.json"),
    dict(name="v1-sym-g64-descact-hf", naming="hf", v1=True, sym=True, G=64, desc_act=True, lm_head=False, g_idx=True, where="quantize_config.json"),
]


def main() -> None:
    src = read_sharded(os.path.join(TINY, "hf"))
    if os.path.isdir(OUT):
        for v in VARIANTS:
            shutil.rmtree(os.path.join(OUT, v["name"]), ignore_errors=True)
    os.makedirs(OUT, exist_ok=True)
    manifest = {"format": "glm4-int4-native GPTQ fixtures v1", "generated_by": "scripts/make_gptq_fixture.py (numpy " + np.__version__ + ")", "variants": []}

    for vi, v in enumerate(VARIANTS):
        rng = np.random.default_rng(20251125 + vi)
        d = os.path.join(OUT, v["name"])
        os.makedirs(d)
        # config: the tiny model's, cut to one layer, with the GPTQ settings
        cfg = json.load(open(os.path.join(TINY, v["naming"], "config.json")))
        for key in ("num_layers", "num_hidden_layers"):
            if key in cfg:
                cfg[key] = 1
        cfg["torch_dtype"] = "float16"
        qc = {"bits": 4, "group_size": v["G"], "desc_act": v["desc_act"], "sym": v["sym"], "lm_head": v["lm_head"], "quant_method": "gptq",
              "checkpoint_format": "gptq" if v["v1"] else "gptq_v2", "pack_dtype": "int32", "meta": {"quantizer": ["scripts/make_gptq_fixture.py"]}}
        if v["where"] == "config.json":
            cfg["quantization_config"] = qc
        else:
            with open(os.path.join(d, "quantize_config.json"), "w") as f:
                json.dump(qc, f, indent=2)
                f.write("\n")
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        for fname in ("generation_config.json", "tokenizer_config.json", "tokenizer.model", "tokenizer.json"):
            p = os.path.join(TINY, v["naming"], fname)
            if os.path.exists(p):
                shutil.copyfile(p, os.path.join(d, fname))

        hf = v["naming"] == "hf"
        L = "model.layers.0." if hf else "transformer.encoder.layers.0."
        w = lambda n: bf16_bits_to_f32(src[n]).astype(f32)  # noqa: E731
        q, k, vv = w("model.layers.0.self_attn.q_proj.weight"), w("model.layers.0.self_attn.k_proj.weight"), w("model.layers.0.self_attn.v_proj.weight")
        if v["name"] == "v1-asym-g32-hf":
            q = q.copy()
            q[0, :32] = np.abs(q[0, :32]) + f32(0.01)  # a group whose true zero is 0 (v1 stores it as 15)
        K = q.shape[1]
        perm_qkv = rng.permutation(K) if v["desc_act"] else np.arange(K)
        linears = []  # (prefix, W, order)
        if hf:
            linears += [(L + "self_attn.q_proj", q, perm_qkv), (L + "self_attn.k_proj", k, perm_qkv), (L + "self_attn.v_proj", vv, perm_qkv)]
        else:
            linears += [(L + "self_attention.query_key_value", np.concatenate([q, k, vv]), perm_qkv)]
        more = [("self_attn.o_proj" if hf else "self_attention.dense", "model.layers.0.self_attn.o_proj.weight"),
                ("mlp.gate_up_proj" if hf else "mlp.dense_h_to_4h", "model.layers.0.mlp.gate_up_proj.weight"),
                ("mlp.down_proj" if hf else "mlp.dense_4h_to_h", "model.layers.0.mlp.down_proj.weight")]
        for suffix, sname in more:
            W = w(sname)
            linears.append((L + suffix, W, rng.permutation(W.shape[1]) if v["desc_act"] else np.arange(W.shape[1])))
        head = "lm_head" if hf else "transformer.output_layer"
        if v["lm_head"]:
            W = w("lm_head.weight")
            linears.append((head, W, rng.permutation(W.shape[1]) if v["desc_act"] else np.arange(W.shape[1])))

        tensors = []
        emb = "model.embed_tokens.weight" if hf else "transformer.embedding.word_embeddings.weight"
        tensors.append((emb, "F16", to_f16(src["model.embed_tokens.weight"])))
        tensors.append((L + "input_layernorm.weight", "F16", to_f16(src["model.layers.0.input_layernorm.weight"])))
        tensors.append((L + "post_attention_layernorm.weight", "F16", to_f16(src["model.layers.0.post_attention_layernorm.weight"])))
        if hf:
            for p in "qkv":
                tensors.append((f"{L}self_attn.{p}_proj.bias", "F16", to_f16(src[f"model.layers.0.self_attn.{p}_proj.bias"])))
        else:
            b = np.concatenate([src[f"model.layers.0.self_attn.{p}_proj.bias"] for p in "qkv"])
            tensors.append((L + "self_attention.query_key_value.bias", "F16", to_f16(b)))
        tensors.append(("model.norm.weight" if hf else "transformer.encoder.final_layernorm.weight", "F16", to_f16(src["model.norm.weight"])))
        if not v["lm_head"]:
            tensors.append((head + ".weight", "F16", to_f16(src["lm_head.weight"])))

        deq_parts = []
        for prefix, W, order in linears:
            codes, s16, zero, g_idx = rtn_params(W, v["G"], v["sym"], order)
            if not v["desc_act"]:
                assert np.array_equal(g_idx, np.arange(W.shape[1]) // v["G"])
            qweight, qzeros = pack(codes, zero, v["v1"])
            tensors.append((prefix + ".qweight", "I32", qweight.view(np.int32)))
            tensors.append((prefix + ".qzeros", "I32", qzeros.view(np.int32)))
            tensors.append((prefix + ".scales", "F16", s16))
            if v["g_idx"]:
                tensors.append((prefix + ".g_idx", "I32", g_idx))
            if prefix.endswith(("q_proj", "k_proj", "v_proj", "query_key_value")):
                deq_parts.append(unpack_dequant(qweight, qzeros, s16, g_idx, v["v1"], bf16_scales=not v["desc_act"]))
        write_safetensors(os.path.join(d, "model.safetensors"), tensors, {"format": "pt", "quantize_config": json.dumps(qc)})
        qkv = np.ascontiguousarray(np.concatenate(deq_parts).astype("<f4"))
        assert qkv.shape == (384, 256) and np.all(np.isfinite(qkv))
        binf = f"{v['name']}.qkv0.bin"
        qkv.tofile(os.path.join(OUT, binf))
        manifest["variants"].append({
            "name": v["name"], "dir": v["name"], "naming": v["naming"], "checkpoint_format": qc["checkpoint_format"], "sym": v["sym"],
            "group_size": v["G"], "desc_act": v["desc_act"], "lm_head": v["lm_head"], "g_idx_tensors": v["g_idx"], "settings_in": v["where"],
            "qkv0": {"file": binf, "dtype": "float32", "shape": [384, 256],
                     "scales": "f16 exact" if v["desc_act"] else "bf16-rounded (round to nearest even)",
                     "what": "layer 0 fused [q; k; v] read back from the packed tensors"},
        })
        print(f"{v['name']:24s} {sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)):8d} bytes")
    dump_json(os.path.join(OUT, "manifest.json"), manifest)


if __name__ == "__main__":
    main()
