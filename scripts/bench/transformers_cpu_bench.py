"""transformers' DeepseekV4ForCausalLM on CPU, on the same checkpoint and token counts as bench/cpu_decode_bench,
for the side-by-side figure of issue 3 (docs/PERFORMANCE.md). Weights are dequantised to float32 (transformers has
no FP8/FP4 CPU kernels), the model runs eager in float32 with torch's intra-op threads.

    python3 scripts/bench/transformers_cpu_bench.py --checkpoint /tmp/model_1b --prompt 128 --steps 16 --threads 2
"""

import argparse
import json
import os
import sys
import time

import torch
from transformers.cache_utils import DynamicCache

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import dsv4_hf_oracle as oracle  # noqa: E402
from make_mtp_golden import load_dequantised  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = json.load(open(os.path.join(args.checkpoint, "config.json")))
    t0 = time.time()
    dq = load_dequantised(args.checkpoint, torch.float32)
    model = oracle.build_model(cfg, dq, torch.float32)
    del dq
    print(f"load + dequantise: {time.time() - t0:.1f} s, torch {torch.__version__}, threads {args.threads}")
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, cfg["vocab_size"], (1, args.prompt + args.steps), generator=g)
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        t0 = time.time()
        model(input_ids=ids[:, : args.prompt], position_ids=torch.arange(args.prompt)[None], past_key_values=cache,
              use_cache=True)
        t_prefill = time.time() - t0
        t0 = time.time()
        for t in range(args.prompt, args.prompt + args.steps):
            model(input_ids=ids[:, t:t + 1], position_ids=torch.tensor([[t]]), past_key_values=cache, use_cache=True)
        t_decode = (time.time() - t0) / args.steps
    print(f"transformers prefill {args.prompt} tokens: {t_prefill:.3f} s, {args.prompt / t_prefill:.1f} tokens/s")
    print(f"transformers decode batch 1: {t_decode * 1e3:.1f} ms/token, {1.0 / t_decode:.2f} tokens/s")


if __name__ == "__main__":
    main()
