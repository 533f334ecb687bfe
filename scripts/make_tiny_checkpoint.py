"""Make the tiny GLM-4-shaped checkpoint under fixtures/tiny-glm4/{original,hf} (numpy only, deterministic).

Same bf16 weights, two on-disk namings:
  original/  THUDM/glm-4-9b-chat style (model_type chatglm, fused query_key_value)
  hf/        glm-4-9b-chat-hf style    (model_type glm, GlmForCausalLM, split q/k/v)
each as two safetensors shards + model.safetensors.index.json, written by scripts/st_io.py.

Then runs a float64 numpy forward pass (scripts/np_forward.py) to check the logits are healthy and
writes fixtures/tiny-glm4/golden/np_logits.{json,bin} (numpy reference, NOT transformers).

Usage: python3 scripts/make_tiny_checkpoint.py [--root fixtures/tiny-glm4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from np_forward import Dims, forward, greedy  # noqa: E402
from st_io import bf16_bits_to_f32, dump_json, f32_to_bf16_bits, read_sharded, write_safetensors  # noqa: E402

SEED = 4_2025_1125

# ---------------------------------------------------------------- dimensions
NUM_LAYERS = 2
HIDDEN = 256
HEADS = 8
HEAD_DIM = 32
KV_GROUPS = 2
FFN = 512
VOCAB = 544  # padded: 512 BPE ranks + 14 specials (512..525) + 18 unused rows
EPS = 1.5625e-07
ROPE_RATIO = 3.0
ROPE_BASE = 10000.0 * ROPE_RATIO  # 30000
ROTARY_DIM = HEAD_DIM // 2  # 16: first half of each head, interleaved pairs
MAX_POS = 1024

SPECIALS = [
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
    "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>",
    "<|end_of_video|>",
]
SPECIAL_IDS = {name: 512 + i for i, name in enumerate(SPECIALS)}
EOS_IDS = [SPECIAL_IDS["<|endoftext|>"], SPECIAL_IDS["<|user|>"], SPECIAL_IDS["<|observation|>"]]  # [512, 519, 521]
PAD_ID = SPECIAL_IDS["<|endoftext|>"]  # 512

# the np reference prompt (same as golden_logits.py's P1)
P1_SEED = 1001


def prompt_p1():
    rng = np.random.default_rng(P1_SEED)
    return [514, 516, 519] + [int(x) for x in rng.integers(0, 512, 20)] + [520]


DIMS = Dims(NUM_LAYERS, HIDDEN, HEADS, KV_GROUPS, HEAD_DIM, FFN, VOCAB, EPS, ROPE_BASE, ROTARY_DIM)

# ---------------------------------------------------------------- weights


def make_weights():
    """Weights in the original (chatglm) naming, as bf16 bits (uint16), in a fixed order."""
    rng = np.random.default_rng(SEED)

    def normal(shape, std, mean=0.0):
        return f32_to_bf16_bits((mean + std * rng.standard_normal(shape)).astype(np.float32))

    qkv_rows = HEADS * HEAD_DIM + 2 * KV_GROUPS * HEAD_DIM  # 256 + 64 + 64 = 384
    w = {}
    w["transformer.embedding.word_embeddings.weight"] = normal((VOCAB, HIDDEN), 1.0)
    for L in range(NUM_LAYERS):
        p = f"transformer.encoder.layers.{L}."
        w[p + "input_layernorm.weight"] = normal((HIDDEN,), 0.1, 1.0)
        w[p + "self_attention.query_key_value.weight"] = normal((qkv_rows, HIDDEN), 1.5 / np.sqrt(HIDDEN))
        w[p + "self_attention.query_key_value.bias"] = normal((qkv_rows,), 0.1)
        w[p + "self_attention.dense.weight"] = normal((HIDDEN, HEADS * HEAD_DIM), 1.0 / np.sqrt(HEADS * HEAD_DIM))
        w[p + "post_attention_layernorm.weight"] = normal((HIDDEN,), 0.1, 1.0)
        w[p + "mlp.dense_h_to_4h.weight"] = normal((2 * FFN, HIDDEN), 1.5 / np.sqrt(HIDDEN))
        w[p + "mlp.dense_4h_to_h.weight"] = normal((HIDDEN, FFN), 1.0 / np.sqrt(FFN))
    w["transformer.encoder.final_layernorm.weight"] = normal((HIDDEN,), 0.1, 1.0)
    w["transformer.output_layer.weight"] = normal((VOCAB, HIDDEN), 2.5 / np.sqrt(HIDDEN))
    return w


def to_hf(orig):
    """Original names -> HF names (same bits; the fused QKV rows split into q, k, v)."""
    q_rows, kv_rows = HEADS * HEAD_DIM, KV_GROUPS * HEAD_DIM
    hf = {"model.embed_tokens.weight": orig["transformer.embedding.word_embeddings.weight"]}
    for L in range(NUM_LAYERS):
        o = f"transformer.encoder.layers.{L}."
        p = f"model.layers.{L}."
        hf[p + "input_layernorm.weight"] = orig[o + "input_layernorm.weight"]
        qkv_w = orig[o + "self_attention.query_key_value.weight"]
        qkv_b = orig[o + "self_attention.query_key_value.bias"]
        parts = {"q": (0, q_rows), "k": (q_rows, q_rows + kv_rows), "v": (q_rows + kv_rows, q_rows + 2 * kv_rows)}
        assert qkv_w.shape[0] == q_rows + 2 * kv_rows
        for nm, (a, b) in parts.items():
            hf[p + f"self_attn.{nm}_proj.weight"] = qkv_w[a:b]
            hf[p + f"self_attn.{nm}_proj.bias"] = qkv_b[a:b]
        hf[p + "self_attn.o_proj.weight"] = orig[o + "self_attention.dense.weight"]
        hf[p + "post_attention_layernorm.weight"] = orig[o + "post_attention_layernorm.weight"]
        hf[p + "mlp.gate_up_proj.weight"] = orig[o + "mlp.dense_h_to_4h.weight"]
        hf[p + "mlp.down_proj.weight"] = orig[o + "mlp.dense_4h_to_h.weight"]
    hf["model.norm.weight"] = orig["transformer.encoder.final_layernorm.weight"]
    hf["lm_head.weight"] = orig["transformer.output_layer.weight"]
    return hf


def shard_of(name: str) -> int:
    """Shard 1: embedding + layer 0. Shard 2: layer 1, final norm, output layer."""
    if "embed" in name or ".layers.0." in name:
        return 1
    return 2


# ---------------------------------------------------------------- configs

def original_config():
    return {
        "_name_or_path": "tiny-glm4 (random weights, test fixture)",
        "model_type": "chatglm",
        "architectures": ["ChatGLMModel"],
        "add_bias_linear": False,
        "add_qkv_bias": True,
        "apply_query_key_layer_scaling": True,
        "apply_residual_connection_post_layernorm": False,
        "attention_dropout": 0.0,
        "attention_softmax_in_fp32": True,
        "bias_dropout_fusion": True,
        "classifier_dropout": None,
        "eos_token_id": EOS_IDS,
        "ffn_hidden_size": FFN,
        "fp32_residual_connection": False,
        "hidden_dropout": 0.0,
        "hidden_size": HIDDEN,
        "kv_channels": HEAD_DIM,
        "layernorm_epsilon": EPS,
        "multi_query_attention": True,
        "multi_query_group_num": KV_GROUPS,
        "num_attention_heads": HEADS,
        "num_hidden_layers": NUM_LAYERS,
        "num_layers": NUM_LAYERS,
        "original_rope": True,
        "pad_token_id": PAD_ID,
        "padded_vocab_size": VOCAB,
        "post_layer_norm": True,
        "rmsnorm": True,
        "rope_ratio": ROPE_RATIO,
        "seq_length": MAX_POS,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.44.0",
        "use_cache": True,
        "vocab_size": VOCAB,
    }


def hf_config():
    return {
        "architectures": ["GlmForCausalLM"],
        "attention_bias": True,
        "attention_dropout": 0.0,
        "eos_token_id": EOS_IDS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": FFN,
        "max_position_embeddings": MAX_POS,
        "model_type": "glm",
        "num_attention_heads": HEADS,
        "num_hidden_layers": NUM_LAYERS,
        "num_key_value_heads": KV_GROUPS,
        "pad_token_id": PAD_ID,
        "partial_rotary_factor": ROTARY_DIM / HEAD_DIM,
        "rms_norm_eps": EPS,
        "rope_theta": ROPE_BASE,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.0",
        "use_cache": True,
        "vocab_size": VOCAB,
    }


def generation_config():
    return {
        "do_sample": True,
        "eos_token_id": EOS_IDS,
        "max_length": MAX_POS,
        "pad_token_id": PAD_ID,
        "temperature": 0.8,
        "top_p": 0.8,
        "transformers_version": "4.44.0",
    }


# ---------------------------------------------------------------- writing

def write_json(path, obj):
    dump_json(path, obj)


def write_checkpoint(dirpath, tensors, config):
    os.makedirs(dirpath, exist_ok=True)
    for fn in os.listdir(dirpath):
        if fn.endswith(".safetensors"):
            os.remove(os.path.join(dirpath, fn))
    shards = {1: [], 2: []}
    for name, bits in tensors.items():
        shards[shard_of(name)].append((name, "BF16", bits))
    weight_map = {}
    total = 0
    for i, items in shards.items():
        fn = f"model-{i:05d}-of-00002.safetensors"
        total += write_safetensors(os.path.join(dirpath, fn), items, {"format": "pt"})
        for name, _, _ in items:
            weight_map[name] = fn
    write_json(os.path.join(dirpath, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
    write_json(os.path.join(dirpath, "config.json"), config)
    write_json(os.path.join(dirpath, "generation_config.json"), generation_config())
    # read back through the index and compare bit for bit
    back = read_sharded(dirpath)
    assert set(back) == set(tensors), set(back) ^ set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == np.uint16 and back[k].shape == v.shape and np.array_equal(back[k], v), k
    return total


def copy_tokenizer(root):
    tok = os.path.join(root, "tokenizer")
    plan = {"original": ["tokenizer.model", "tokenizer_config.json"], "hf": ["tokenizer.json", "tokenizer_config.json"]}
    if not os.path.isdir(tok):
        print(f"WARNING: {tok} does not exist yet: no tokenizer files copied into original/ and hf/ "
              "(re-run this script once it exists)", file=sys.stderr)
        return
    for sub, names in plan.items():
        for n in names:
            src = os.path.join(tok, n)
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(root, sub, n))
                print(f"copied tokenizer/{n} -> {sub}/{n}")
            else:
                print(f"WARNING: {src} missing, not copied into {sub}/", file=sys.stderr)


# ---------------------------------------------------------------- checks

def health(logits):
    z = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    ent = -(p * np.log(np.maximum(p, 1e-300))).sum(axis=-1)
    return {
        "std": float(logits.std()),
        "max_abs": float(np.abs(logits).max()),
        "mean_max_prob": float(p.max(axis=-1).mean()),
        "max_max_prob": float(p.max(axis=-1).max()),
        "mean_entropy_nats": float(ent.mean()),
        "distinct_argmax": int(len(set(np.argmax(logits, axis=-1).tolist()))),
    }


def main():
    ap = argparse.ArgumentParser(description="make the tiny GLM-4 fixture")
    ap.add_argument("--root", default=os.path.join(os.path.dirname(HERE), "fixtures", "tiny-glm4"))
    args = ap.parse_args()
    root = args.root

    orig = make_weights()
    hf = to_hf(orig)
    n_params = sum(int(v.size) for v in orig.values())
    t1 = write_checkpoint(os.path.join(root, "original"), orig, original_config())
    t2 = write_checkpoint(os.path.join(root, "hf"), hf, hf_config())
    assert t1 == t2 == 2 * n_params
    print(f"wrote {len(orig)} original / {len(hf)} hf tensors, {n_params} parameters, {t1} bytes each")
    copy_tokenizer(root)

    # float64 numpy forward on the bf16 weights
    w64 = {k: bf16_bits_to_f32(v).astype(np.float64) for k, v in hf.items()}
    ids = prompt_p1()
    logits = forward(w64, DIMS, ids)
    assert logits.shape == (len(ids), VOCAB) and np.all(np.isfinite(logits))
    h = health(logits)
    print("P1 logits health:", json.dumps(h))
    assert 1.0 < h["std"] < 10.0, "logits too flat or too sharp"
    assert h["mean_max_prob"] < 0.9, "softmax nearly one-hot everywhere"
    assert h["distinct_argmax"] > 3, "argmax does not depend on the input"
    # a random 150-token prompt also stays healthy
    h150 = health(forward(w64, DIMS, [int(x) for x in np.random.default_rng(7).integers(0, 512, 150)]))
    print("150-token random prompt health:", json.dumps(h150))

    toks, margins = greedy(w64, DIMS, ids, 24)
    print("P1 greedy (numpy float64):", toks)
    print("P1 greedy top1-top2 margins:", [round(m, 3) for m in margins])

    gold = os.path.join(root, "golden")
    os.makedirs(gold, exist_ok=True)
    binname = "np_logits_bf16_P1.bin"
    logits.astype("<f4").tofile(os.path.join(gold, binname))
    write_json(os.path.join(gold, "np_logits.json"), {
        "label": "numpy reference, not transformers: float64 forward (scripts/np_forward.py) on the bf16 weights, stored as float32",
        "generated_by": "scripts/make_tiny_checkpoint.py (numpy " + np.__version__ + ")",
        "checkpoint": "fixtures/tiny-glm4/hf (identical weights in fixtures/tiny-glm4/original)",
        "vocab": VOCAB,
        "prompts": {"P1": ids},
        "logits": {"P1": {"file": binname, "dtype": "float32", "shape": [len(ids), VOCAB], "layout": "row-major [T, V], little-endian"}},
        "greedy": {"P1": {"new_tokens": toks, "top1_minus_top2": margins}},
        "health": {"P1": h},
    })
    print(f"wrote {gold}/np_logits.json and {binname}")


if __name__ == "__main__":
    main()
