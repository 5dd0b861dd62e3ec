"""transformers' DeepseekV4ForCausalLM as the oracle, adapted to the OFFICIAL semantics.

Every departure of the port from the official reference that matters for `plain` numerics is fixed here by a
clearly marked monkeypatch (ADAPTATION n); tests/golden/README.md lists them with the reasoning.
"""

import torch
import torch.nn.functional as F
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM
from transformers.cache_utils import DynamicCache
from transformers.models.deepseek_v4 import modeling_deepseek_v4 as hfm

_RATIO_TO_TYPE = {0: "sliding_attention", 4: "compressed_sparse_attention", 128: "heavily_compressed_attention"}


# ----------------------------------------------------------------------------------------------------------------
# ADAPTATION 1: routing weight multiplies the SwiGLU intermediate BEFORE W2 (official Expert.forward, spec §3.7.4).
# The port multiplies the down_proj output instead. In exact arithmetic both are equal (W2 is linear); in fp32 they
# differ by rounding only, but we follow the official order so the golden matches a faithful engine bit-for-bit-ish.
# ----------------------------------------------------------------------------------------------------------------
def _experts_forward_official(self, hidden_states, top_k_index, top_k_weights):
    final = torch.zeros_like(hidden_states)
    for expert_idx in range(self.num_experts):
        token_idx, top_k_pos = torch.where(top_k_index == expert_idx)
        if token_idx.numel() == 0:
            continue
        inter = self._apply_gate(F.linear(hidden_states[token_idx], self.gate_up_proj[expert_idx]))
        inter = inter * top_k_weights[token_idx, top_k_pos, None]
        final.index_add_(0, token_idx, F.linear(inter, self.down_proj[expert_idx]).to(final.dtype))
    return final


# ----------------------------------------------------------------------------------------------------------------
# ADAPTATION 2: routing weights are normalised WITHOUT the port's +1e-20 epsilon (official Gate.forward adds none;
# spec §3.7.3). Numerically invisible for these sizes, patched for fidelity.
# ----------------------------------------------------------------------------------------------------------------
def _topk_router_forward_official(self, hidden_states):
    flat = hidden_states.reshape(-1, self.hidden_dim)
    logits = F.linear(flat, self.weight)
    scores = self.score_fn(logits)
    indices = torch.topk(scores + self.e_score_correction_bias, self.top_k, dim=-1, sorted=False).indices
    weights = scores.gather(1, indices)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return logits, weights * self.routed_scaling_factor, indices


def _hash_router_forward_official(self, hidden_states, input_ids):
    flat = hidden_states.reshape(-1, self.hidden_dim)
    logits = F.linear(flat, self.weight)
    scores = self.score_fn(logits)
    indices = self.tid2eid[input_ids.reshape(-1)].long()
    weights = scores.gather(1, indices)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return logits, weights * self.routed_scaling_factor, indices


_PATCHED = False


def apply_official_patches():
    global _PATCHED
    if _PATCHED:
        return
    hfm.DeepseekV4Experts.forward = _experts_forward_official
    hfm.DeepseekV4TopKRouter.forward = _topk_router_forward_official
    hfm.DeepseekV4HashRouter.forward = _hash_router_forward_official
    _PATCHED = True


# ----------------------------------------------------------------------------------------------------------------
# Config and weights
# ----------------------------------------------------------------------------------------------------------------
def hf_config(cfg_json):
    """DeepseekV4Config from an official config.json dict.

    ADAPTATION 3: the attention schedule (layer_types) and the hash schedule (mlp_layer_types) are always passed
    explicitly from `compress_ratios` / `num_hash_layers` (spec §9: HF's default interleave differs from Pro)."""
    L = cfg_json["num_hidden_layers"]
    kw = {k: v for k, v in cfg_json.items() if k not in ("quantization_config", "torch_dtype", "architectures",
                                                          "transformers_version", "topk_method", "model_type")}
    kw["layer_types"] = [_RATIO_TO_TYPE[r] for r in cfg_json["compress_ratios"][:L]]
    kw["mlp_layer_types"] = ["hash_moe" if i < cfg_json["num_hash_layers"] else "moe" for i in range(L)]
    config = DeepseekV4Config(**kw)
    config._attn_implementation = "eager"
    assert config.sliding_window == cfg_json["sliding_window"]
    assert config.qk_rope_head_dim == cfg_json["qk_rope_head_dim"]
    assert config.rope_parameters["compress"]["rope_type"] == "yarn"
    assert config.rope_parameters["compress"]["attention_factor"] == 1.0
    return config


