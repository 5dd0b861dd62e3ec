#!/usr/bin/env python3
"""How sensitive are the golden logits to the classic DeepSeek-V4 bugs (spec §10)?

Re-runs the float64 spec reference with one deliberate bug at a time and prints max|logits - golden| / max|golden|
for each golden set. A bug whose number is far above the 1e-4 acceptance tolerance is caught by the golden test.
Reads the committed golden sets (checkpoint + manifest); writes nothing.

Usage: python3 scripts/reference/check_sensitivity.py [--golden tests/golden]
"""

import argparse
import copy
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dsv4_spec_ref as sr  # noqa: E402
from dsv4_quant import dequantize_fp4_experts, dequantize_fp8_block  # noqa: E402


def load_dequantised(ck):
    """Read the checkpoint back from disk (through the index) and dequantise it: float64 values by official name."""
    with open(os.path.join(ck, "model.safetensors.index.json")) as fh:
        wm = json.load(fh)["weight_map"]
    raw = {}
    for f in sorted(set(wm.values())):
        raw.update(load_file(os.path.join(ck, f)))
    dq = {}
    for n, t in raw.items():
        if n.endswith(".scale"):
            continue
        sc = n[: -len(".weight")] + ".scale" if n.endswith(".weight") else None
        if t.dtype == torch.float8_e4m3fn:
            dq[n] = dequantize_fp8_block(t, raw[sc])
        elif t.dtype == torch.int8:
            dq[n] = dequantize_fp4_experts(t, raw[sc])
        elif t.dtype == torch.int64:
            dq[n] = t
        else:
            dq[n] = t.double()
    return dq


def compress_rows_variant(first_gate, row_pos_mult):
    """A copy of dsv4_spec_ref.compress_rows with two knobs: the score of window 0's "previous" slots
    (official: -inf; HF's static cache: 0) and the RoPE position of row w (official: w*m)."""

    def f(x, wkv, wgate, ape, norm_w, m, h, om):
        T = x.shape[0]
        W = T // m
        if W == 0:
            return x.new_zeros(0, h)
        a = (x[: W * m] @ wkv.T).reshape(W, m, -1)
        s = (x[: W * m] @ wgate.T + ape.repeat(W, 1)).reshape(W, m, -1)
        if m == 4:
            prev_kv = torch.cat([torch.zeros_like(a[:1, :, :h]), a[:-1, :, :h]], 0)
            prev_s = torch.cat([torch.full_like(s[:1, :, :h], first_gate), s[:-1, :, :h]], 0)
            kv8, s8 = torch.cat([prev_kv, a[..., h:]], 1), torch.cat([prev_s, s[..., h:]], 1)
            g = (torch.softmax(s8, 1) * kv8).sum(1)
        else:
            g = (torch.softmax(s, 1) * a).sum(1)
        g = sr.rms(g, norm_w)
        return sr.rope(g, torch.arange(W, dtype=torch.float64) * (m if row_pos_mult is None else row_pos_mult), om)

    return f


def mutations():
    """name -> (cfg edit, dq edit, list of (module attr, replacement))."""
    orig_hc_post, orig_rope, orig_omegas = sr.hc_post, sr.rope, sr.rope_omegas

    def hc_post_untransposed(X, y, post, C):
        return orig_hc_post(X, y, post, C.transpose(-1, -2))

    def rope_no_inverse(x, pos, om, inverse=False):
        return x if inverse else orig_rope(x, pos, om)

    def omegas_no_yarn(cfg, compress):
        if not compress:
            return orig_omegas(cfg, False)
        c = copy.deepcopy(cfg)
        c["rope_theta"] = cfg["compress_rope_theta"]
        return orig_omegas(c, False)

    def omegas_main_everywhere(cfg, compress):
        return orig_omegas(cfg, False)

    def set_cfg(key, value):
        def f(cfg):
            cfg[key] = value
        return f

    def no_sink(dq):
        for k in dq:
            if k.endswith("attn_sink"):
                dq[k] = torch.full_like(dq[k], -1e30)

    return {
        "(control: the copy of compress_rows, unchanged)": (None, None,
                                                          [("compress_rows", compress_rows_variant(float("-inf"),
                                                                                                   None))]),
        "comb used untransposed (C X instead of C^T X)": (None, None, [("hc_post", hc_post_untransposed)]),
        "no inverse RoPE on the attention output": (None, None, [("rope", rope_no_inverse)]),
        "no YaRN on compressed layers": (None, None, [("rope_omegas", omegas_no_yarn)]),
        "main RoPE (theta 10000) on compressed layers": (None, None, [("rope_omegas", omegas_main_everywhere)]),
        "sliding window one row too wide": ("window+1", None, []),
        "CSA window 0 'previous' slots scored 0 (not -inf)": (None, None,
                                                            [("compress_rows", compress_rows_variant(0.0, None))]),
        "compressed row w RoPE'd at position w (not w*m)": (None, None,
                                                          [("compress_rows", compress_rows_variant(float("-inf"), 1))]),
        "indexer ignored (all visible CSA rows)": (set_cfg("index_topk", 10 ** 9), None, []),
        "SwiGLU clamp removed": (set_cfg("swiglu_limit", 1e30), None, []),
        "attention sink ignored": (None, no_sink, []),
        "routed_scaling_factor ignored": (set_cfg("routed_scaling_factor", 1.0), None, []),
    }


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--golden", default=os.path.normpath(os.path.join(here, "..", "..", "tests", "golden")))
    args = ap.parse_args()
    root = os.path.join(args.golden, "model")
    for name in sorted(os.listdir(root)):
        ck = os.path.join(root, name)
        with open(os.path.join(ck, "manifest.json")) as fh:
            man = json.load(fh)
        with open(os.path.join(ck, "config.json")) as fh:
            cfg = json.load(fh)
        T, V = man["prefill_logits"]["shape"]
        gold = torch.from_numpy(np.fromfile(os.path.join(ck, "prefill_logits.f32"), "<f4").reshape(T, V)).double()
        dq = load_dequantised(ck)
        scale = float(gold.abs().max())
        base, _ = sr.forward(cfg, dq, man["tokens"])
        print(f"{name}: unmodified spec reference vs golden: {float((base - gold).abs().max()) / scale:.2e}")
        for label, (cfg_edit, dq_edit, patches) in mutations().items():
            c, d = copy.deepcopy(cfg), dict(dq)
            if cfg_edit == "window+1":
                c["sliding_window"] += 1
            elif cfg_edit:
                cfg_edit(c)
            if dq_edit:
                dq_edit(d)
            saved = [(attr, getattr(sr, attr)) for attr, _ in patches]
            for attr, fn in patches:
                setattr(sr, attr, fn)
            try:
                out, _ = sr.forward(c, d, man["tokens"])
            finally:
                for attr, fn in saved:
                    setattr(sr, attr, fn)
            err = float((out - gold).abs().max()) / scale
            am = float((out.argmax(1) == gold.argmax(1)).double().mean())
            print(f"  {label:55s} rel {err:.2e}  argmax agree {am:.3f}")


if __name__ == "__main__":
    main()
