#!/usr/bin/python3
"""Simulator tables and plots of docs/SCALING.md: the V3 anchors, V4-Pro on 16 x 8 H100 at 4K and 1M context
for every layout the planner allows, and the scaling curve from 4 to 64 nodes. Everything comes from
`dsv4-launch simulate`; this script only runs it and formats the results.

  /usr/bin/python3 scripts/scaling/predict.py [--build build] [--docs docs]

Prints markdown tables to stdout and writes docs/scaling_pro_curve.png and docs/scaling_pro_layouts.png.
"""
import argparse
import json
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sim(launch, *args):
    r = subprocess.run([launch, "simulate", "--json", *args], capture_output=True, text=True)
    if r.returncode != 0:
        msg = (r.stdout + r.stderr).strip().splitlines()[-1]
        return None, re.sub(r"^\[[^]]*\] (invalid argument: )?", "", re.sub(r" \[[a-z_]+\.cc:\d+\].*$", "", msg))
    return json.loads(r.stdout), None


def hw(name):
    return os.path.join(ROOT, "configs", "hardware", name + ".yaml")


def v3_anchors(launch):
    v3 = os.path.join(ROOT, "configs", "simulator", "deepseek-v3.yaml")
    cases = [
        # name, published per node, kind, args
        ("DeepSeek decode, H800, EP144/DP144 (18 nodes), 88 seq/GPU, 4K context", 14800, "decode",
         ["--layout", "144,1,144,1", "--nodes", "18", "--gpus-per-node", "8", "--hardware", hw("h800"),
          "--batch", str(144 * 88), "--context", "4096", "--prompt", "4096", "--output", "1024",
          "--redundant-experts", "32"]),
        ("DeepSeek prefill, H800, EP32/DP32 (4 nodes), 16K tokens/GPU, 4K prompts; published 73.7k incl. 56.3% "
         "cache hits = 32.2k computed", 32200, "prefill",
         ["--layout", "32,1,32,1", "--nodes", "4", "--gpus-per-node", "8", "--hardware", hw("h800"),
          "--batch", "128", "--context", "4096", "--prompt", "4096", "--output", "1024", "--redundant-experts", "32"]),
        ("SGLang decode, H100, EP72/DP72 (9 nodes), 256 seq/GPU, 2000-token inputs", 22300, "decode",
         ["--layout", "72,1,72,1", "--nodes", "9", "--gpus-per-node", "8", "--hardware", hw("h100"),
          "--batch", str(72 * 256), "--context", "2050", "--prompt", "2000", "--output", "100",
          "--redundant-experts", "32"]),
        ("SGLang prefill, H100, EP32/DP32 (4 nodes), 16K tokens/GPU, 2000-token inputs", 52300, "prefill",
         ["--layout", "32,1,32,1", "--nodes", "4", "--gpus-per-node", "8", "--hardware", hw("h100"),
          "--batch", "256", "--context", "2050", "--prompt", "2000", "--output", "100", "--redundant-experts", "32",
          "--prefill-chunk", "16384"]),
    ]
    print("| case | published tok/s/node | predicted, overlap | error | predicted, no overlap | error | decode step ms "
          "(overlap / none) | bottleneck |")
    print("|---|---|---|---|---|---|---|---|")
    for name, published, kind, args in cases:
        row = []
        steps = []
        bottleneck = ""
        for extra in ([], ["--no-overlap"]):
            j, err = sim(launch, "--mla-model", v3, *args, *extra)
            if j is None:
                row += [err, ""]
                continue
            per_node = j[f"{kind}_tokens_per_s_per_gpu"] * 8
            row += [f"{per_node:,.0f}", f"{100 * (per_node / published - 1):+.0f}%"]
            steps.append(f"{1e3 * j[kind]['total']:.1f}")
            bottleneck = j[kind]["bottleneck"]
        print(f"| {name} | {published:,} | {row[0]} | {row[1]} | {row[2]} | {row[3]} | {' / '.join(steps)} | "
              f"{bottleneck} |")