def hf_state_dict(cfg_json, dq, dtype):
    """Official names (dequantised float64 values) -> transformers names (spec §7.4), routed experts stacked."""
    L, E = cfg_json["num_hidden_layers"], cfg_json["n_routed_experts"]
    sd = {
        "model.embed_tokens.weight": dq["embed.weight"],
        "lm_head.weight": dq["head.weight"],
        "model.norm.weight": dq["norm.weight"],
        "model.hc_head.hc_fn": dq["hc_head_fn"],
        "model.hc_head.hc_base": dq["hc_head_base"],
        "model.hc_head.hc_scale": dq["hc_head_scale"],
    }
    attn_map = {"wq_a": "q_a_proj", "q_norm": "q_a_norm", "wq_b": "q_b_proj", "wkv": "kv_proj", "kv_norm": "kv_norm",
                "wo_a": "o_a_proj", "wo_b": "o_b_proj"}
    cmp_map = {"wkv.weight": "kv_proj.weight", "wgate.weight": "gate_proj.weight", "ape": "position_bias",
               "norm.weight": "kv_norm.weight"}
    for l in range(L):
        o, h = f"layers.{l}.", f"model.layers.{l}."
        for sub in ("attn", "ffn"):
            for part in ("fn", "base", "scale"):
                sd[h + f"{sub}_hc.{part}"] = dq[o + f"hc_{sub}_{part}"]
        sd[h + "input_layernorm.weight"] = dq[o + "attn_norm.weight"]
        sd[h + "post_attention_layernorm.weight"] = dq[o + "ffn_norm.weight"]
        for k, v in attn_map.items():
            sd[h + f"self_attn.{v}.weight"] = dq[o + f"attn.{k}.weight"]
        sd[h + "self_attn.sinks"] = dq[o + "attn.attn_sink"]
        ratio = cfg_json["compress_ratios"][l]
        if ratio:
            for k, v in cmp_map.items():
                sd[h + f"self_attn.compressor.{v}"] = dq[o + f"attn.compressor.{k}"]
            if ratio == 4:
                ih = h + "self_attn.compressor.indexer."
                sd[ih + "q_b_proj.weight"] = dq[o + "attn.indexer.wq_b.weight"]
                sd[ih + "scorer.weights_proj.weight"] = dq[o + "attn.indexer.weights_proj.weight"]
                for k, v in cmp_map.items():
                    sd[ih + v] = dq[o + f"attn.indexer.compressor.{k}"]
        sd[h + "mlp.gate.weight"] = dq[o + "ffn.gate.weight"]
        if l < cfg_json["num_hash_layers"]:
            sd[h + "mlp.gate.tid2eid"] = dq[o + "ffn.gate.tid2eid"]
        else:
            sd[h + "mlp.gate.e_score_correction_bias"] = dq[o + "ffn.gate.bias"]
        for k, v in {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}.items():
            sd[h + f"mlp.shared_experts.{v}.weight"] = dq[o + f"ffn.shared_experts.{k}.weight"]
        sd[h + "mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([dq[o + f"ffn.experts.{e}.w1.weight"], dq[o + f"ffn.experts.{e}.w3.weight"]], 0)
             for e in range(E)])
        sd[h + "mlp.experts.down_proj"] = torch.stack([dq[o + f"ffn.experts.{e}.w2.weight"] for e in range(E)])
    return {k: (v if v.dtype == torch.int64 else v.to(dtype)) for k, v in sd.items()}


def build_model(cfg_json, dq, dtype=torch.float32):
    apply_official_patches()
    config = hf_config(cfg_json)
    torch.manual_seed(0)
    model = DeepseekV4ForCausalLM(config).to(dtype).eval()
    missing, unexpected = model.load_state_dict(hf_state_dict(cfg_json, dq, dtype), strict=True)
    assert not missing and not unexpected
    return model


# ----------------------------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def prefill_logits(model, ids):
    """One forward over the whole sequence, no cache: [T, V]."""
    x = torch.tensor([ids])
    pos = torch.arange(len(ids)).unsqueeze(0)
    return model(input_ids=x, position_ids=pos, use_cache=False).logits[0].float()


@torch.no_grad()
def decode_logits(model, ids, n_prefill):
    """Prefill ids[:n] with a cache, then feed one token at a time. Returns [T, V] (rows < n from the prefill)."""
    cache = DynamicCache(config=model.config)
    x = torch.tensor([ids[:n_prefill]])
    pos = torch.arange(n_prefill).unsqueeze(0)
    rows = [model(input_ids=x, position_ids=pos, past_key_values=cache, use_cache=True).logits[0].float()]
    for t in range(n_prefill, len(ids)):
        out = model(input_ids=torch.tensor([[ids[t]]]), position_ids=torch.tensor([[t]]), past_key_values=cache,
                    use_cache=True)
        rows.append(out.logits[0].float())
    return torch.cat(rows, 0)
