#!/usr/bin/python3
"""Scaling experiments: one command runs the same workload at several world sizes and layouts and writes a
CSV, PNG plots and a markdown summary (strong- and weak-scaling efficiency, predicted vs measured).

Here (CPU ranks on one host), each configuration is `mpirun -np N dsv4 generate --dp D --tp T --ep E ...`
with a fixed prompt (token ids), greedy decoding and a fixed output length (one sequence: strong scaling of a
stream), or N independent single-rank jobs at once (`dpx`: data parallelism, weak scaling), timed from outside:

  * scripts/scaling/mpi_time.c (PMPI, preloaded) records on every rank the start of every engine step (the
    8-byte plan-size broadcast of the step loop) with the rank's MPI time so far, the time inside MPI calls, the
    CPU time and the peak resident memory. Step 0 is the prefill (TTFT without start-up and loading), the
    following steps are the inter-token latencies, and the MPI time between the first and the last step mark
    over their wall time is the communication share of step time;
  * the ranks' own log lines give their weight bytes; rank 0's stdout gives the tokens;
  * `dsv4-launch simulate` with the CPU profile gives the prediction for the same workload and layout.

  /usr/bin/python3 scripts/scaling/run_scaling.py --checkpoint /tmp/model_1b --out /tmp/scaling-run \
      [--build build] [--ranks 1,2,4] [--layouts ep,tp,tpep,dpx] [--prompt-len 32] [--output-len 16] [--repeat 2]

On a cluster the same command with --slurm DEPLOYMENT writes one deployment and one sbatch script per GPU
count (--gpus 8,16,...) through `dsv4-launch slurm`, each running this workload (same prompt, output length,
step marks) inside its allocation and writing its row to OUT/results/; --submit submits them (job ids in
OUT/manifest.json) and --gather OUT [--wait S] writes the same CSV, PNG and summary from the jobs' results,
naming every job that has none (scripts/scaling/slurm_jobs.py, docs/SCALING.md).
Python: the system interpreter (Debian python3-matplotlib); no other dependency.
"""
import argparse
import csv
import json
import os
import re
import select
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Layout families, as (dp, tp, ep) for a world of n ranks; None when the family has no member at n. `dsv4
# generate` runs one sequence: on DP replica 0, the other replicas join every step with no tokens (they still
# run the expert exchange and host their experts).
LAYOUTS = {
    # DeepSeek's layout: attention data-parallel, experts spread over every rank (EP = world).
    "ep": lambda n: (n, 1, n) if n > 1 else None,
    # Tensor parallel over every rank for the dense part, experts over every rank.
    "tp": lambda n: (1, n, n) if n > 1 else None,
    # Tensor-parallel pairs, experts over every rank.
    "tpep": lambda n: (n // 2, 2, n) if n >= 4 and n % 2 == 0 else None,
    # n independent single-rank jobs at once (pure data parallelism: replicas share nothing but the host).
    "dpx": lambda n: (n, 1, 1) if n > 1 else None,
}

def log(msg):
    print(msg, flush=True)


def prompt_ids(length, replica):
    """A fixed prompt per replica: deterministic ids spread over the vocabulary (no special tokens)."""
    return [1000 + (replica * 7919 + i * 104729) % 120000 for i in range(length)]


def build_mpi_time(out_dir):
    lib = os.path.join(out_dir, "libmpi_time.so")
    src = os.path.join(ROOT, "scripts", "scaling", "mpi_time.c")
    subprocess.run(["mpicc", "-O2", "-shared", "-fPIC", "-o", lib, src], check=True)
    return lib


def launch(args, lib, n, dp, tp, ep, tag, out_dir, jobs=1):
    """Starts `jobs` mpirun jobs of n ranks each (jobs > 1: independent single-rank replicas, dpx)."""
    # --bind-to none: Open MPI binds a job of <= 2 ranks to cores by default, which pins a one-rank job's CPU
    # threads to one core and stacks independent one-rank jobs (dpx) on the same core.
    cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(n), "-x", "LD_PRELOAD=" + lib, "-x", "MPI_TIME_MARK_BYTES=8",
           args.dsv4, "generate", "--checkpoint", args.checkpoint, "--max-tokens", str(args.output_len),
           "--temperature", "0", "--prompt-tokens", ",".join(map(str, prompt_ids(args.prompt_len, 0))),
           "--dp", str(dp), "--tp", str(tp), "--ep", str(ep)]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    log(f"== {tag}: {jobs} x {' '.join(cmd)}")
    procs = []
    for j in range(jobs):
        out = open(os.path.join(out_dir, f"{tag}_job{j}.out"), "w")
        err = open(os.path.join(out_dir, f"{tag}_job{j}.err"), "w")
        procs.append((subprocess.Popen(cmd, stdout=out, stderr=err, env=env), out.name, err.name))
    results = []
    deadline = time.monotonic() + args.timeout
    for proc, out_name, err_name in procs:
        try:
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p, _, _ in procs:
                p.kill()
            raise RuntimeError(f"{tag}: timed out after {args.timeout} s")
        stdout, stderr = open(out_name).read(), open(err_name).read()
        if rc != 0:
            raise RuntimeError(f"{tag}: exit {rc}; stderr tail: {stderr.strip().splitlines()[-5:]}")
        results.append((stdout, stderr))
    return results


def parse_job(stdout, stderr, output_len):
    """Per-step times and communication shares of one job from mpi_time's lines."""
    mpi, marks = [], {}
    for l in stderr.splitlines():
        # A line mangled by mpirun's forwarding is skipped (rank 0's marks and one summary per rank are required).
        try:
            if l.startswith("[mpi_time] "):
                mpi.append({k: float(v) for k, v in (kv.split("=") for kv in l.split("] ", 1)[1].split())})
            elif l.startswith("[mpi_time_marks] "):
                d = dict(kv.split("=") for kv in l.split("] ", 1)[1].split())
                marks[int(d["rank"])] = ([float(x) for x in d["t"].split(",")], [float(x) for x in d["comm"].split(",")],
                                         [float(x) for x in d["cpu"].split(",")])
        except ValueError:
            continue
    m = re.search(r"\((\d+) prompt tokens, (\d+) generated\)", stdout)
    if not m or 0 not in marks:
        raise RuntimeError("no [finish] line or no step marks from rank 0")
    tokens = int(m.group(2))
    # The loop: `tokens` sampling steps and one shutdown step, each starting with a mark.
    t0 = marks[0][0]
    if len(t0) < tokens + 1:
        raise RuntimeError(f"{len(t0)} step marks for {tokens} tokens")
    loop = t0[-(tokens + 1):]
    steps = [b - a for a, b in zip(loop, loop[1:])]  # step k produced token k + 1; step 0 is the prefill
    shares_prefill, shares_decode = [], []
    cores_prefill = cores_decode = 0.0  # CPU seconds of all ranks over wall seconds, per phase
    for r, (t, c, u) in marks.items():
        t, c, u = t[-(tokens + 1):], c[-(tokens + 1):], u[-(tokens + 1):]
        shares_prefill.append((c[1] - c[0]) / max(1e-9, t[1] - t[0]))
        cores_prefill += (u[1] - u[0]) / max(1e-9, t[1] - t[0])
        if tokens > 1:
            shares_decode.append((c[-1] - c[1]) / max(1e-9, t[-1] - t[1]))
            cores_decode += (u[-1] - u[1]) / max(1e-9, t[-1] - t[1])
    weights = [float(w) for w in re.findall(r"weights ([0-9.]+) MiB", stderr + stdout)]
    if not mpi:
        raise RuntimeError("no [mpi_time] line")
    walls = [x["wall_s"] for x in mpi]
    return {
        "tokens": tokens, "prefill_s": steps[0], "decode_steps": steps[1:],
        "comm_share_prefill": statistics.mean(shares_prefill),
        "comm_share_decode": statistics.mean(shares_decode) if shares_decode else float("nan"),
        "cores_used": sum(x["cpu_s"] for x in mpi) / max(walls),
        "cores_prefill": cores_prefill, "cores_decode": cores_decode,
        "peak_rss_mib": max(x["vmhwm_kib"] for x in mpi) / 1024,
        "weights_mib": max(weights) if weights else float("nan"),
    }


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))] if v else float("nan")


