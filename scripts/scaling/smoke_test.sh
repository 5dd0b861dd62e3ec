#!/usr/bin/env bash
# Smoke test of the scaling runner (ctest scaling.smoke, label mpi): the tiny random model at 1 and 2 ranks
# (an EP layout and two independent replicas), 8 prompt tokens, 4 output tokens. Checks that every
# configuration ran, produced positive rates, step marks and a prediction row, and that the CSV, the summary
# and the PNG were written. Usage: smoke_test.sh BUILD_DIR SCRATCH_DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$1
scratch=$2
rm -rf "$scratch" && mkdir -p "$scratch"
"$build/launcher/dsv4" make-checkpoint --config "$root/configs/models/tiny.json" --seed 5 --out "$scratch/tiny" >/dev/null
/usr/bin/python3 "$root/scripts/scaling/run_scaling.py" --build "$build" --checkpoint "$scratch/tiny" \
  --out "$scratch/out" --ranks 1,2 --layouts ep,dpx --prompt-len 8 --output-len 4 --timeout 120
/usr/bin/python3 - "$scratch/out" <<'PY'
import csv, os, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(out, "scaling.csv"))))
got = sorted((int(r["ranks"]), r["family"]) for r in rows)
assert got == [(1, "single"), (2, "dpx"), (2, "ep")], got
for r in rows:
    assert float(r["decode_tok_s"]) > 0 and float(r["prefill_tok_s"]) > 0, r
    assert int(r["tokens_per_sequence"]) == 4, r
    assert 0 <= float(r["comm_share"]) <= 1, r
    assert float(r["peak_rss_mib_max"]) > 0, r
ep = next(r for r in rows if r["family"] == "ep")
assert float(ep["comm_share"]) > 0, "an EP layout must spend time in MPI"
for name in ("summary.md", "cpu_scaling.png", "runs.csv"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
print("scaling smoke: OK", got)
PY
