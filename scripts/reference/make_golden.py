#!/usr/bin/env python3
"""Generate the golden model data under tests/golden/ (see tests/golden/README.md).

For each golden config: random weights (fixed seed) -> official formats -> official-layout checkpoint ->
dequantised weights loaded into transformers' DeepseekV4ForCausalLM (adapted to the official semantics, see
dsv4_hf_oracle.py) -> prefill logits and step-by-step decode logits, cross-checked against an independent float64
re-implementation of the spec (dsv4_spec_ref.py). Then the QAT-op golden data (make_qat_golden.py).

Usage: python3 scripts/reference/make_golden.py [--out tests/golden] [--only golden-a] [--skip-qat]
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dsv4_spec_ref  # noqa: E402
from dsv4_checkpoint import build_tensors, golden_configs, write_checkpoint  # noqa: E402
from dsv4_hf_oracle import build_model, decode_logits, prefill_logits  # noqa: E402

# Acceptance limits for a golden set (relative to max|ref|). The C++ test uses 1e-4; the oracle must be far tighter.
ORACLE_AGREEMENT = 2e-5
# Discrete choices must not sit on near-ties, or an fp32 engine may legitimately pick differently.
MIN_INDEX_MARGIN = 2e-5
# 2.5x the C++ tolerance: an engine inside the value tolerance cannot flip an argmax.
MIN_ARGMAX_GAP = 2.5e-4
TOKEN_SEED_TRIES = 16


def write_f32(path, t):
    np.ascontiguousarray(t.detach().to(torch.float32).numpy()).astype("<f4").tofile(path)


def choose_tokens(cfg, dq, run):
    """Try token seeds; keep the first whose discrete choices have comfortable margins (else the best one)."""
    best = None
    V, T = cfg["vocab_size"], run["seq_len"]
    for k in range(TOKEN_SEED_TRIES):
        tseed = run["seed"] * 100 + k
        g = torch.Generator().manual_seed(tseed)
        ids = [cfg["bos_token_id"]] + torch.randint(2, V, (T - 1,), generator=g).tolist()
        ref, st = dsv4_spec_ref.forward(cfg, dq, ids)
        top2 = torch.topk(ref, 2, -1).values
        gap = float((top2[:, 0] - top2[:, 1]).min() / ref.abs().max())
        score = min(st.index_margin / MIN_INDEX_MARGIN, gap / MIN_ARGMAX_GAP)
        print(f"  token seed {tseed}: index margin {st.index_margin:.3g}, argmax gap {gap:.3g}, "
              f"router margin {st.router_margin:.3g}", flush=True)
        if best is None or score > best[0]:
            best = (score, tseed, ids, ref, st, gap)
        if score >= 2:
            break
    return best


def positions_of_interest(cfg, T, n):
    """Decode steps saved in decode_logits.f32: the prefill rows, the first 32 steps, the HCA/CSA events, the tail."""
    pos = set(range(min(T, n + 32)))
    win = cfg["sliding_window"]
    for p in (win - 1, win, win + 1, 127, 128, 129, 255, 256, 257, 383, 384, 385):
        if 0 <= p < T:
            pos.add(p)
    k = cfg["index_topk"]
    for p in (4 * k + 2, 4 * k + 3, 4 * k + 4):
        if p < T:
            pos.add(p)
    pos.update(range(max(0, T - 8), T))
    return sorted(pos)


def make_one(name, cfg, run, out_root):
    print(f"[{name}] building weights (seed {run['seed']})", flush=True)
    stored, dq = build_tensors(cfg, run["seed"])
    ck_dir = os.path.join(out_root, "model", name)
    write_checkpoint(ck_dir, cfg, stored, run["shards"])
    T, n, V = run["seq_len"], run["decode_prefill"], cfg["vocab_size"]

    print(f"[{name}] choosing tokens", flush=True)
    _, tseed, ids, ref, st, gap = choose_tokens(cfg, dq, run)
    assert st.index_margin >= MIN_INDEX_MARGIN, f"indexer near-tie {st.index_margin}"
    assert gap >= MIN_ARGMAX_GAP, f"argmax near-tie {gap}"

    print(f"[{name}] transformers prefill / decode", flush=True)
    model = build_model(cfg, dq, torch.float32)
    pre = prefill_logits(model, ids)
    dec = decode_logits(model, ids, n)
    # Chunked prefill through the cache (chunks of 37 tokens), only as a consistency check of the oracle.
    from transformers.cache_utils import DynamicCache
    cache, rows = DynamicCache(config=model.config), []
    with torch.no_grad():
        for s in range(0, T, 37):
            e = min(T, s + 37)
            rows.append(model(input_ids=torch.tensor([ids[s:e]]), position_ids=torch.arange(s, e)[None],
                              past_key_values=cache, use_cache=True).logits[0].float())
    chunked = torch.cat(rows, 0)

    scale = float(ref.abs().max())

    def rel(a, b):
        return float((a.double() - b.double()).abs().max() / scale)

    checks = {
        "hf_prefill_vs_spec_ref_max_rel": rel(pre, ref),
        "hf_decode_vs_spec_ref_max_rel": rel(dec, ref),
        "hf_chunked37_vs_spec_ref_max_rel": rel(chunked, ref),
        "argmax_equal_hf_vs_spec": bool(torch.equal(pre.argmax(1), ref.argmax(1))),
        "argmax_top2_gap_min_rel": gap,
        "indexer_topk_margin_min_rel": st.index_margin,
        "indexer_selecting_queries": st.index_selecting_queries,
        "router_topk_margin_min_rel": st.router_margin,
        "swiglu_clamp_gate_hits": st.clamp_gate_hits,
        "swiglu_clamp_up_hits": st.clamp_up_hits,
        "logits_max_abs": scale,
        "logits_mean_row_std": float(ref.std(1).mean()),
    }
    print(f"[{name}] checks: {json.dumps(checks)}", flush=True)
    for k in ("hf_prefill_vs_spec_ref_max_rel", "hf_decode_vs_spec_ref_max_rel", "hf_chunked37_vs_spec_ref_max_rel"):
        assert checks[k] <= ORACLE_AGREEMENT, f"{name}: oracle disagreement {k} = {checks[k]}"
    assert checks["argmax_equal_hf_vs_spec"]

    positions = positions_of_interest(cfg, T, n)
    write_f32(os.path.join(ck_dir, "prefill_logits.f32"), pre)
    write_f32(os.path.join(ck_dir, "decode_logits.f32"), dec[positions])
    ratios = cfg["compress_ratios"][: cfg["num_hidden_layers"]]
    manifest = {
        "name": name,
        "format_version": 1,
        "checkpoint_dir": ".",
        "numerics": "plain",
        "vocab_size": V,
        "seq_len": T,
        "tokens": ids,
        "prefill_logits": {"file": "prefill_logits.f32", "dtype": "float32", "byte_order": "little",
                           "shape": [T, V], "rows": "position 0..T-1 of one forward over all tokens"},
        "decode_logits": {"file": "decode_logits.f32", "dtype": "float32", "byte_order": "little",
                          "shape": [len(positions), V], "prefill_tokens": n, "positions": positions,
                          "rows": "row i = logits at position positions[i]; positions < prefill_tokens come from "
                                  "one cached prefill of tokens[0:prefill_tokens], later ones from feeding tokens "
                                  "one at a time with the cache"},
        "tolerance": {"max_abs_diff_over_max_abs_ref": 1e-4, "argmax": "equal at every position"},
        "layers": {"compress_ratios": ratios,
                   "hash_layers": list(range(cfg["num_hash_layers"])),
                   "mtp_layers_in_checkpoint": cfg["num_nextn_predict_layers"],
                   "mtp_covered_by_logits": False},
        "events": {"ring_wraps_at_position": cfg["sliding_window"],
                   "first_csa_row_visible_at": 3 if 4 in ratios else None,
                   "indexer_selects_from_position": 4 * cfg["index_topk"] + 3 if 4 in ratios else None,
                   "hca_rows_visible_at": [128 * w + 127 for w in range(T // 128)] if 128 in ratios else []},
        "checks": checks,
        "generator": {"script": "scripts/reference/make_golden.py", "weight_seed": run["seed"], "token_seed": tseed,
                      "torch": torch.__version__, "transformers": transformers.__version__,
                      "oracle": "transformers DeepseekV4ForCausalLM, float32, CPU, eager, adapted "
                                "(tests/golden/README.md)"},
    }
    with open(os.path.join(ck_dir, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1)
        fh.write("\n")
    print(f"[{name}] done", flush=True)


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.normpath(os.path.join(here, "..", "..", "tests", "golden")))
    ap.add_argument("--only", action="append")
    ap.add_argument("--skip-qat", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    for name, (cfg, run) in golden_configs().items():
        if args.only and name not in args.only:
            continue
        make_one(name, cfg, run, args.out)
    if not args.skip_qat:
        import make_qat_golden
        make_qat_golden.make(os.path.join(args.out, "qat"))


if __name__ == "__main__":
    main()