def run_one(args, lib, n, dp, tp, ep, rep, out_dir, family):
    tag = f"{family}_n{n}_dp{dp}_tp{tp}_ep{ep}_r{rep}"
    jobs = n if family == "dpx" else 1
    ranks = 1 if family == "dpx" else n
    runs = [parse_job(o, e, args.output_len) for o, e in
            launch(args, lib, ranks, 1 if family == "dpx" else dp, 1 if family == "dpx" else tp,
                   1 if family == "dpx" else ep, tag, out_dir, jobs)]
    return make_row(runs, args.prompt_len, tag, family, n, dp, tp, ep, rep)


def make_row(runs, prompt_len, tag, family, n, dp, tp, ep, rep):
    """One CSV row from the parsed jobs of one configuration (several for dpx: their sequences run at once).
    Shared by the local runs and the Slurm jobs (scripts/scaling/slurm_jobs.py), so both have the same fields."""
    decode_steps = [s for r in runs for s in r["decode_steps"]]
    # Throughput over all sequences in flight: each job runs one sequence; concurrent jobs add up.
    decode_tok_s = sum(len(r["decode_steps"]) / sum(r["decode_steps"]) for r in runs if r["decode_steps"])
    prefill_tok_s = sum(prompt_len / r["prefill_s"] for r in runs)
    return {
        "tag": tag, "family": family, "ranks": n, "dp": dp, "tp": tp, "ep": ep, "rep": rep, "sequences": len(runs),
        "prompt_len": prompt_len, "tokens_per_sequence": runs[0]["tokens"],
        "ttft_s": statistics.mean(r["prefill_s"] for r in runs),
        "prefill_tok_s": prefill_tok_s, "decode_tok_s": decode_tok_s,
        "itl_p50_ms": 1e3 * pct(decode_steps, 0.5), "itl_p90_ms": 1e3 * pct(decode_steps, 0.9),
        "itl_p99_ms": 1e3 * pct(decode_steps, 0.99),
        "comm_share_prefill": statistics.mean(r["comm_share_prefill"] for r in runs),
        "comm_share": statistics.mean(r["comm_share_decode"] for r in runs),
        # Cores the job really got (CPU seconds of all ranks over the longest rank life): on a machine shared with
        # other work this is below min(ranks x threads, cores), and the measured rates scale with it.
        "cores_used": sum(r["cores_used"] for r in runs),
        "cores_prefill": sum(r["cores_prefill"] for r in runs),
        "cores_decode": sum(r["cores_decode"] for r in runs),
        "peak_rss_mib_max": max(r["peak_rss_mib"] for r in runs),
        "weights_mib_max": max(r["weights_mib"] for r in runs),
    }


