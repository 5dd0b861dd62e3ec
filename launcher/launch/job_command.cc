#include "launcher/launch/job_command.h"

#include <unistd.h>

#include <cctype>
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
  argv.insert(argv.end(), {"-x", "DSV4_LOG_LEVEL=" + level_name(d.log_level), "-x", "PATH"});
  if (o.forward_library_path) argv.insert(argv.end(), {"-x", "LD_LIBRARY_PATH"});
  for (const std::string& name : o.forward_env) argv.insert(argv.end(), {"-x", name});
  argv.insert(argv.end(), {o.server_bin, "--deployment", deployment_path(d)});
  argv.insert(argv.end(), o.server_args.begin(), o.server_args.end());
  return argv;
}

std::string sbatch_script(const DeploymentConfig& d, const SlurmOptions& o) {
  DSV4_CHECK_ARG(o.launcher == "srun" || o.launcher == "mpirun")
      << "--launcher must be srun or mpirun, got '" << o.launcher << "'";
  for (const std::string& e : o.step_env) {
    const size_t eq = e.find('=');
    const std::string name = e.substr(0, eq);
    DSV4_CHECK_ARG(eq != std::string::npos && !name.empty() && std::isdigit(static_cast<unsigned char>(name[0])) == 0 &&
                   name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") ==
                       std::string::npos)
        << "--step-env '" << e << "': expected NAME=VALUE with NAME of letters, digits and _";
  }
  DSV4_CHECK_ARG(o.after.find_first_of("\n\r") == std::string::npos) << "--after must be one line of shell";
  DSV4_CHECK_ARG(o.step.empty() || !o.step.front().empty()) << "the job step's program is empty";
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
  if (!o.results_dir.empty()) {
    s << "export DSV4_RESULTS_DIR=" << shell_join({o.results_dir.string()}) << "\n";
    s << "mkdir -p \"$DSV4_RESULTS_DIR\"\n";
  }
  std::vector<std::string> program = o.step;
  if (program.empty()) program = {o.server_bin, "--deployment", deployment_path(d)};
  if (!o.step_env.empty()) {
    std::vector<std::string> with_env = {"env"};
    with_env.insert(with_env.end(), o.step_env.begin(), o.step_env.end());
    program.insert(program.begin(), with_env.begin(), with_env.end());
  }
  std::vector<std::string> argv;
  if (o.launcher == "srun") {
    // --kill-on-bad-exit: one failed rank ends the step (and the job) instead of leaving the rest hanging.
    argv = {"srun", "--mpi=pmix", "--kill-on-bad-exit=1", "--ntasks=" + std::to_string(d.world_size()),
            "--ntasks-per-node=" + std::to_string(d.ranks_per_node)};
    argv.push_back(d.uses_gpus() ? "--cpu-bind=socket" : "--cpu-bind=none");
  } else {
    // Open MPI reads the node list from the allocation, so no hostfile is needed here.
    argv = {"mpirun",
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
    if (!o.results_dir.empty()) argv.insert(argv.end(), {"-x", "DSV4_RESULTS_DIR"});
  }
  argv.insert(argv.end(), program.begin(), program.end());
  if (o.after.empty()) {
    s << shell_join(argv) << "\n";
    return s.str();
  }
  // The step's output is kept apart from the job log so that the hook reads exactly what the ranks printed.
  const std::string step_log = shell_join({logs + "/" + job + "-"}) + "\"$SLURM_JOB_ID\"";
  s << "export DSV4_STEP_STDOUT=" << step_log << ".step.out DSV4_STEP_STDERR=" << step_log << ".step.err\n";
  s << "set +e\n";
  s << shell_join(argv) << " >\"$DSV4_STEP_STDOUT\" 2>\"$DSV4_STEP_STDERR\"\n";
  s << "export DSV4_STEP_STATUS=$?\n";
  s << "set -e\n";
  s << "echo \"dsv4: step exited with status $DSV4_STEP_STATUS (output: $DSV4_STEP_STDOUT, $DSV4_STEP_STDERR)\"\n";
  s << o.after << "\n";
  s << "exit \"$DSV4_STEP_STATUS\"\n";
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
