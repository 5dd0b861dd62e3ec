"""The cluster path of the scaling runner (run_scaling.py --slurm / --gather): one Slurm job per GPU count,
each running the local runner's workload inside its allocation, and the gathering of their results into the
same CSV, PNG and summary as a local run.

  write_jobs  (--slurm TEMPLATE --gpus 8,16,... --out DIR [--submit])
      For each GPU count: a deployment (the template's TP, dp = GPUs / tp, EP the largest divisor of the GPU
      count that divides the routed experts), and its sbatch script through `dsv4-launch slurm`, whose job step
      is the local runner's workload: `dsv4 generate --deployment D --checkpoint C` with the same fixed prompt
      (prompt_ids), greedy decoding and output length, one sequence on replica 0, started by srun (or mpirun)
      per the deployment, with the PMPI step-mark interposer (mpi_time.c) preloaded on every rank. The
      script's --after hook is `run_scaling.py --job-result DIR/jobs/NAME.json`. --submit runs
      `sbatch --parsable` on each script and records the job ids in DIR/manifest.json.
  job_result  (the hook, inside the allocation)
      Parses the step's output with the local runner's parse_job/make_row and writes DIR/results/NAME.json:
      {"status": "ok", "row": {...the local CSV's fields...}} or {"status": "failed", "error": ...}.
  gather      (--gather DIR [--wait S])
      Reads the manifest and every job's result; a job without a usable result is reported by GPU count with
      its job id and log paths (never dropped); the others go through run_scaling.write_outputs.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import run_scaling as rs

MANIFEST = "manifest.json"


def log(msg):
    print(msg, flush=True)


def deployment_for(base, base_dir, gpus):
    """The template deployment resized to `gpus` ranks (GPU or CPU ranks alike)."""
    dep = json.loads(json.dumps(base))
    per_node_cap = int(base.get("gpus_per_node") or base.get("ranks_per_node") or 0)
    if per_node_cap < 1:
        raise SystemExit(f"{base.get('name')}: the template needs gpus_per_node or ranks_per_node")
    per_node = min(gpus, per_node_cap)
    if gpus % per_node:
        raise SystemExit(f"--gpus {gpus}: not a multiple of the template's {per_node_cap} ranks per node")
    dep["name"] = f"{base['name']}-g{gpus}"
    dep["nodes"] = gpus // per_node
    if int(base.get("gpus_per_node") or 0) > 0:
        dep["gpus_per_node"] = per_node
    if "ranks_per_node" in base or not base.get("gpus_per_node"):
        dep["ranks_per_node"] = per_node
    for key in ("config", "checkpoint"):  # keep the template's relative paths valid from the new folder
        p = dep["model"][key]
        if not os.path.isabs(p):
            dep["model"][key] = os.path.normpath(os.path.join(base_dir, p))
    tp = int(base["layout"].get("tp", 1))
    if gpus % tp:
        raise SystemExit(f"--gpus {gpus}: not a multiple of the template's tp = {tp}")
    # EP over the largest divisor of the GPU count that divides the routed experts (as the simulator's sweep).
    with open(dep["model"]["config"]) as f:
        experts = json.load(f)["n_routed_experts"]
    ep = max(e for e in range(1, gpus + 1) if gpus % e == 0 and experts % e == 0)
    dep["layout"] = {"dp": gpus // tp, "tp": tp, "ep": ep, "cp": 1}
    return dep


def load_manifest(out):
    path = os.path.join(out, MANIFEST)
    if not os.path.exists(path):
        return {"jobs": []}
    with open(path) as f:
        return json.load(f)


def save_manifest(out, manifest):
    tmp = os.path.join(out, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(tmp, os.path.join(out, MANIFEST))


def write_jobs(args):
    import yaml
    with open(args.slurm) as f:
        base = yaml.safe_load(f)
    base_dir = os.path.dirname(os.path.abspath(args.slurm))
    out = os.path.abspath(args.out)
    for sub in ("logs", "results", "jobs"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    lib = rs.build_mpi_time(out)
    manifest = load_manifest(out)
    jobs = {j["name"]: j for j in manifest["jobs"]}
    for g in [int(x) for x in args.gpus.split(",")]:
        dep = deployment_for(base, base_dir, g)
        name = dep["name"]
        dep_path = os.path.join(out, name + ".yaml")
        with open(dep_path, "w") as f:
            yaml.safe_dump(dep, f, sort_keys=False)
        checkpoint = os.path.abspath(args.checkpoint) if args.checkpoint else dep["model"]["checkpoint"]
        info = {"name": name, "family": base["name"], "template": os.path.abspath(args.slurm), "gpus": g,
                "nodes": dep["nodes"], "dp": dep["layout"]["dp"], "tp": dep["layout"]["tp"],
                "ep": dep["layout"]["ep"], "prompt_len": args.prompt_len, "output_len": args.output_len,
                "checkpoint": checkpoint, "model_config": dep["model"]["config"], "deployment": dep_path,
                "script": os.path.join(out, name + ".sbatch"), "log_dir": os.path.join(out, "logs"),
                "result": os.path.join(out, "results", name + ".json"), "job_id": None}
        if not args.submit and name in jobs:  # rewriting the scripts keeps the ids of jobs already submitted
            info["job_id"], info["submitted"] = jobs[name].get("job_id"), jobs[name].get("submitted")
        info_path = os.path.join(out, "jobs", name + ".json")
        with open(info_path, "w") as f:
            json.dump(info, f, indent=2)
        # The local runner's workload (run_scaling.launch), with the layout taken from the deployment.
        step = [os.path.abspath(args.dsv4), "generate", "--deployment", dep_path, "--checkpoint", checkpoint,
                "--max-tokens", str(args.output_len), "--temperature", "0",
                "--prompt-tokens", ",".join(map(str, rs.prompt_ids(args.prompt_len, 0)))]
        hook = shlex.join([sys.executable, os.path.join(rs.ROOT, "scripts", "scaling", "run_scaling.py"),
                           "--job-result", info_path])
        cmd = [args.dsv4_launch, "slurm", dep_path, "--out", info["script"], "--log-dir", info["log_dir"],
               "--results-dir", os.path.join(out, "results"), "--launcher", args.launcher,
               "--step-env", "LD_PRELOAD=" + lib, "--step-env", "MPI_TIME_MARK_BYTES=8", "--after", hook]
        for flag, value in (("--partition", args.partition), ("--time", args.time)):
            if value:
                cmd += [flag, value]
        log(shlex.join(cmd + ["--", "dsv4", "generate", "..."]))
        subprocess.run(cmd + ["--"] + step, check=True)
        if args.submit:
            if os.path.exists(info["result"]):
                os.remove(info["result"])  # a result of an earlier submission must not pass for this one's
            r = subprocess.run(["sbatch", "--parsable", info["script"]], capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"sbatch {info['script']} failed ({r.returncode}): {r.stderr.strip()}")
            info["job_id"] = r.stdout.strip().split(";")[0]  # --parsable: "ID" or "ID;CLUSTER"
            info["submitted"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
            log(f"   submitted {name}: job {info['job_id']}")
        jobs[name] = info
        with open(info_path, "w") as f:
            json.dump(info, f, indent=2)
    manifest["jobs"] = sorted(jobs.values(), key=lambda j: (j["family"], j["gpus"]))
    save_manifest(out, manifest)
    log(f"wrote {os.path.join(out, MANIFEST)} ({len(manifest['jobs'])} job(s)); "
        + (f"gather with: run_scaling.py --gather {out} --wait SECONDS" if args.submit else
           "submit with --submit (or sbatch each script yourself and put its id into the manifest)"))
    return 0


def first_errors(stderr):
    """The ranks' error lines (`[... rank R E] ...`, `[rank R] fatal: ...`), each message once, else the last lines
    that are not mpirun's banner: what a failed job is reported with."""
    lines = [l.strip() for l in stderr.splitlines() if l.strip() and not l.startswith("[mpi_time")]
    seen, errors = set(), []
    for l in lines:
        m = re.match(r"\[[^]]*rank \d+(?: E\]|\] fatal:)\s*(.*)", l)
        if m and m.group(1) not in seen:
            seen.add(m.group(1))
            errors.append(m.group(1))
    if errors:
        return " | ".join(errors[:2])
    return " | ".join([l for l in lines if not l.startswith("---")][-3:]) or "no error output"


