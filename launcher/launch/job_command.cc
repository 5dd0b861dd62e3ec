#include "launcher/launch/job_command.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "runtime/core/error.h"

namespace dsv4::launch {
namespace {

std::string level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kTrace: return "trace";
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
    case LogLevel::kOff: return "off";
  }
  return "info";
}

std::string deployment_path(const DeploymentConfig& d) {
  DSV4_CHECK_ARG(!d.source.empty()) << "the deployment was not loaded from a file; the server needs its path";
  return d.source.string();
}

}  // namespace

std::string shell_join(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& a : argv) {
    if (!out.empty()) out += ' ';
    const bool plain = !a.empty() && a.find_first_not_of(
                                         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789_-./:=,+%@^") == std::string::npos;
    if (plain) {
      out += a;
      continue;
    }
    out += '\'';
    for (char c : a) {
      if (c == '\'') {
        out += "'\\''";
      } else {
        out += c;
      }
    }
    out += '\'';
  }
  return out;
}

std::vector<std::string> mpirun_command(const DeploymentConfig& d, const RunOptions& o) {
  std::vector<std::string> argv = {"mpirun", "-np", std::to_string(d.world_size())};
  if (!o.hostfile.empty()) {
    DSV4_CHECK_ARG(::access(o.hostfile.c_str(), R_OK) == 0)
        << "--hostfile " << o.hostfile.string() << ": cannot read it";
    argv.insert(argv.end(), {"--hostfile", o.hostfile.string()});
  } else {
    DSV4_CHECK_ARG(d.nodes == 1) << "deployment spans " << d.nodes
                                 << " nodes: give --hostfile, or use `dsv4-launch slurm` on a Slurm cluster";
  }
  argv.insert(argv.end(), {"--map-by", "ppr:" + std::to_string(d.ranks_per_node) + ":node"});
  if (d.uses_gpus()) {
    argv.insert(argv.end(), {"--bind-to", "numa"});
  } else {
    argv.insert(argv.end(), {"--bind-to", "none"});
    if (d.nodes == 1) argv.push_back("--oversubscribe");
  }
  argv.insert(argv.end(), {"-x", "DSV4_LOG_LEVEL=" + level_name(d.log_level), "-x", "PATH", "-x", "LD_LIBRARY_PATH"});
  argv.insert(argv.end(), {o.server_bin, "--deployment", deployment_path(d)});
  argv.insert(argv.end(), o.server_args.begin(), o.server_args.end());
  return argv;
}

std::string sbatch_script(const DeploymentConfig& d, const SlurmOptions& o) {
  DSV4_CHECK_ARG(o.launcher == "srun" || o.launcher == "mpirun")
      << "--launcher must be srun or mpirun, got '" << o.launcher << "'";
  const std::string job = "dsv4-" + d.name;
  const std::string logs = o.log_dir.string();
  std::ostringstream s;
  s << "#!/bin/bash\n";
  s << "# Written by dsv4-launch slurm from " << deployment_path(d) << "\n";
  s << "#SBATCH --job-name=" << job << "\n";
  s << "#SBATCH --nodes=" << d.nodes << "\n";
  s << "#SBATCH --ntasks-per-node=" << d.ranks_per_node << "\n";
  if (d.uses_gpus()) s << "#SBATCH --gpus-per-node=" << d.gpus_per_node << "\n";
  s << "#SBATCH --exclusive\n";
  if (!o.partition.empty()) s << "#SBATCH --partition=" << o.partition << "\n";
  if (!o.time_limit.empty()) s << "#SBATCH --time=" << o.time_limit << "\n";
  s << "#SBATCH --output=" << logs << "/%x-%j.out\n";
  s << "#SBATCH --error=" << logs << "/%x-%j.err\n";
  s << "set -euo pipefail\n";
  s << "export DSV4_LOG_LEVEL=" << level_name(d.log_level) << "\n";
  s << "echo \"dsv4: job $SLURM_JOB_ID on $SLURM_JOB_NUM_NODES nodes: $SLURM_JOB_NODELIST\"\n";
  const std::vector<std::string> server = {o.server_bin, "--deployment", deployment_path(d)};
  if (o.launcher == "srun") {
    // --kill-on-bad-exit: one failed rank ends the step (and the job) instead of leaving the rest hanging.
    std::vector<std::string> argv = {"srun", "--mpi=pmix", "--kill-on-bad-exit=1",
                                     "--ntasks=" + std::to_string(d.world_size()),
                                     "--ntasks-per-node=" + std::to_string(d.ranks_per_node)};
    argv.push_back(d.uses_gpus() ? "--cpu-bind=socket" : "--cpu-bind=none");
    argv.insert(argv.end(), server.begin(), server.end());
    s << shell_join(argv) << "\n";
  } else {
    // Open MPI reads the node list from the allocation, so no hostfile is needed here.
    std::vector<std::string> argv = {"mpirun",
                                     "-np",
                                     std::to_string(d.world_size()),
                                     "--map-by",
                                     "ppr:" + std::to_string(d.ranks_per_node) + ":node",
                                     "--bind-to",
                                     d.uses_gpus() ? "numa" : "none",
                                     "-x",
                                     "DSV4_LOG_LEVEL",
                                     "-x",
                                     "PATH",
                                     "-x",
                                     "LD_LIBRARY_PATH"};
    argv.insert(argv.end(), server.begin(), server.end());
    s << shell_join(argv) << "\n";
  }
  return s.str();
}

void exec_command(const std::vector<std::string>& argv) {
  DSV4_CHECK(!argv.empty()) << "empty command";
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  ::execvp(args[0], args.data());
  DSV4_THROW(kIo) << "cannot run " << argv[0] << ": " << std::strerror(errno);
}

}  // namespace dsv4::launch