def pro_layouts(launch):
    pro = os.path.join(ROOT, "configs", "models", "pro.json")
    rows = []
    print("| context | dp,tp,ep,cp | batch | decode overlap | decode step ms | decode tok/s/GPU | tok/s per sequence | "
          "prefill tok/s/GPU | GiB/GPU | fits 80 GiB | bottleneck |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for ctx_name, ctx, prompt in (("4K", 4096, 4096), ("1M", 1048576, 65536)):
        for tp in (1, 2, 4, 8, 16):
            for cp in ((1,) if ctx_name == "4K" else (1, 2, 4)):
                dp = 128 // (tp * cp)
                if dp < 1:
                    continue
                # 4K: 32 sequences per GPU; 1M: 8 sequences per replica (what memory allows).
                batch = 4096 if ctx_name == "4K" else dp * 8
                layout = f"{dp},{tp},128,{cp}"
                for overlap in (True, False):
                    args = ["--config", pro, "--layout", layout, "--nodes", "16", "--gpus-per-node", "8", "--hardware",
                            hw("h100"), "--batch", str(batch), "--context", str(ctx), "--prompt", str(prompt),
                            "--output", "1024"] + ([] if overlap else ["--no-overlap"])
                    j, err = sim(launch, *args)
                    if j is None:
                        if overlap:
                            print(f"| {ctx_name} | {layout} | {batch} | | refused: {err.strip(' -')} | | | | | | |")
                        break
                    d = j["decode"]
                    rows.append((ctx_name, tp, cp, overlap, j["decode_tokens_per_s_per_gpu"]))
                    used = "yes" if d.get("overlapped") else ("allowed, serial faster" if overlap else "no")
                    print(f"| {ctx_name} | {layout} | {batch} | {used} | {1e3 * d['total']:.2f} | "
                          f"{j['decode_tokens_per_s_per_gpu']:,.0f} | {1 / d['total']:.1f} | "
                          f"{j['prefill_tokens_per_s_per_gpu']:,.0f} | {j['memory']['total'] / 2**30:.1f} | "
                          f"{'yes' if j['fits'] else 'NO'} | {d['bottleneck']} |")
    return rows


def curve(launch, docs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pro = os.path.join(ROOT, "configs", "models", "pro.json")
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.2))
    print("| layout (tp) | overlap | GPUs | nodes | dp | ep | decode tok/s/GPU | prefill tok/s/GPU | GiB/GPU | fits | bottleneck |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for tp, style in ((2, "o-"), (8, "s-")):
        for overlap in (True, False):
            csv = f"/tmp/scaling_curve_tp{tp}_{int(overlap)}.csv"
            args = [launch, "simulate", "--config", pro, "--layout", f"{128 // tp},{tp},128,1", "--gpus-per-node", "8",
                    "--hardware", hw("h100"), "--batch", str(32 * 128), "--context", "4096", "--prompt", "4096",
                    "--output", "1024", "--sweep", "32..512", "--csv", csv] + ([] if overlap else ["--no-overlap"])
            subprocess.run(args, check=True, capture_output=True)
            lines = [l.split(",") for l in open(csv).read().strip().splitlines()[1:]]
            xs, dec, pre = [], [], []
            for f in lines:
                gpus, nodes, dp, _, ep = f[0], f[1], f[2], f[3], f[4]
                if f[-1]:
                    print(f"| tp {tp} | {'yes' if overlap else 'no'} | {gpus} | {nodes} | {dp} | {ep} | refused: {f[-1]} | | | | |")
                    continue
                xs.append(int(nodes))
                dec.append(float(f[8]))
                pre.append(float(f[9]))
                print(f"| tp {tp} | {'yes' if overlap else 'no'} | {gpus} | {nodes} | {dp} | {ep} | {float(f[8]):,.0f} | "
                      f"{float(f[9]):,.0f} | {float(f[10]):.1f} | {'yes' if f[11] == '1' else 'NO'} | {f[12]} |")
            label = f"tp {tp}, {'overlap' if overlap else 'no overlap'}"
            ax[0].plot(xs, dec, style if overlap else style.replace("-", "--"), label=label)
            ax[1].plot(xs, pre, style if overlap else style.replace("-", "--"), label=label)
    for a, title in zip(ax, ["V4-Pro decode, 32 seq/GPU, 4K context (H100)", "V4-Pro prefill, 4K prompts (H100)"]):
        a.set_xscale("log", base=2)
        a.set_xticks([4, 8, 16, 32, 64])
        a.set_xticklabels(["4", "8", "16", "32", "64"])
        a.set_xlabel("nodes (8 x H100)")
        a.set_ylabel("tokens/s per GPU (predicted)")
        a.set_title(title, fontsize=10)
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(docs, "scaling_pro_curve.png")
    fig.savefig(path, dpi=110)
    print(f"\nwrote {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--docs", default=os.path.join(ROOT, "docs"))
    args = p.parse_args()
    launch = os.path.join(args.build, "launcher", "dsv4-launch")
    print("## V3 anchors\n")
    v3_anchors(launch)
    print("\n## V4-Pro, 16 x 8 H100\n")
    pro_layouts(launch)
    print("\n## Scaling curve, 4 to 64 nodes\n")
    curve(launch, args.docs)


if __name__ == "__main__":
    main()
