#!/usr/bin/env bash
# Measures this machine's CPU hardware profile for the simulator and writes it into a profile YAML:
#   scripts/scaling/measure_cpu_profile.sh [BUILD_DIR] [PROFILE]    (defaults: build, configs/hardware/cpu-2core.yaml)
# Runs bench/cpu_profile_bench twice: one rank (memory bandwidth, the linear kernel's rates per weight format,
# all cores) and two ranks under mpirun (MPI latency, all_reduce and MoE dispatch/combine bandwidth). Each
# measured line of the profile is replaced and says "measured <date> by <command>". Run it on a quiet machine:
# the rates are medians, but a machine shared with builds gives the share of it that the bench got.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
profile=${2:-$root/configs/hardware/cpu-2core.yaml}
bench=$build/bench/cpu_profile_bench
[ -x "$bench" ] || { echo "no $bench: build it first (ninja -C $build cpu_profile_bench)" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
# The linear-kernel fit refuses timings where noise hid the per-token cost; try again a few times.
for attempt in 1 2 3; do
  if "$bench" --yaml "$profile" --reps "${REPS:-7}"; then break; fi
  [ "$attempt" = 3 ] && { echo "the machine stayed too noisy for the linear-kernel fit" >&2; exit 1; }
done
mpirun --oversubscribe -np 2 "$bench" --yaml "$profile" --reps "${REPS:-7}"
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
