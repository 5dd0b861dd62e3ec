"""Golden configs, random official-format weights, and the official-layout checkpoint writer.

The tensor list follows spec §7.2 (names, dtypes, shapes); every value is generated from a fixed seed.
"""

import copy
import json
import os

import torch
from safetensors.torch import save_file

from dsv4_quant import (
    dequantize_fp4_experts,
    dequantize_fp8_block,
    quantize_fp4_experts,
    quantize_fp8_block,
)

# Keys and values of configs/models/tiny.json (official config.json form); golden configs override some of them.
_BASE = {
    "architectures": ["DeepseekV4ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "compress_rope_theta": 160000,
    "eos_token_id": 1,
    "hc_eps": 1e-06,
    "hc_mult": 4,
    "hc_sinkhorn_iters": 20,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 256,
    "index_head_dim": 128,
    "index_n_heads": 8,
    "index_topk": 4,
    "initializer_range": 0.02,
    "max_position_embeddings": 1048576,
    "model_type": "deepseek_v4",
    "moe_intermediate_size": 256,  # 2 x 128: tp = 2 leaves each rank a whole FP8 block of the shared expert
    "n_routed_experts": 8,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 4,
    "num_experts_per_tok": 2,
    "num_hash_layers": 2,
    "num_hidden_layers": 5,
    "num_key_value_heads": 1,
    "num_nextn_predict_layers": 1,
    "o_groups": 2,
    "o_lora_rank": 128,
    "q_lora_rank": 128,
    "qk_rope_head_dim": 64,
    "quantization_config": {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "scale_fmt": "ue8m0",
        "weight_block_size": [128, 128],
    },
    "rms_norm_eps": 1e-06,
    "rope_scaling": {
        "beta_fast": 32,
        "beta_slow": 1,
        "factor": 16,
        "original_max_position_embeddings": 65536,
        "type": "yarn",
    },
    "rope_theta": 10000,
    "routed_scaling_factor": 1.5,
    "scoring_func": "sqrtsoftplus",
    "sliding_window": 16,
    "swiglu_limit": 10.0,
    "tie_word_embeddings": False,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.57.1",
    "use_cache": True,
    "vocab_size": 512,
}


def golden_configs():
    """name -> (config.json dict, run settings). Settings: seq_len, decode_prefill (n), seed, shards."""
    a = copy.deepcopy(_BASE)
    # Every layer kind: SWA (ratio 0), CSA (4, indexer selecting: index_topk 4 -> selects from t+1 >= 20),
    # HCA (128, 3 rows within 400 tokens), hash layers 0-1, biased gates 2-5, ring wrap (window 16), MTP.
    a.update({
        "hidden_size": 128,
        "num_hidden_layers": 4,
        "compress_ratios": [0, 4, 128, 4, 0],
        "num_hash_layers": 2,
        "sliding_window": 16,
        "index_topk": 4,
        "index_head_dim": 128,
    })
    b = copy.deepcopy(_BASE)
    # Pro-like mix: starts with HCA, no SWA main layer, real window 128 (wraps at t = 128), more experts,
    # top-4, one hash layer, index_topk 8 (selects from t+1 >= 36), 64-d indexer heads, 8 heads in 4 groups.
    b.update({
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "compress_ratios": [128, 4, 0],
        "num_hash_layers": 1,
        "sliding_window": 128,
        "index_topk": 8,
        "index_head_dim": 64,
        "num_attention_heads": 8,
        "o_groups": 4,
        "n_routed_experts": 16,
        "num_experts_per_tok": 4,
        "routed_scaling_factor": 2.5,
    })
    return {
        "golden-a": (a, {"seq_len": 400, "decode_prefill": 3, "seed": 1234, "shards": 2}),
        "golden-b": (b, {"seq_len": 300, "decode_prefill": 5, "seed": 5678, "shards": 2}),
    }


# ----------------------------------------------------------------------------------------------------------------
# Tensor list (spec §7.2). kind: fp8 (F8_E4M3 + .scale E8M0 128x128), fp4 (I8 packed + .scale E8M0 per 32),
# bf16, f32, i64.
# ----------------------------------------------------------------------------------------------------------------
def _layer_specs(cfg, prefix, ratio, is_hash, is_mtp):
    D = cfg["hidden_size"]
    H, d = cfg["num_attention_heads"], cfg["head_dim"]
    G, R = cfg["o_groups"], cfg["o_lora_rank"]
    ql = cfg["q_lora_rank"]
    E, F = cfg["n_routed_experts"], cfg["moe_intermediate_size"]
    k = cfg["num_experts_per_tok"]
    nI, dI = cfg["index_n_heads"], cfg["index_head_dim"]
    V = cfg["vocab_size"]
    s = []
    p = prefix
    if is_mtp:
        s += [(p + "e_proj.weight", "fp8", [D, D]), (p + "h_proj.weight", "fp8", [D, D])]
        s += [(p + n + ".weight", "bf16", [D]) for n in ("enorm", "hnorm", "norm")]
        s += [(p + "hc_head_fn", "f32", [4, 4 * D]), (p + "hc_head_base", "f32", [4]),
              (p + "hc_head_scale", "f32", [1])]
    for sub in ("attn", "ffn"):
        s += [(p + f"hc_{sub}_fn", "f32", [24, 4 * D]), (p + f"hc_{sub}_base", "f32", [24]),
              (p + f"hc_{sub}_scale", "f32", [3])]
    s += [(p + "attn_norm.weight", "bf16", [D]), (p + "ffn_norm.weight", "bf16", [D])]
    a = p + "attn."
    s += [(a + "wq_a.weight", "fp8", [ql, D]), (a + "q_norm.weight", "bf16", [ql]),
          (a + "wq_b.weight", "fp8", [H * d, ql]), (a + "wkv.weight", "fp8", [d, D]),
          (a + "kv_norm.weight", "bf16", [d]), (a + "wo_a.weight", "fp8", [G * R, H * d // G]),
          (a + "wo_b.weight", "fp8", [D, G * R]), (a + "attn_sink", "f32", [H])]
    if ratio:
        c = 2 if ratio == 4 else 1
        s += [(a + "compressor.wkv.weight", "bf16", [c * d, D]), (a + "compressor.wgate.weight", "bf16", [c * d, D]),
              (a + "compressor.ape", "f32", [ratio, c * d]), (a + "compressor.norm.weight", "bf16", [d])]
        if ratio == 4:
            s += [(a + "indexer.wq_b.weight", "fp8", [nI * dI, ql]),
                  (a + "indexer.weights_proj.weight", "bf16", [nI, D]),
                  (a + "indexer.compressor.wkv.weight", "bf16", [2 * dI, D]),
                  (a + "indexer.compressor.wgate.weight", "bf16", [2 * dI, D]),
                  (a + "indexer.compressor.ape", "f32", [4, 2 * dI]),
                  (a + "indexer.compressor.norm.weight", "bf16", [dI])]
    f = p + "ffn."
    s += [(f + "gate.weight", "bf16", [E, D])]
    s += [(f + "gate.tid2eid", "i64", [V, k])] if is_hash else [(f + "gate.bias", "f32", [E])]
    s += [(f + "shared_experts.w1.weight", "fp8", [F, D]), (f + "shared_experts.w3.weight", "fp8", [F, D]),
          (f + "shared_experts.w2.weight", "fp8", [D, F])]
    for e in range(E):
        s += [(f + f"experts.{e}.w1.weight", "fp4", [F, D]), (f + f"experts.{e}.w3.weight", "fp4", [F, D]),
              (f + f"experts.{e}.w2.weight", "fp4", [D, F])]
    return s


def tensor_specs(cfg):
    D, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    s = [("embed.weight", "bf16", [V, D]), ("head.weight", "bf16", [V, D]), ("norm.weight", "bf16", [D]),
         ("hc_head_fn", "f32", [4, 4 * D]), ("hc_head_base", "f32", [4]), ("hc_head_scale", "f32", [1])]
    for l in range(L):
        s += _layer_specs(cfg, f"layers.{l}.", cfg["compress_ratios"][l], l < cfg["num_hash_layers"], False)
    for m in range(cfg["num_nextn_predict_layers"]):
        s += _layer_specs(cfg, f"mtp.{m}.", cfg["compress_ratios"][L + m], False, True)
    return s


# ----------------------------------------------------------------------------------------------------------------
# Random values, scaled so that activations stay O(1) (see tests/golden/README.md).
# ----------------------------------------------------------------------------------------------------------------
# Routed experts whose w1/w3 are amplified (and w2 damped) so the SwiGLU clamp (gate <= 10, |up| <= 10) is hit.
CLAMP_EXPERTS = (1, 5)
CLAMP_GAIN_IN, CLAMP_GAIN_OUT = 7.0, 1.0 / 25.0


def _randn(g, shape, std):
    return torch.randn(*shape, generator=g, dtype=torch.float64) * std


def make_value(name, kind, shape, g, cfg):
    """Float64 'master' value of a tensor (before storage rounding), or an int64 table for tid2eid."""
    leaf = name.split(".")[-2] if name.endswith(".weight") else name.split(".")[-1]
    if kind == "i64":  # tid2eid: k distinct experts per token
        V, k = shape
        E = cfg["n_routed_experts"]
        return torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(V)]).to(torch.int64)
    if name.endswith("norm.weight"):
        return 1.0 + _randn(g, shape, 0.15)
    if "hc_" in name:
        if name.endswith("_fn"):
            return _randn(g, shape, 1.0 / shape[1] ** 0.5)
        if name.endswith("_base"):
            return _randn(g, shape, 0.7)
        return 0.6 + torch.rand(*shape, generator=g, dtype=torch.float64)  # scale in [0.6, 1.6)
    if name == "embed.weight":
        return _randn(g, shape, 1.0)
    if name == "head.weight":
        return _randn(g, shape, 2.0 / shape[1] ** 0.5)
    if leaf == "attn_sink":
        return _randn(g, shape, 1.0)
    if leaf == "ape":
        return _randn(g, shape, 0.7)
    if name.endswith("gate.bias"):
        return _randn(g, shape, 0.3)
    std = 1.0 / shape[1] ** 0.5
    if leaf == "wgate":  # compressor scores: sharper than uniform so the per-channel softmax matters
        std *= 2.0
    w = _randn(g, shape, std)
    if ".experts." in name:
        e = int(name.split(".experts.")[1].split(".")[0])
        if e in CLAMP_EXPERTS:
            w = w * (CLAMP_GAIN_OUT if leaf == "w2" else CLAMP_GAIN_IN)
    return w


def build_tensors(cfg, seed):
    """Returns (stored: name -> torch tensor in the official storage dtype, dequant: name -> float64 value).

    `dequant` holds the exact value each stored tensor represents (FP8/FP4 dequantised, BF16 widened)."""
    g = torch.Generator().manual_seed(seed)
    stored, dequant = {}, {}
    for name, kind, shape in tensor_specs(cfg):
        v = make_value(name, kind, shape, g, cfg)
        base = name[: -len(".weight")] if name.endswith(".weight") else name
        if kind == "fp8":
            q, sc = quantize_fp8_block(v)
            stored[name], stored[base + ".scale"] = q, sc
            dequant[name] = dequantize_fp8_block(q, sc)
        elif kind == "fp4":
            q, sc = quantize_fp4_experts(v)
            stored[name], stored[base + ".scale"] = q, sc
            dequant[name] = dequantize_fp4_experts(q, sc)
        elif kind == "bf16":
            stored[name] = v.to(torch.bfloat16)
            dequant[name] = stored[name].double()
        elif kind == "f32":
            stored[name] = v.to(torch.float32)
            dequant[name] = stored[name].double()
        else:
            stored[name] = v
            dequant[name] = v
        assert list(stored[name].shape) == ([shape[0], shape[1] // 2] if kind == "fp4" else shape), name
    return stored, dequant


def write_checkpoint(out_dir, cfg, stored, shards):
    """Official layout: config.json, model-0000N-of-0000K.safetensors, model.safetensors.index.json."""
    os.makedirs(out_dir, exist_ok=True)
    for f in os.listdir(out_dir):
        if f.startswith("model-") and f.endswith(".safetensors"):
            os.remove(os.path.join(out_dir, f))
    names = list(stored.keys())
    # Split by cumulative bytes so that both shards hold real data and a layer straddles files.
    sizes = [stored[n].numel() * stored[n].element_size() for n in names]
    total = sum(sizes)
    weight_map, groups, acc = {}, [[] for _ in range(shards)], 0
    for n, sz in zip(names, sizes):
        idx = min(shards - 1, acc * shards // total)
        groups[idx].append(n)
        acc += sz
    for i, grp in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: stored[n].contiguous() for n in grp}, os.path.join(out_dir, fname), metadata={"format": "pt"})
        os.chmod(os.path.join(out_dir, fname), 0o644)
        for n in grp:
            weight_map[n] = fname
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as fh:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, fh, indent=2)
        fh.write("\n")
    with open(os.path.join(out_dir, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2, sort_keys=True)
        fh.write("\n")