def simulate(args, n, dp, tp, ep, family, nodes=1, config=None):
    """The simulator's prediction for the same workload (decode at the mean context of the run), for the
    configurations it models exactly: every rank busy (one rank; one replica over all ranks; n independent
    replicas). With one sequence on DP replica 0 of an `ep`/`tpep` layout the other replicas idle, which the
    simulator (every replica holds batch / dp sequences) does not describe: no prediction there."""
    if family in ("ep", "tpep") or (family not in LAYOUTS and dp > 1):
        return {"pred_note": "idle replicas: not modelled"}
    if family == "dpx":
        layout, batch = f"{n},1,1,1", n
    else:
        layout, batch = f"{dp},{tp},{ep},1", 1
    cfg = config or os.path.join(args.checkpoint, "config.json")
    ctx = args.prompt_len + args.output_len // 2
    cmd = [args.dsv4_launch, "simulate", "--json", "--config", cfg, "--layout", layout, "--nodes", str(nodes),
           "--gpus-per-node", str(n // nodes), "--hardware", args.hardware, "--batch", str(batch), "--context", str(ctx),
           "--prompt", str(args.prompt_len), "--output", str(args.output_len)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        msg = (r.stdout + r.stderr).strip().splitlines()[-1]
        return {"pred_note": re.sub(r"^\[[^]]*\] (invalid argument: )?", "", re.sub(r" \[[a-z_]+\.cc:\d+\].*$", "", msg))}
    j = json.loads(r.stdout)
    return {"pred_decode_tok_s": j["decode_tokens_per_s_per_gpu"] * n,
            "pred_prefill_tok_s": j["prefill_tokens_per_s_per_gpu"] * n,
            "pred_decode_comm_share": j["decode"]["communication"] / j["decode"]["total"],
            "pred_decode_bottleneck": j["decode"]["bottleneck"]}


def aggregate(rows):
    """Median over repeats of each configuration."""
    groups = {}
    for r in rows:
        groups.setdefault((r["ranks"], r["family"]), []).append(r)
    out = []
    for key, rs in sorted(groups.items()):
        agg = dict(rs[0])
        for k, v in rs[0].items():
            if isinstance(v, float):
                vals = [x[k] for x in rs if isinstance(x.get(k), float) and x[k] == x[k]]
                agg[k] = statistics.median(vals) if vals else float("nan")
        agg["repeats"] = len(rs)
        out.append(agg)
    return out


def err(pred, meas):
    return pred / meas - 1.0 if pred == pred and meas and meas == meas else float("nan")


def bench_cores(profile):
    """The cores cpu_profile_bench got while measuring the linear kernel (written into the profile's notes)."""
    if not profile:
        return float("nan")
    m = re.search(r"got ([0-9.]+) cores", open(profile).read())
    return float(m.group(1)) if m else float("nan")


def summarize(args, agg, out_dir):
    cb = bench_cores(args.hardware)
    # Each family against its smallest world (the one-rank `single` run for the local families; the smallest GPU
    # count a Slurm template ran at for the cluster ones).
    def base_of(family):
        rs = [r for r in agg if r["family"] in (family, "single")]
        return min(rs, key=lambda r: r["ranks"])
    for r in agg:
        # The profile's rates are those of the share of the host the bench got (cb cores); a run that got c cores
        # in its decode steps would see them scaled by c / cb if compute scaled with cores (MPI waiting counts as
        # used cores here, so this over-credits communication-heavy runs).
        cd = r.get("cores_decode", float("nan"))
        r["pred_decode_adjusted"] = r.get("pred_decode_tok_s", float("nan")) * cd / cb
        r["pred_decode_adjusted_error"] = err(r["pred_decode_adjusted"], r["decode_tok_s"])
        # dpx adds sequences with ranks (weak scaling); the others split one sequence (strong scaling).
        base = base_of(r["family"])
        b, n0 = base["decode_tok_s"], base["ranks"]
        r["efficiency"] = ((r["decode_tok_s"] / r["ranks"]) / b if r["family"] == "dpx"
                           else r["decode_tok_s"] * n0 / (r["ranks"] * b))
        r["pred_decode_error"] = err(r.get("pred_decode_tok_s", float("nan")), r["decode_tok_s"])
        r["pred_prefill_error"] = err(r.get("pred_prefill_tok_s", float("nan")), r["prefill_tok_s"])
    lines = [f"# Scaling run: {os.path.basename(os.path.normpath(args.checkpoint))}, prompt {args.prompt_len} tokens, "
             f"output {args.output_len} tokens, ranks {args.ranks}, {args.repeat} repeat(s) (medians)",
             *([""] + args.summary_notes if getattr(args, "summary_notes", None) else []),
             "", f"Command: `{' '.join(sys.argv)}`; finished {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
             f"load average at the end {' '.join(open('/proc/loadavg').read().split()[:3])} on {os.cpu_count()} cores.", "",
             "Families: `single` one rank; `ep` dp=N, ep=N and `tpep` dp=N/2, tp=2, ep=N, one sequence on replica 0 "
             "(the other replicas step with no tokens); `tp` one replica over N ranks (tp=N, ep=N); `dpx` N "
             "independent one-rank jobs at once; any other family is a Slurm template (dsv4-launch slurm, one sequence "
             "on replica 0 of its layout at each GPU count). Efficiency: strong scaling (one sequence) "
             "tok/s(N) x N0 / (N x tok/s(N0)), N0 the family's smallest world (1 for the local families); weak "
             "scaling (`dpx`, N sequences) (tok/s(N) / N) / tok/s(1). TTFT is the prefill step (start-up and "
             "loading excluded); ITL the decode steps; comm share the MPI time of the decode steps over their wall "
             "time (mean over ranks); cores used the CPU seconds of all ranks over the run's wall time (cores in "
             "decode: over the decode steps only). The last column scales the prediction by the cores the decode "
             f"steps got over the {cb:.2f} cores the profile's bench got (a machine shared with other work).", "",
             "| ranks | family | dp,tp,ep | seqs | prefill tok/s | decode tok/s | tok/s per rank | TTFT s | "
             "ITL p50 / p90 / p99 ms | comm share decode (prefill) | cores used | peak RSS MiB/rank | weights MiB/rank | "
             "efficiency | predicted decode (error) | predicted prefill (error) | cores in decode | "
             f"predicted decode x cores / {cb:.2f} (error) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in agg:
        pd = r.get("pred_decode_tok_s", float("nan"))
        pp = r.get("pred_prefill_tok_s", float("nan"))
        pred_d = f"{pd:.2f} ({100 * r['pred_decode_error']:+.0f}%)" if pd == pd else r.get("pred_note", "")
        pred_p = f"{pp:.2f} ({100 * r['pred_prefill_error']:+.0f}%)" if pp == pp else ""
        lines.append(
            f"| {r['ranks']} | {r['family']} | {r['dp']},{r['tp']},{r['ep']} | {r['sequences']} | {r['prefill_tok_s']:.2f} | "
            f"{r['decode_tok_s']:.2f} | {r['decode_tok_s'] / r['ranks']:.2f} | {r['ttft_s']:.2f} | "
            f"{r['itl_p50_ms']:.0f} / {r['itl_p90_ms']:.0f} / {r['itl_p99_ms']:.0f} | {100 * r['comm_share']:.0f}% "
            f"({100 * r['comm_share_prefill']:.0f}%) | {r['cores_used']:.2f} | {r['peak_rss_mib_max']:.0f} | "
            f"{r['weights_mib_max']:.0f} | {100 * r['efficiency']:.0f}% | {pred_d} | {pred_p} | "
            f"{r.get('cores_decode', float('nan')):.2f} | {r['pred_decode_adjusted']:.2f} "
            f"({100 * r['pred_decode_adjusted_error']:+.0f}%) |")
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    log("\n".join(lines))


def plot(agg, out_dir, prefix):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    single = [r for r in agg if r["family"] == "single"]
    families = sorted({r["family"] for r in agg} - {"single"})
    for i, fam in enumerate(families):
        rs = sorted(single + [r for r in agg if r["family"] == fam], key=lambda r: r["ranks"])
        xs = [r["ranks"] for r in rs]
        color = f"C{i}"
        axes[0].plot(xs, [r["decode_tok_s"] for r in rs], "o-", color=color, label=f"{fam} measured")
        pred = [r.get("pred_decode_tok_s", float("nan")) for r in rs]
        if any(p == p for p in pred[1:]):
            axes[0].plot(xs, pred, "x--", color=color, label=f"{fam} predicted")
        axes[1].plot(xs, [r["prefill_tok_s"] for r in rs], "o-", color=color, label=f"{fam} measured")
        pred = [r.get("pred_prefill_tok_s", float("nan")) for r in rs]
        if any(p == p for p in pred[1:]):
            axes[1].plot(xs, pred, "x--", color=color, label=f"{fam} predicted")
        axes[2].plot(xs, [100 * r["comm_share"] for r in rs], "o-", color=color, label=fam)
    for ax, title, ylabel in zip(axes, ["decode tokens/s (all sequences)", "prefill tokens/s (all sequences)",
                                        "decode step time in MPI calls"], ["tokens/s", "tokens/s", "% (mean over ranks)"]):
        ax.set_title(title)
        ax.set_xlabel("ranks")
        ax.set_ylabel(ylabel)
        ax.set_xticks(sorted({r["ranks"] for r in agg}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, prefix + "cpu_scaling.png")
    fig.savefig(path, dpi=110)
    log(f"wrote {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--checkpoint", help="checkpoint folder (e.g. from dsv4 make-checkpoint)")
    p.add_argument("--out", help="output folder (CSV, PNG, summary.md, per-run logs; with --slurm: deployments, "
                                 "sbatch scripts, logs/, results/ and manifest.json)")
    p.add_argument("--ranks", default="1,2,4")
    p.add_argument("--layouts", default="ep,tp,tpep,dpx", help=f"families among {','.join(LAYOUTS)}")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--output-len", type=int, default=16)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--hardware", help="hardware profile of the predictions (default here: configs/hardware/"
                                      "cpu-2core.yaml; with --gather: none unless given)")
    p.add_argument("--plot-dir", help="folder of the PNG (default: --out)")
    p.add_argument("--plot-prefix", default="", help="prefix of the PNG name")
    p.add_argument("--from-runs", metavar="RUNS_CSV",
                   help="do not run: re-read a runs.csv of an earlier invocation, redo the predictions with the "
                        "current --hardware profile and rewrite the CSV, summary and plot into --out")
    c = p.add_argument_group("cluster (Slurm) mode: scripts/scaling/slurm_jobs.py, docs/SCALING.md")
    c.add_argument("--slurm", metavar="DEPLOYMENT", help="template deployment YAML: one job per --gpus count")
    c.add_argument("--gpus", default="8,16,32,64,128", help="GPU (rank) counts")
    c.add_argument("--submit", action="store_true", help="sbatch --parsable each script; job ids in manifest.json")
    c.add_argument("--launcher", choices=("srun", "mpirun"), default="srun", help="job step launcher")
    c.add_argument("--partition", help="Slurm partition")
    c.add_argument("--time", help="Slurm time limit, e.g. 01:00:00")
    c.add_argument("--gather", metavar="DIR", help="collect the results of the jobs of DIR/manifest.json into "
                                                  "CSV, PNG and summary.md (in DIR, or --out)")
    c.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                   help="with --gather: wait up to this long for jobs that have no result yet")
    c.add_argument("--job-result", metavar="JOB_JSON", help=argparse.SUPPRESS)  # the sbatch script's hook
    args = p.parse_args()
    args.dsv4 = os.path.join(args.build, "launcher", "dsv4")
    args.dsv4_launch = os.path.join(args.build, "launcher", "dsv4-launch")
    if args.slurm or args.gather or args.job_result:
        sys.dont_write_bytecode = True  # no __pycache__ in the source tree
        import slurm_jobs  # the cluster path (scripts/scaling/slurm_jobs.py)
        if args.job_result:
            return slurm_jobs.job_result(args.job_result)
        if args.gather:
            return slurm_jobs.gather(args)
        if not args.out:
            p.error("--out is required")
        return slurm_jobs.write_jobs(args)
    if not args.checkpoint or not args.out:
        p.error("--checkpoint and --out are required (except with --slurm / --gather)")
    args.hardware = args.hardware or os.path.join(ROOT, "configs", "hardware", "cpu-2core.yaml")
    os.makedirs(args.out, exist_ok=True)
    rows = []
    if args.from_runs:
        preds = {}
        first = next(csv.DictReader(open(args.from_runs)))
        args.prompt_len, args.output_len = int(first["prompt_len"]), int(first["tokens_per_sequence"])
        for r in csv.DictReader(open(args.from_runs)):
            row = {}
            for k, v in r.items():
                if k.startswith("pred_"):
                    continue
                try:
                    row[k] = int(v)
                except ValueError:
                    try:
                        row[k] = float(v)
                    except ValueError:
                        row[k] = v
            key = (row["ranks"], row["dp"], row["tp"], row["ep"], row["family"])
            if key not in preds:
                preds[key] = simulate(args, *key)
            row.update(preds[key])
            rows.append(row)
        args.ranks = ",".join(sorted({str(r["ranks"]) for r in rows}, key=int))
        args.repeat = max(r["rep"] for r in rows) + 1
    lib = None if args.from_runs else build_mpi_time(args.out)
    failures = []
    for n in ([] if args.from_runs else [int(x) for x in args.ranks.split(",")]):
        families = ["single"] if n == 1 else args.layouts.split(",")
        for fam in families:
            if fam != "single" and fam not in LAYOUTS:
                p.error(f"unknown layout family {fam}")
            lay = (1, 1, 1) if fam == "single" else LAYOUTS[fam](n)
            if lay is None:
                continue
            dp, tp, ep = lay
            # The simulator sees dpx as dp = n replicas with n sequences; the others as one sequence on replica 0
            # (batch = dp, since idle replicas step too; the per-sequence rate is what is compared).
            pred = simulate(args, n, dp, tp, ep, fam)
            for rep in range(args.repeat):
                try:
                    r = run_one(args, lib, n, dp, tp, ep, rep, args.out, fam)
                except RuntimeError as e:  # one failed configuration does not lose the others
                    log(f"   FAILED: {e}")
                    failures.append(str(e))
                    continue
                r.update(pred)
                rows.append(r)
                with open(os.path.join(args.out, "runs.partial.jsonl"), "a") as f:
                    f.write(json.dumps(r) + "\n")
                log(f"   prefill {r['prefill_tok_s']:.2f} tok/s, decode {r['decode_tok_s']:.2f} tok/s, TTFT "
                    f"{r['ttft_s']:.2f} s, comm {100 * r['comm_share']:.0f}%, cores {r['cores_used']:.2f}, peak RSS "
                    f"{r['peak_rss_mib_max']:.0f} MiB; predicted decode {pred.get('pred_decode_tok_s', float('nan')):.2f}")
    return write_outputs(args, rows, failures)


def write_outputs(args, rows, failures):
    """scaling.csv (medians), runs.csv (every run), summary.md and the PNG into args.out; exit status 1 when a
    configuration failed (listed last). The local runs and the gathered Slurm jobs both end here."""
    agg = aggregate(rows)
    summarize(args, agg, args.out)
    keys = sorted({k for r in agg for k in r})
    with open(os.path.join(args.out, "scaling.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(agg)
    with open(os.path.join(args.out, "runs.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
        w.writeheader()
        w.writerows(rows)
    if agg:
        plot(agg, args.out if not args.plot_dir else args.plot_dir, args.plot_prefix)
    log(f"wrote {args.out}/scaling.csv, runs.csv, summary.md")
    if failures:
        log(f"{len(failures)} run(s) failed:\n  " + "\n  ".join(failures))
        return 1
    return 0

if __name__ == "__main__":
    sys.exit(main())