def job_result(info_path):
    """The sbatch hook: the step's output -> DIR/results/NAME.json. Exit 1 when the step succeeded but its
    output is unusable (the job then fails too); 0 when the result was written (failed steps included: the job
    still exits with the step's status)."""
    with open(info_path) as f:
        info = json.load(f)
    status = int(os.environ.get("DSV4_STEP_STATUS", "-1"))
    stdout_path = os.environ.get("DSV4_STEP_STDOUT", "")
    stderr_path = os.environ.get("DSV4_STEP_STDERR", "")
    results_dir = os.environ.get("DSV4_RESULTS_DIR") or os.path.dirname(info["result"])
    result = {"name": info["name"], "gpus": info["gpus"], "job_id": os.environ.get("SLURM_JOB_ID"),
              "nodelist": os.environ.get("SLURM_JOB_NODELIST"), "step_status": status,
              "step_stdout": stdout_path, "step_stderr": stderr_path}
    try:
        with open(stdout_path, errors="replace") as f:
            stdout = f.read()
        with open(stderr_path, errors="replace") as f:
            stderr = f.read()
    except OSError as e:
        stdout = stderr = ""
        result.update(status="failed", error=f"cannot read the step's output: {e}")
    if "status" not in result:
        if status != 0:
            result.update(status="failed", error=f"job step exited with status {status}: {first_errors(stderr)}")
        else:
            try:
                run = rs.parse_job(stdout, stderr, info["output_len"])
                row = rs.make_row([run], info["prompt_len"], info["name"], info["family"], info["gpus"], info["dp"],
                                  info["tp"], info["ep"], 0)
                row.update(job_id=result["job_id"], nodes=info["nodes"])
                result.update(status="ok", row=row)
            except (RuntimeError, ValueError, ZeroDivisionError) as e:
                result.update(status="failed", error=f"step output not usable: {e}")
    path = os.path.join(results_dir, info["name"] + ".json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(path + ".tmp", path)
    log(f"dsv4: result of {info['name']} ({result['status']}) in {path}")
    return 0 if result["status"] == "ok" or status != 0 else 1


def slurm_state(job_id):
    """The job's state from sacct (or 'gone' when squeue no longer lists it); None when neither is available
    or the job is unknown to them. Terminal states mean no result will come any more."""
    if shutil.which("sacct"):
        r = subprocess.run(["sacct", "-j", str(job_id), "-X", "-n", "-P", "-o", "State,ExitCode"],
                           capture_output=True, text=True)
        line = r.stdout.strip().splitlines()[:1]
        if r.returncode == 0 and line:
            return line[0].replace("|", " exit ")
    if shutil.which("squeue"):
        r = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.strip() or "gone"
    return None


def terminal(state):
    return state is not None and not any(s in state for s in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING",
                                                               "SUSPENDED", "REQUEUED"))


