"""Golden data for the MTP module (spec §3.9), which transformers drops: computed in float64 from the spec with the
independent spec re-implementation (dsv4_spec_ref.py) on a golden checkpoint's dequantised tensors.

Convention (spec §11 open question 1, V3 style): the MTP input at step t is the main model's pre-HC-head state H_t
[4, D] and the token x_{t+1}; the MTP block runs at RoPE position t with its own 128-row window (SWA, main RoPE,
non-hash router with bias) and predicts x_{t+2}. Writes tests/golden/mtp/<name>.{json,f32}.

    python3 scripts/reference/make_mtp_golden.py [--name golden-a] [--steps 40]
"""

import argparse
import json
import os
import sys

import torch
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(__file__))
import dsv4_quant as q  # noqa: E402
import dsv4_spec_ref as ref  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def load_dequantised(ckpt, dtype=torch.float64):
    """Official names -> exact dequantised values (`dtype`), from a sharded or a single-file checkpoint."""
    index_path = os.path.join(ckpt, "model.safetensors.index.json")
    if os.path.exists(index_path):
        shards = sorted(set(json.load(open(index_path))["weight_map"].values()))
    else:
        shards = ["model.safetensors"]
    raw = {}
    for shard in shards:
        with safe_open(os.path.join(ckpt, shard), "pt") as f:
            for k in f.keys():
                raw[k] = f.get_tensor(k)
    dq = {}
    for k, v in raw.items():
        if k.endswith(".scale"):
            continue
        if k.endswith(".weight") and k[: -len(".weight")] + ".scale" in raw:
            s = raw[k[: -len(".weight")] + ".scale"]
            if v.dtype == torch.float8_e4m3fn:
                dq[k] = q.dequantize_fp8_block(v, s).to(dtype)
            else:
                dq[k] = q.dequantize_fp4_experts(v, s).to(dtype)
        elif v.dtype == torch.int64:
            dq[k] = v
        else:
            dq[k] = v.to(dtype)
    return dq


def main_hidden(cfg, dq, tokens):
    """The main model's residual state after the last layer (before the HC head), [T, 4, D]."""
    st = ref.Stats()
    tokens = torch.as_tensor(tokens)
    T = tokens.shape[0]
    pos = torch.arange(T, dtype=torch.float64)
    X = dq["embed.weight"][tokens][:, None, :].repeat(1, 4, 1)
    for l in range(cfg["num_hidden_layers"]):
        X = block(cfg, dq, f"layers.{l}.", X, pos, tokens, cfg["compress_ratios"][l], l < cfg["num_hash_layers"], st)
    return X


def block(cfg, dq, p, X, pos, tokens, ratio, is_hash, st):
    it = cfg["hc_sinkhorn_iters"]
    u, post, C = ref.hc_pre(X, dq[p + "hc_attn_fn"], dq[p + "hc_attn_base"], dq[p + "hc_attn_scale"], it)
    y = ref.attention(cfg, dq, p + "attn.", ref.rms(u, dq[p + "attn_norm.weight"]), pos, ratio, st)
    X = ref.hc_post(X, y, post, C)
    u, post, C = ref.hc_pre(X, dq[p + "hc_ffn_fn"], dq[p + "hc_ffn_base"], dq[p + "hc_ffn_scale"], it)
    y = ref.moe(cfg, dq, p + "ffn.", ref.rms(u, dq[p + "ffn_norm.weight"]), tokens, is_hash, st)
    return ref.hc_post(X, y, post, C)


def hc_head_logits(dq, X, prefix):
    T = X.shape[0]
    f = X.reshape(T, -1)
    rho = 1.0 / torch.sqrt((f * f).mean(-1, keepdim=True) + ref.EPS)
    m = rho * (f @ dq[prefix + "hc_head_fn"].T)
    pw = torch.sigmoid(m * dq[prefix + "hc_head_scale"] + dq[prefix + "hc_head_base"]) + ref.EPS
    h = (pw[:, :, None] * X).sum(1)
    return ref.rms(h, dq[prefix + "norm.weight"]) @ dq["head.weight"].T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="golden-a")
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    gdir = os.path.join(ROOT, "tests", "golden", "model", args.name)
    cfg = json.load(open(os.path.join(gdir, "config.json")))
    tokens = json.load(open(os.path.join(gdir, "manifest.json")))["tokens"][: args.steps + 1]
    dq = load_dequantised(gdir)
    H = main_hidden(cfg, dq, tokens)[:-1]  # H_t for t = 0 .. steps-1
    nxt = torch.as_tensor(tokens[1:])      # x_{t+1}
    p = "mtp.0."
    e = ref.rms(dq["embed.weight"][nxt], dq[p + "enorm.weight"]) @ dq[p + "e_proj.weight"].T
    U = ref.rms(H, dq[p + "hnorm.weight"]) @ dq[p + "h_proj.weight"].T + e[:, None, :]
    pos = torch.arange(len(nxt), dtype=torch.float64)
    U = block(cfg, dq, p, U, pos, nxt, 0, False, ref.Stats())
    logits = hc_head_logits(dq, U, p).float()
    out = os.path.join(ROOT, "tests", "golden", "mtp")
    os.makedirs(out, exist_ok=True)
    logits.numpy().astype("<f4").tofile(os.path.join(out, args.name + ".f32"))
    json.dump({"checkpoint": f"tests/golden/model/{args.name}", "tokens": tokens, "steps": len(nxt),
               "logits": {"file": args.name + ".f32", "dtype": "float32", "byte_order": "little",
                          "shape": [len(nxt), cfg["vocab_size"]]},
               "convention": "row t: MTP(H_t, token[t+1]) at RoPE position t, predicting token[t+2]",
               "generator": "scripts/reference/make_mtp_golden.py (float64 spec reference)",
               "torch": torch.__version__},
              open(os.path.join(out, args.name + ".json"), "w"), indent=1)
    print("wrote", out, logits.shape, float(logits.abs().max()))


if __name__ == "__main__":
    main()
