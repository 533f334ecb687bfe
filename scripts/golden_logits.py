"""Golden logits for the tiny GLM-4 fixture from HF transformers' GlmForCausalLM (run on a GPU machine).

Needs torch, transformers (GlmForCausalLM; written against 5.x, 4.46+ should work), safetensors, numpy.
Everything runs in float32 with eager attention and TF32 off.

Paths
  bf16  the checkpoint's bf16 weights, computed in float32
  int4  every linear weight (q/k/v as the FUSED [q;k;v] matrix, o_proj, gate_up_proj, down_proj, lm_head)
        replaced by int4_ref.dequantize(int4_ref.quantize(w, G=128)); embedding, norms and biases untouched

Cross-checks (the script stops with an AssertionError if one fails)
  - the loaded parameters equal the safetensors bits exactly, no missing/unexpected keys
  - every rotary inv_freq buffer equals 30000^(-2i/16), i < 8 (rotary on 16 of 32 dims)
  - the original (chatglm) checkpoint, mapped to HF names here (fused qkv split), gives the same
    parameters and the same logits; its config maps to the same numbers as hf/config.json
  - a float64 numpy forward (np_forward.py) agrees with transformers on every prompt, both paths

Outputs in --out (default fixtures/tiny-glm4/golden):
  logits.json                    metadata (see fixtures/tiny-glm4/README.md)
  logits_<path>_<P>.bin          float32 LE, row-major [T, V]: logits at every prompt position
  steps_<path>_<P>.bin           float32 LE, row-major [24, V]: logits of the last position at each greedy step
Usage: python3 scripts/golden_logits.py [--out DIR] [--device cuda|cpu]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import int4_ref  # noqa: E402
from np_forward import Dims  # noqa: E402
from np_forward import forward as np_forward  # noqa: E402
from st_io import bf16_bits_to_f32, dump_json, read_sharded  # noqa: E402

GROUP = 128
N_NEW = 24


def make_prompts():
    """Fixed token-id prompts (no tokenizer involved). Ids 0..511 are ordinary BPE ranks."""
    r1 = np.random.default_rng(1001)  # same as make_tiny_checkpoint.prompt_p1
    r3 = np.random.default_rng(1003)
    r4 = np.random.default_rng(1004)
    return {
        "P1": [514, 516, 519] + [int(x) for x in r1.integers(0, 512, 20)] + [520],
        "P2": [514],
        "P3": [int(x) for x in r3.integers(0, 512, 150)],
        "P4": [514, 516] + [int(x) for x in r4.integers(0, 512, 40)],
    }


def main():
    ap = argparse.ArgumentParser(description="golden logits for fixtures/tiny-glm4 from transformers")
    ap.add_argument("--fixture", default=os.path.join(ROOT, "fixtures", "tiny-glm4"))
    ap.add_argument("--out", default=None, help="output folder (default <fixture>/golden)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    args = ap.parse_args()
    fixture = os.path.abspath(args.fixture)
    out_dir = os.path.abspath(args.out or os.path.join(fixture, "golden"))
    hf_dir = os.path.join(fixture, "hf")
    orig_dir = os.path.join(fixture, "original")
    os.makedirs(out_dir, exist_ok=True)

    import safetensors
    import torch
    import transformers
    from safetensors.torch import load_file
    from transformers import GlmForCausalLM

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }
    print("versions:", json.dumps(versions))

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device_name = torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "cpu"
    print("device:", device, device_name)
    # exact float32 everywhere: no TF32, no reduced-precision reductions
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    except AttributeError:
        pass
    torch.set_float32_matmul_precision("highest")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(0)

    with open(os.path.join(hf_dir, "config.json")) as f:
        hf_cfg = json.load(f)
    with open(os.path.join(orig_dir, "config.json")) as f:
        orig_cfg = json.load(f)
    V = int(hf_cfg["vocab_size"])
    H = int(hf_cfg["hidden_size"])
    NL = int(hf_cfg["num_hidden_layers"])
    NH = int(hf_cfg["num_attention_heads"])
    NKV = int(hf_cfg["num_key_value_heads"])
    HD = int(hf_cfg["head_dim"])
    FF = int(hf_cfg["intermediate_size"])
    ROT = int(HD * float(hf_cfg["partial_rotary_factor"]))
    BASE = float(hf_cfg["rope_theta"])

    # ---- the original config must describe the same model
    mapped_cfg = {
        "hidden_size": orig_cfg["hidden_size"],
        "intermediate_size": orig_cfg["ffn_hidden_size"],
        "num_hidden_layers": orig_cfg["num_layers"],
        "num_attention_heads": orig_cfg["num_attention_heads"],
        "num_key_value_heads": orig_cfg["multi_query_group_num"] if orig_cfg.get("multi_query_attention") else orig_cfg["num_attention_heads"],
        "head_dim": orig_cfg["kv_channels"],
        "vocab_size": orig_cfg["padded_vocab_size"],
        "rms_norm_eps": orig_cfg["layernorm_epsilon"],
        "rope_theta": 10000.0 * float(orig_cfg.get("rope_ratio", 1.0)),
        "partial_rotary_factor": 0.5,
        "attention_bias": orig_cfg["add_qkv_bias"],
        "max_position_embeddings": orig_cfg["seq_length"],
        "tie_word_embeddings": orig_cfg.get("tie_word_embeddings", False),
        "eos_token_id": orig_cfg["eos_token_id"],
        "pad_token_id": orig_cfg["pad_token_id"],
    }
    for k, v in mapped_cfg.items():
        assert hf_cfg[k] == v, f"original config maps {k} to {v}, hf config has {hf_cfg[k]}"
    assert orig_cfg["rmsnorm"] and orig_cfg["post_layer_norm"] and not orig_cfg["add_bias_linear"]
    assert not orig_cfg["apply_residual_connection_post_layernorm"]
    print(f"config: layers {NL} hidden {H} heads {NH}x{HD} kv {NKV} ffn {FF} vocab {V} rotary {ROT} base {BASE}")

    # ---- load the HF checkpoint
    def load_hf():
        kw = dict(attn_implementation="eager", output_loading_info=True)
        try:
            res = GlmForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, **kw)
            used = "dtype"
        except TypeError as e:
            print("from_pretrained(dtype=...) failed, retrying with torch_dtype:", e)
            res = GlmForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32, **kw)
            used = "torch_dtype"
        model, info = res if isinstance(res, tuple) else (res, {})
        print(f"from_pretrained({used}=torch.float32) loading info:", {k: v for k, v in (info or {}).items()})
        for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
            vals = (info or {}).get(k)
            assert not vals, f"{k}: {vals}"
        return model

    model = load_hf()
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        print("WARNING: parameters loaded as", dtypes, "- converting to float32 (bf16 -> f32 is exact)")
        model = model.float()
    model = model.to(device).eval()
    attn_impl = getattr(model.config, "_attn_implementation", None)
    print("attention implementation:", attn_impl)
    assert attn_impl == "eager", f"expected eager attention, got {attn_impl}"

    # parameters equal the file's bits exactly
    hf_files = sorted(set(json.load(open(os.path.join(hf_dir, "model.safetensors.index.json")))["weight_map"].values()))
    st_hf = {}
    for fn in hf_files:
        st_hf.update(load_file(os.path.join(hf_dir, fn)))
    sd = model.state_dict()
    assert set(sd) == set(st_hf), f"state_dict vs file keys differ: {sorted(set(sd) ^ set(st_hf))}"
    for k, t in st_hf.items():
        assert t.dtype == torch.bfloat16, f"{k}: file dtype {t.dtype}"
        assert tuple(sd[k].shape) == tuple(t.shape), f"{k}: {tuple(sd[k].shape)} vs {tuple(t.shape)}"
        assert torch.equal(sd[k].detach().cpu(), t.float()), f"{k}: loaded values differ from the file"
    print(f"parameters: {len(sd)} tensors equal the safetensors bits")

    # rotary frequencies
    expect_inv = (1.0 / (BASE ** (torch.arange(0, ROT, 2, dtype=torch.int64).float() / ROT))).double()
    n_rot = 0
    for name, buf in model.named_buffers():
        if name.endswith("inv_freq"):
            n_rot += 1
            got = buf.detach().double().cpu()
            assert got.shape == expect_inv.shape, f"{name}: {tuple(got.shape)} vs {tuple(expect_inv.shape)}"
            assert torch.allclose(got, expect_inv, rtol=1e-6, atol=0), f"{name}: {got} vs {expect_inv}"
    assert n_rot >= 1, "no rotary inv_freq buffer found"
    print(f"rotary: {n_rot} inv_freq buffer(s) == {BASE}^(-2i/{ROT})")

    # every Linear is one we know how to quantize
    linears = sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))
    expect_lin = sorted(
        [f"model.layers.{L}.self_attn.{p}_proj" for L in range(NL) for p in "qkvo"]
        + [f"model.layers.{L}.mlp.{p}" for L in range(NL) for p in ("gate_up_proj", "down_proj")]
        + ["lm_head"]
    )
    assert linears == expect_lin, f"Linear modules differ: {sorted(set(linears) ^ set(expect_lin))}"

    # ---- the original checkpoint, mapped here
    orig_files = sorted(set(json.load(open(os.path.join(orig_dir, "model.safetensors.index.json")))["weight_map"].values()))
    st_o = {}
    for fn in orig_files:
        st_o.update(load_file(os.path.join(orig_dir, fn)))
    qr, kvr = NH * HD, NKV * HD
    mapped = {"model.embed_tokens.weight": st_o.pop("transformer.embedding.word_embeddings.weight")}
    for L in range(NL):
        o, p = f"transformer.encoder.layers.{L}.", f"model.layers.{L}."
        mapped[p + "input_layernorm.weight"] = st_o.pop(o + "input_layernorm.weight")
        wqkv = st_o.pop(o + "self_attention.query_key_value.weight")
        bqkv = st_o.pop(o + "self_attention.query_key_value.bias")
        assert tuple(wqkv.shape) == (qr + 2 * kvr, H) and tuple(bqkv.shape) == (qr + 2 * kvr,)
        for nm, (a, b) in {"q": (0, qr), "k": (qr, qr + kvr), "v": (qr + kvr, qr + 2 * kvr)}.items():
            mapped[p + f"self_attn.{nm}_proj.weight"] = wqkv[a:b].clone()
            mapped[p + f"self_attn.{nm}_proj.bias"] = bqkv[a:b].clone()
        mapped[p + "self_attn.o_proj.weight"] = st_o.pop(o + "self_attention.dense.weight")
        mapped[p + "post_attention_layernorm.weight"] = st_o.pop(o + "post_attention_layernorm.weight")
        mapped[p + "mlp.gate_up_proj.weight"] = st_o.pop(o + "mlp.dense_h_to_4h.weight")
        mapped[p + "mlp.down_proj.weight"] = st_o.pop(o + "mlp.dense_4h_to_h.weight")
    mapped["model.norm.weight"] = st_o.pop("transformer.encoder.final_layernorm.weight")
    mapped["lm_head.weight"] = st_o.pop("transformer.output_layer.weight")
    assert not st_o, f"unmapped original tensors: {sorted(st_o)}"
    model_o = copy.deepcopy(model)
    with torch.no_grad():
        for prm in model_o.parameters():
            prm.fill_(float("nan"))  # so that anything load_state_dict misses shows up
    res = model_o.load_state_dict({k: v.float() for k, v in mapped.items()}, strict=True)
    print("original -> hf load_state_dict:", res)
    for k, v in model_o.state_dict().items():
        assert torch.equal(v, sd[k]), f"original checkpoint's {k} differs from the hf checkpoint's"
    print("original checkpoint: mapped parameters equal the hf checkpoint's")

    # ---- int4 path
    model_q = copy.deepcopy(model)

    def fq(w):  # torch float32 [N, K] -> fake-quantized torch float32
        a = w.detach().cpu().numpy().astype(np.float32)
        return torch.from_numpy(int4_ref.fake_quant(a, GROUP)).to(w.device)

    n_quant = 0
    with torch.no_grad():
        for L in range(NL):
            layer = model_q.model.layers[L]
            at = layer.self_attn
            fused = torch.cat([at.q_proj.weight, at.k_proj.weight, at.v_proj.weight], dim=0)
            assert tuple(fused.shape) == (qr + 2 * kvr, H)
            dq = fq(fused)
            at.q_proj.weight.copy_(dq[:qr])
            at.k_proj.weight.copy_(dq[qr : qr + kvr])
            at.v_proj.weight.copy_(dq[qr + kvr :])
            at.o_proj.weight.copy_(fq(at.o_proj.weight))
            layer.mlp.gate_up_proj.weight.copy_(fq(layer.mlp.gate_up_proj.weight))
            layer.mlp.down_proj.weight.copy_(fq(layer.mlp.down_proj.weight))
            n_quant += 4
        model_q.lm_head.weight.copy_(fq(model_q.lm_head.weight))
        n_quant += 1
    changed = [k for k, v in model_q.state_dict().items() if not torch.equal(v, sd[k])]
    expect_changed = sorted(f"{n}.weight" for n in expect_lin)
    assert sorted(changed) == expect_changed, f"int4 path changed {sorted(changed)}"
    print(f"int4 path: {n_quant} matrices fake-quantized at G={GROUP} ({len(changed)} Linear weights changed)")

    # numpy weights (float64) for the independent forward
    dims = Dims(NL, H, NH, NKV, HD, FF, V, float(hf_cfg["rms_norm_eps"]), BASE, ROT)
    w_np = {k: bf16_bits_to_f32(v).astype(np.float64) for k, v in read_sharded(hf_dir).items()}
    wq_np = {k: v.detach().double().cpu().numpy() for k, v in model_q.state_dict().items()}

    # ---- run
    def run_logits(m, ids):
        with torch.no_grad():
            x = torch.tensor([ids], dtype=torch.long, device=device)
            out = m(input_ids=x, use_cache=False)
            lg = out.logits
        assert tuple(lg.shape) == (1, len(ids), V), tuple(lg.shape)
        lg = lg[0].float().cpu().numpy()
        assert np.all(np.isfinite(lg)), "non-finite logits"
        return lg

    def run_greedy(m, ids, n):
        seq = list(ids)
        toks, margins, steps = [], [], []
        for _ in range(n):
            last = run_logits(m, seq)[-1]
            order = np.argsort(-last, kind="stable")
            t = int(order[0])
            toks.append(t)
            margins.append(float(last[order[0]] - last[order[1]]))
            steps.append(last)
            seq.append(t)
        return toks, margins, np.stack(steps).astype(np.float32)

    prompts = make_prompts()
    models = {"bf16": (model, w_np), "int4": (model_q, wq_np)}
    meta_paths = {}
    results = {}
    for path, (m, wnp) in models.items():
        meta_paths[path] = {}
        for pn, ids in prompts.items():
            assert all(0 <= t < V for t in ids)
            lg = run_logits(m, ids)
            toks, margins, steps = run_greedy(m, ids, N_NEW)
            # step 0 is the prompt's last position again
            assert np.allclose(steps[0], lg[-1], atol=1e-4, rtol=0), float(np.abs(steps[0] - lg[-1]).max())
            # independent float64 numpy forward
            ref = np_forward(wnp, dims, ids)
            np_err = float(np.abs(ref - lg).max())
            assert np_err < 2e-3, f"{path} {pn}: numpy float64 forward differs from transformers by {np_err}"
            ref_last = np_forward(wnp, dims, list(ids) + toks[:-1])[len(ids) - 1 :]
            np_step_err = float(np.abs(ref_last - steps).max())
            assert np_step_err < 2e-3, f"{path} {pn}: numpy steps differ by {np_step_err}"
            results[(path, pn)] = lg
            fl = f"logits_{path}_{pn}.bin"
            fs = f"steps_{path}_{pn}.bin"
            lg.astype("<f4").tofile(os.path.join(out_dir, fl))
            steps.astype("<f4").tofile(os.path.join(out_dir, fs))
            meta_paths[path][pn] = {
                "logits_file": fl,
                "logits_shape": [len(ids), V],
                "steps_file": fs,
                "steps_shape": [N_NEW, V],
                "greedy_new_tokens": toks,
                "greedy_top1_minus_top2": margins,
                "prompt_argmax": [int(a) for a in np.argmax(lg, axis=-1)],
                "max_abs_logit": float(np.abs(lg).max()),
                "logit_std": float(lg.std()),
                "max_abs_diff_vs_numpy_float64": np_err,
                "max_abs_diff_steps_vs_numpy_float64": np_step_err,
            }

    # original checkpoint gives the same logits
    orig_diff = {}
    for pn, ids in prompts.items():
        lo = run_logits(model_o, ids)
        d = float(np.abs(lo - results[("bf16", pn)]).max())
        orig_diff[pn] = d
        assert d <= 1e-5, f"original checkpoint logits differ from hf by {d} on {pn}"
    print("original checkpoint logits vs hf:", orig_diff)

    # committed numpy reference (if present) agrees too
    npj = os.path.join(fixture, "golden", "np_logits.json")
    if os.path.exists(npj):
        nm = json.load(open(npj))
        if nm["prompts"]["P1"] == prompts["P1"]:
            ref = np.fromfile(os.path.join(fixture, "golden", nm["logits"]["P1"]["file"]), dtype="<f4").reshape(len(prompts["P1"]), V)
            d = float(np.abs(ref - results[("bf16", "P1")]).max())
            print("committed np_logits P1 vs transformers: max abs diff", d)
            assert d < 2e-3
        else:
            print("WARNING: np_logits.json's P1 differs from this script's P1; not compared")

    # ---- summary
    print(f"\n{'prompt':6s} {'T':>4s} {'path':5s} {'max|logit|':>10s} {'std':>6s} {'np64 err':>9s}  greedy")
    for pn, ids in prompts.items():
        for path in models:
            mp = meta_paths[path][pn]
            print(f"{pn:6s} {len(ids):4d} {path:5s} {mp['max_abs_logit']:10.3f} {mp['logit_std']:6.3f} {mp['max_abs_diff_vs_numpy_float64']:9.2e}  {mp['greedy_new_tokens']}")
        a = np.argmax(results[("bf16", pn)], axis=-1)
        b = np.argmax(results[("int4", pn)], axis=-1)
        dq = float(np.abs(results[("bf16", pn)] - results[("int4", pn)]).max())
        same = sum(1 for x, y in zip(meta_paths["bf16"][pn]["greedy_new_tokens"], meta_paths["int4"][pn]["greedy_new_tokens"]) if x == y)
        print(f"       bf16 vs int4: prompt argmax agree {int((a == b).sum())}/{len(a)}, max|dlogit| {dq:.3f}, greedy tokens equal {same}/{N_NEW}")

    meta = {
        "format": "glm4-int4-native golden logits v1",
        "generated_by": "scripts/golden_logits.py",
        "reference": "transformers GlmForCausalLM, float32, eager attention, TF32 off",
        "checkpoint": "fixtures/tiny-glm4/hf (cross-checked against fixtures/tiny-glm4/original)",
        "versions": versions,
        "device": f"{device} ({device_name})",
        "dtype": "float32",
        "vocab": V,
        "n_new_tokens": N_NEW,
        "paths": {
            "bf16": "the checkpoint's bf16 weights, computed in float32",
            "int4": f"every Linear weight (fused [q;k;v], o_proj, gate_up_proj, down_proj, lm_head) replaced by int4_ref dequantize(quantize(w, G={GROUP})); embedding, norms, biases unchanged",
        },
        "group_size": GROUP,
        "prompts": prompts,
        "files": "float32 little-endian row-major; logits_<path>_<P>.bin [T, V] = logits at every prompt position; steps_<path>_<P>.bin [n_new_tokens, V] = logits of the last position at greedy step i (input: prompt + first i new tokens)",
        "greedy": "argmax of the last position by full recompute each step, first index wins ties, no eos stop",
        "results": meta_paths,
        "cross_checks": {
            "original_vs_hf_max_abs_logit_diff": orig_diff,
            "numpy_float64_forward": "max_abs_diff_vs_numpy_float64 per prompt and path",
        },
    }
    dump_json(os.path.join(out_dir, "logits.json"), meta)
    total = sum(os.path.getsize(os.path.join(out_dir, fn)) for fn in os.listdir(out_dir) if fn.startswith(("logits", "steps")))
    print(f"\nwrote {out_dir}/logits.json and {2 * 2 * len(prompts)} .bin files, {total} bytes")


if __name__ == "__main__":
    main()
