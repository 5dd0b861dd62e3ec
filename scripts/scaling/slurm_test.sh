#!/usr/bin/env bash
# The cluster path of the scaling runner without a cluster (ctest scaling.slurm, label mpi): the fake sbatch,
# srun and sacct of scripts/scaling/testing/ first on PATH run each job script on this host with the variables
# an allocation sets. The tiny random model at 1 and 2 ranks (one template), plus a template whose checkpoint
# does not exist (its job must fail and be reported with its job id and log); submit -> jobs run -> gather ->
# CSV, summary and PNG with both rank counts; then a result removed must be reported missing.
# Usage: slurm_test.sh BUILD_DIR SCRATCH_DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "$1" && pwd)
scratch=$2
rm -rf "$scratch" && mkdir -p "$scratch"
export PATH="$root/scripts/scaling/testing:$PATH" FAKE_SLURM_STATE="$scratch/slurm-state"
# The jobs inherit the environment (sbatch --export=ALL); mpirun refuses root without these (harmless otherwise).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
"$build/launcher/dsv4" make-checkpoint --config "$root/configs/models/tiny.json" --seed 5 --out "$scratch/tiny" \
  >/dev/null
template() {  # NAME CHECKPOINT
  cat > "$scratch/$1.yaml" <<YAML
name: $1
model: {config: $root/configs/models/tiny.json, checkpoint: $2}
layout: {dp: 2, tp: 1, ep: 2, cp: 1}
nodes: 1
gpus_per_node: 0
ranks_per_node: 2
memory: {budget_per_rank: 1GiB}
scheduler: {max_running: 4, max_batch_tokens: 256, max_prompt_tokens: 1024}
YAML
}
template scal "$scratch/tiny"
template bad "$scratch/no-such-checkpoint"
run=(/usr/bin/python3 "$root/scripts/scaling/run_scaling.py" --build "$build")
jobs="$scratch/jobs"
"${run[@]}" --slurm "$scratch/scal.yaml" --gpus 1,2 --out "$jobs" --submit --prompt-len 8 --output-len 4
"${run[@]}" --slurm "$scratch/bad.yaml" --gpus 2 --out "$jobs" --submit --prompt-len 8 --output-len 4 --launcher mpirun
# Written, not submitted: the Pro template at 8, 32 and 512 GPUs (GPU nodes of 8).
"${run[@]}" --slurm "$root/configs/deployments/pro-16x8xh100.yaml" --gpus 8,32,512 --out "$scratch/pro" >/dev/null
set +e
"${run[@]}" --gather "$scratch/pro" > "$scratch/gather_pro.log" 2>&1
rc_pro=$?
"${run[@]}" --gather "$jobs" --wait 100 > "$scratch/gather.log" 2>&1
rc=$?
for _ in $(seq 100); do  # the hook writes the result just before the job script ends: let the jobs end
  [ "$(ls "$FAKE_SLURM_STATE"/*.exit 2>/dev/null | wc -l)" -eq 3 ] && break
  sleep 0.2
done
"${run[@]}" --gather "$jobs" --out "$scratch/again" > "$scratch/gather2.log" 2>&1
rc_again=$?
rm "$jobs/results/scal-g2.json"
"${run[@]}" --gather "$jobs" --out "$scratch/missing" > "$scratch/gather3.log" 2>&1
rc_missing=$?
set -e
cat "$scratch/gather.log"
/usr/bin/python3 - "$jobs" "$scratch" "$rc" "$rc_again" "$rc_missing" "$rc_pro" <<'PY'
import csv, json, os, re, sys
jobs, scratch, rc, rc_again, rc_missing, rc_pro = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
manifest = json.load(open(os.path.join(jobs, "manifest.json")))["jobs"]
ids = {(j["family"], j["gpus"]): j["job_id"] for j in manifest}
assert sorted(ids) == [("bad", 2), ("scal", 1), ("scal", 2)], ids
assert len(set(ids.values())) == 3 and all(i for i in ids.values()), ids
# The jobs' exit statuses as sacct sees them: the bad checkpoint's job failed, the others succeeded.
state = os.path.join(scratch, "slurm-state")
exits = {k: int(open(os.path.join(state, f"{i}.exit")).read()) for k, i in ids.items()}
assert exits[("scal", 1)] == 0 and exits[("scal", 2)] == 0 and exits[("bad", 2)] != 0, exits
# Gather: exit 1 (one job failed), the failure named by GPU count with its job id and log path.
assert rc == 1 and rc_again == 1, (rc, rc_again)
text = open(os.path.join(scratch, "gather.log")).read()
bad = ids[("bad", 2)]
log_path = os.path.join(jobs, "logs", f"dsv4-bad-g2-{bad}.out")
m = re.search(rf"NOT GATHERED: bad at 2 GPUs: job {bad}: failed: job step exited with status [1-9]\d*: .*; log "
              + re.escape(log_path), text)