def read_result(job):
    """(result dict, None) or (None, why there is none yet)."""
    if not job.get("job_id"):
        return None, "never submitted (no job id in the manifest)"
    try:
        with open(job["result"]) as f:
            res = json.load(f)
    except FileNotFoundError:
        return None, "no result file yet"
    except (OSError, ValueError) as e:
        return None, f"unreadable result: {e}"
    if str(res.get("job_id")) != str(job["job_id"]):
        return None, f"the result is from job {res.get('job_id')}, not from the submitted job"
    return res, None


def gather(args):
    out_dir = os.path.abspath(args.gather)
    manifest = load_manifest(out_dir)
    jobs = manifest["jobs"]
    if not jobs:
        raise SystemExit(f"{os.path.join(out_dir, MANIFEST)}: no jobs (write them with --slurm ... --out {out_dir})")
    deadline = time.monotonic() + args.wait
    while True:
        pending = []
        for j in jobs:
            res, why = read_result(j)
            if res is None and j.get("job_id") and not terminal(slurm_state(j["job_id"])):
                pending.append(j)
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
    rows, failures = [], []
    for j in jobs:
        logs = os.path.join(j["log_dir"], f"dsv4-{j['name']}-{j.get('job_id')}")
        where = f"log {logs}.out ({logs}.err)"
        res, why = read_result(j)
        if res is None:
            state = slurm_state(j["job_id"]) if j.get("job_id") else None
            failures.append(f"{j['family']} at {j['gpus']} GPUs: job {j.get('job_id')}: missing: {why}"
                            f"{f' (Slurm: {state})' if state else ''}; {where}")
        elif res["status"] != "ok":
            failures.append(f"{j['family']} at {j['gpus']} GPUs: job {j['job_id']}: failed: {res.get('error')}; "
                            f"{where}; step output {res.get('step_stderr')}")
        else:
            rows.append(res["row"])
    for f in failures:
        log("NOT GATHERED: " + f)
    # The tables and the plot as a local run writes them (run_scaling.write_outputs), from the rows gathered.
    first = next((j for j in jobs if any(r["tag"] == j["name"] for r in rows)), jobs[0])
    args.out = os.path.abspath(args.out) if args.out else out_dir
    os.makedirs(args.out, exist_ok=True)
    args.checkpoint = first["checkpoint"]
    args.prompt_len, args.output_len = first["prompt_len"], first["output_len"]
    args.ranks = ",".join(str(g) for g in sorted({j["gpus"] for j in jobs}))
    args.repeat = 1
    for r in rows:
        job = next(j for j in jobs if j["name"] == r["tag"])
        if args.hardware:
            r.update(rs.simulate(args, r["ranks"], r["dp"], r["tp"], r["ep"], r["family"], nodes=job["nodes"],
                                 config=job["model_config"]))
        else:
            r["pred_note"] = "no --hardware profile given"
    args.summary_notes = [
        f"Gathered from the Slurm jobs of `{os.path.join(out_dir, MANIFEST)}`: "
        f"{len(rows)} of {len(jobs)} job(s) with a result"
        + (f"; not gathered: {'; '.join(failures)}" if failures else "") + "."]
    return rs.write_outputs(args, rows, failures)
