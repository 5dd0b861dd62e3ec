// The process launch of a deployment: the Open MPI `mpirun` command line (`dsv4-launch run`) and the Slurm
// batch script (`dsv4-launch slurm`). Both start one `dsv4-server --deployment CONFIG` per rank.
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
};

/// argv of the mpirun command. Ranks are placed `ranks_per_node` per node (ppr), consecutive ranks on the
/// same node so that TP groups (innermost in the rank order) stay on NVLink. GPU ranks are bound to their
/// NUMA domain; CPU ranks are not bound, and a one-node CPU deployment may oversubscribe the cores (the tiny
/// model is a functional check, not a benchmark). The log level is passed as DSV4_LOG_LEVEL; PATH and
/// LD_LIBRARY_PATH are forwarded so remote ranks find the same binaries.
/// Throws Error(kInvalidArgument) when a multi-node deployment has no hostfile.
std::vector<std::string> mpirun_command(const DeploymentConfig& deployment, const RunOptions& options);

struct SlurmOptions {
  std::string launcher = "srun";  // "srun" (srun --mpi=pmix) or "mpirun" (inside the allocation)
  std::filesystem::path log_dir = "logs";
  std::string partition;   // empty = the cluster's default
  std::string time_limit;  // e.g. "24:00:00"; empty = the partition's default
  std::string server_bin = "dsv4-server";
};

/// The sbatch script: one task per rank, GPUs per node for GPU deployments, logs at
/// LOG_DIR/<job name>-<job id>.out, and a launch that kills the whole job when one rank fails.
std::string sbatch_script(const DeploymentConfig& deployment, const SlurmOptions& options);

/// Joins argv into one line a POSIX shell reads back as the same words (single-quoting where needed).
std::string shell_join(const std::vector<std::string>& argv);

/// Replaces this process with argv (execvp). Only returns by throwing Error(kIo).
[[noreturn]] void exec_command(const std::vector<std::string>& argv);

}  // namespace dsv4::launch