assert m, text
assert "mpirun -np 2 " in open(os.path.join(jobs, "bad-g2.sbatch")).read()  # the mpirun launcher
assert "srun --mpi=pmix " in open(os.path.join(jobs, "scal-g2.sbatch")).read()
step_err = open(os.path.join(jobs, "logs", f"dsv4-bad-g2-{bad}.step.err")).read()
assert os.path.getsize(log_path) > 0 and "no-such-checkpoint: not a checkpoint directory" in step_err, step_err
rows = list(csv.DictReader(open(os.path.join(jobs, "scaling.csv"))))
got = sorted((int(r["ranks"]), r["family"]) for r in rows)
assert got == [(1, "scal"), (2, "scal")], got
for r in rows:
    assert float(r["decode_tok_s"]) > 0 and float(r["prefill_tok_s"]) > 0 and float(r["ttft_s"]) > 0, r
    assert int(r["tokens_per_sequence"]) == 4 and int(r["prompt_len"]) == 8, r
    assert 0 <= float(r["comm_share"]) <= 1 and float(r["peak_rss_mib_max"]) > 0, r
    assert float(r["itl_p50_ms"]) > 0 and r["job_id"] == ids[("scal", int(r["ranks"]))], r
two = next(r for r in rows if r["ranks"] == "2")
assert (two["dp"], two["tp"], two["ep"]) == ("2", "1", "2") and float(two["comm_share"]) > 0, two
assert abs(float(next(r for r in rows if r["ranks"] == "1")["efficiency"]) - 1) < 1e-9, rows
summary = open(os.path.join(jobs, "summary.md")).read()
assert "| 1 | scal |" in summary and "| 2 | scal |" in summary and f"job {bad}: failed" in summary, summary
for name in ("cpu_scaling.png", "runs.csv"):
    assert os.path.getsize(os.path.join(jobs, name)) > 0, name
assert os.path.getsize(os.path.join(scratch, "again", "scaling.csv")) > 0
# A job whose result is gone is reported missing (with sacct's state), never dropped.
text = open(os.path.join(scratch, "gather3.log")).read()
g2 = ids[("scal", 2)]
g2_log = re.escape(os.path.join(jobs, "logs", f"dsv4-scal-g2-{g2}.out"))
assert rc_missing == 1 and re.search(rf"scal at 2 GPUs: job {g2}: missing: no result file yet \(Slurm: COMPLETED exit "
                                     rf"0:0\); log {g2_log}", text), text
rows = list(csv.DictReader(open(os.path.join(scratch, "missing", "scaling.csv"))))
assert [int(r["ranks"]) for r in rows] == [1], rows
# The Pro scripts: nodes of 8 GPUs, the template's tp = 8, ep the largest divisor of the GPUs dividing 384 experts.
pro = os.path.join(scratch, "pro")
for g, nodes, ep in ((8, 1, 8), (32, 4, 32), (512, 64, 128)):
    script = open(os.path.join(pro, f"pro-16x8xh100-g{g}.sbatch")).read()
    assert f"#SBATCH --nodes={nodes}\n" in script and "#SBATCH --gpus-per-node=8\n" in script, script
    assert f"srun --mpi=pmix --kill-on-bad-exit=1 --ntasks={g} --ntasks-per-node=8 " in script, script
    assert " generate --deployment " in script and "--max-tokens 4 " not in script, script
    dep = open(os.path.join(pro, f"pro-16x8xh100-g{g}.yaml")).read()
    assert f"dp: {g // 8}\n  tp: 8\n  ep: {ep}\n" in dep, dep
text = open(os.path.join(scratch, "gather_pro.log")).read()
assert rc_pro == 1 and "pro-16x8xh100 at 512 GPUs: job None: missing: never submitted" in text, text
print("scaling slurm: OK", sorted(ids.items()))
PY
