#!/usr/bin/env bash
# Runs a multi-rank test or program by hand, the way ctest does for tests/mp/:
#   scripts/run_mpi_test.sh <np> <executable> [args...]
#   e.g. scripts/run_mpi_test.sh 4 build/tests/mp/comm_mpi --gtest_filter='*Split*'
# Oversubscribes (4 ranks on a 2-core machine are fine) and allows running as root (containers).
# Extra mpirun flags go in MPIRUN_FLAGS, e.g. MPIRUN_FLAGS='--tag-output'.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 <np> <executable> [args...]" >&2
  exit 2
fi
np=$1
shift
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# shellcheck disable=SC2086
exec mpirun --oversubscribe -np "$np" ${MPIRUN_FLAGS:-} "$@"
