// The process launch of a deployment: the Open MPI `mpirun` command line (`dsv4-launch run`) and the Slurm
// batch script (`dsv4-launch slurm`). Both start one `dsv4-server --deployment CONFIG` per rank; the batch
// script can run a workload step instead, with an after-hook (the scaling runner's measurement jobs,
// scripts/scaling/slurm_jobs.py).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "runtime/config/deployment_config.h"

namespace dsv4::launch {

struct RunOptions {
  std::filesystem::path hostfile;  // Open MPI hostfile; required when the deployment spans several nodes
  std::string server_bin = "dsv4-server";
  std::vector<std::string> server_args;  // appended to the server's command line (they override the YAML)
  bool forward_library_path = true;       // -x LD_LIBRARY_PATH; off when it is unset (Open MPI warns then)
  /// Runtime variables set where dsv4-launch runs (DSV4_PIPELINE_MIN_TOKENS, DSV4_DETERMINISTIC, ...): -x NAME
  /// each, so that remote ranks see them too (the model refuses groups whose ranks disagree on some of them).
  std::vector<std::string> forward_env;
};

/// argv of the mpirun command. Ranks are placed `ranks_per_node` per node (ppr), consecutive ranks on the
/// same node so that TP groups (innermost in the rank order) stay on NVLink. GPU ranks are bound to their
/// NUMA domain; CPU ranks are not bound, and a one-node CPU deployment may oversubscribe the cores (the tiny
/// model is a functional check, not a benchmark). The log level is passed as DSV4_LOG_LEVEL; PATH and
/// LD_LIBRARY_PATH (when options.forward_library_path) are forwarded so remote ranks find the same binaries,
/// then options.forward_env.
/// Throws Error(kInvalidArgument) when a multi-node deployment has no hostfile.
std::vector<std::string> mpirun_command(const DeploymentConfig& deployment, const RunOptions& options);

struct SlurmOptions {
  std::string launcher = "srun";  // "srun" (srun --mpi=pmix) or "mpirun" (inside the allocation)
  std::filesystem::path log_dir = "logs";
  std::string partition;   // empty = the cluster's default
  std::string time_limit;  // e.g. "24:00:00"; empty = the partition's default
  std::string server_bin = "dsv4-server";
  // The job step: what every rank runs. Empty = `server_bin --deployment CONFIG` (a serving job). A workload
  // (e.g. `dsv4 generate --deployment CONFIG ...` for a measurement) replaces it, started by the same launcher.
  std::vector<std::string> step;
  // NAME=VALUE set for the step's processes only (through env(1) on every rank, so that neither srun/mpirun
  // nor the after-hook sees them: e.g. an LD_PRELOAD interposer).
  std::vector<std::string> step_env;
  // Exported to the step and the hook as DSV4_RESULTS_DIR and created by the script; empty = none.
  std::filesystem::path results_dir;
  // One shell command run after the step whatever its exit status (a results collector). With it, the step's
  // stdout/stderr go to LOG_DIR/<job name>-<job id>.step.out/.err (exported as DSV4_STEP_STDOUT/DSV4_STEP_STDERR,
  // the step's exit status as DSV4_STEP_STATUS), and the job exits with the step's status once the hook
  // succeeded (with the hook's status when it fails).
  std::string after;
};

/// The sbatch script: one task per rank, GPUs per node for GPU deployments, logs at
/// LOG_DIR/<job name>-<job id>.out, and a launch that kills the whole job when one rank fails.
/// Throws Error(kInvalidArgument) naming the option for a malformed --step-env entry or a multi-line --after.
std::string sbatch_script(const DeploymentConfig& deployment, const SlurmOptions& options);

/// Joins argv into one line a POSIX shell reads back as the same words (single-quoting where needed).
std::string shell_join(const std::vector<std::string>& argv);

/// Replaces this process with argv (execvp). Only returns by throwing Error(kIo).
[[noreturn]] void exec_command(const std::vector<std::string>& argv);

}  // namespace dsv4::launch
