// `dsv4-launch`: plans, starts and simulates deployments.
//   plan CONFIG                 layout, ownership and memory per rank; refuses layouts the model cannot take
//   run CONFIG                  execs the mpirun command line (--dry-run prints it)
//   slurm CONFIG [-- STEP...]   writes an sbatch script (--submit runs sbatch on it); the job step is the server,
//                               or a workload given after -- (with --step-env, --results-dir, --after hooks)
//   simulate ...                roofline performance model of one step (and a sweep over GPU counts)
//   gemm / collective ...       the simulator's primitives on their own (for checks and validation)
#include <CLI/CLI.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "launcher/cli_main.h"
#include "launcher/launch/hardware.h"
#include "launcher/launch/job_command.h"
#include "launcher/launch/memory_plan.h"
#include "launcher/launch/simulator.h"
#include "launcher/launch/simulator_mla.h"
#include "runtime/config/deployment_config.h"
#include "runtime/config/model_config.h"
#include "runtime/core/env.h"
#include "runtime/core/error.h"
#include "runtime/core/logging.h"

namespace dsv4::launch {
namespace {

namespace fs = std::filesystem;

// The server sits beside dsv4-launch in the build tree and in an install.
std::string default_server_bin() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return "dsv4-server";
  return (self.parent_path() / "dsv4-server").string();
}

ParallelLayout parse_layout(const std::string& text) {
  ParallelLayout l;
  int64_t* dims[] = {&l.dp, &l.tp, &l.ep, &l.cp};
  std::stringstream in(text);
  std::string item;
  int i = 0;
  while (std::getline(in, item, ',')) {
    DSV4_CHECK_ARG(i < 4) << "--layout expects dp,tp,ep,cp, got '" << text << "'";
    try {
      size_t used = 0;
      *dims[i] = std::stoll(item, &used);
      DSV4_CHECK_ARG(used == item.size()) << "--layout: '" << item << "' is not an integer";
    } catch (const std::logic_error&) {
      DSV4_THROW(kInvalidArgument) << "--layout: '" << item << "' is not an integer";
    }
    DSV4_CHECK_ARG(*dims[i] >= 1) << "--layout: every entry must be >= 1, got '" << text << "'";
    ++i;
  }
  DSV4_CHECK_ARG(i == 4) << "--layout expects dp,tp,ep,cp, got '" << text << "'";
  return l;
}

void setup_plan(CLI::App& app) {
  auto* cmd = app.add_subcommand("plan", "Layout, ownership and memory per rank of a deployment");
  static std::string config;
  static bool json = false;
  cmd->add_option("config", config, "deployment YAML")->required();
  cmd->add_flag("--json", json, "print the plan as JSON");
  cmd->callback([] {
    const DeploymentConfig dep = load_deployment_config(config);
    const ModelConfig model = load_model_config(dep.model_config);
    check_layout(model, dep.layout);
    const MemoryPlan plan = plan_memory(model, dep);
    if (json) {
      std::cout << plan_to_json(model, dep, plan).dump(2) << "\n";
    } else {
      std::cout << format_plan(model, dep, plan);
    }
    DSV4_CHECK_CODE(plan.fits(), ErrorCode::kInvalidArgument)
        << dep.name << ": needs " << format_bytes(static_cast<double>(plan.required)) << " per rank, budget is "
        << format_bytes(static_cast<double>(plan.budget)) << " (memory.budget_per_rank)";
  });
}

void setup_run(CLI::App& app) {
  auto* cmd = app.add_subcommand("run", "Start the deployment under mpirun");
  static std::string config, hostfile, server_bin;
  static std::vector<std::string> server_args;
  static bool dry_run = false;
  cmd->add_option("config", config, "deployment YAML")->required();
  cmd->add_option("--server-arg", server_args,
                  "extra dsv4-server argument, e.g. --server-arg=--port-file=F (repeatable)")
      ->allow_extra_args(false);
  cmd->add_option("--hostfile", hostfile, "Open MPI hostfile (required for more than one node)");
  cmd->add_option("--server-bin", server_bin, "dsv4-server executable (default: beside dsv4-launch)");
  cmd->add_flag("--dry-run", dry_run, "print the command instead of running it");
  cmd->callback([] {
    const DeploymentConfig dep = load_deployment_config(config);
    check_layout(load_model_config(dep.model_config), dep.layout);
    RunOptions o;
    o.hostfile = hostfile;
    o.server_bin = server_bin.empty() ? default_server_bin() : server_bin;
    o.server_args = server_args;
    o.forward_library_path = env::is_set(env::kLdLibraryPath);
    for (const env::Var& v : env::all_vars()) {
      // The log level goes with its deployment value; the launchers' own variables are not ours to forward.
      if (v.name.starts_with("DSV4_") && v.name != env::kLogLevel.name && env::is_set(v)) {
        o.forward_env.emplace_back(v.name);
      }
    }
    const auto argv = mpirun_command(dep, o);
    if (dry_run) {
      std::cout << shell_join(argv) << "\n";
      return;
    }
    DSV4_LOG(INFO) << "exec: " << shell_join(argv);
    std::cout.flush();
    exec_command(argv);
  });
}

void setup_slurm(CLI::App& app) {
  auto* cmd = app.add_subcommand("slurm", "Write (and optionally submit) an sbatch script for the deployment");
  static std::string config, out, server_bin;
  static SlurmOptions o;
  static bool submit = false;
  cmd->add_option("config", config, "deployment YAML")->required();
  cmd->add_option("--out", out, "script path (default: dsv4-<name>.sbatch in the current folder)");
  cmd->add_option("--launcher", o.launcher, "srun (srun --mpi=pmix) or mpirun inside the allocation")
      ->check(CLI::IsMember({"srun", "mpirun"}));
  cmd->add_option("--log-dir", o.log_dir, "folder of the job's logs (<job name>-<job id>.out/.err)");
  cmd->add_option("--partition", o.partition, "Slurm partition");
  cmd->add_option("--time", o.time_limit, "time limit, e.g. 24:00:00");
  cmd->add_option("--server-bin", server_bin, "dsv4-server executable (default: beside dsv4-launch)");
  cmd->add_option("step", o.step,
                  "after --: the job step every rank runs instead of the server, e.g. -- dsv4 generate "
                  "--deployment CONFIG --checkpoint DIR ... (a measurement workload)");
  cmd->add_option("--step-env", o.step_env, "NAME=VALUE for the step's processes only (repeatable)")
      ->allow_extra_args(false);
  cmd->add_option("--results-dir", o.results_dir, "folder exported to the job as DSV4_RESULTS_DIR (created)");
  cmd->add_option("--after", o.after,
                  "one shell command run after the step whatever its status (step output in "
                  "LOG_DIR/<job>-<id>.step.out/.err; DSV4_STEP_STATUS, DSV4_STEP_STDOUT, DSV4_STEP_STDERR set)");
  cmd->add_flag("--submit", submit, "run sbatch on the script");
  cmd->callback([] {
    const DeploymentConfig dep = load_deployment_config(config);
    check_layout(load_model_config(dep.model_config), dep.layout);
    o.server_bin = server_bin.empty() ? default_server_bin() : server_bin;
    if (o.log_dir.is_relative()) o.log_dir = fs::absolute(o.log_dir).lexically_normal();
    if (!o.results_dir.empty()) {
      if (o.results_dir.is_relative()) o.results_dir = fs::absolute(o.results_dir).lexically_normal();
      fs::create_directories(o.results_dir);
    }
    const std::string script = sbatch_script(dep, o);
    const fs::path path = out.empty() ? fs::path("dsv4-" + dep.name + ".sbatch") : fs::path(out);
    {
      std::ofstream f(path);
      DSV4_CHECK_CODE(f.good(), ErrorCode::kIo) << "cannot write " << path.string();
      f << script;
    }
    fs::permissions(path, fs::perms::owner_exec, fs::perm_options::add);
    fs::create_directories(o.log_dir);  // Slurm does not create the log folder
    std::cout << "wrote " << path.string() << "\n";
    if (submit) {
      std::cout.flush();
      exec_command({"sbatch", path.string()});
    }
  });
}

void setup_simulate(CLI::App& app) {
  auto* cmd = app.add_subcommand("simulate", "Roofline model of one engine step on a layout and hardware profile");
  static std::string deployment, model_path, mla_path, layout_text, hardware, sweep_text, csv;
  static int64_t redundant = 0;
  static SimSetup setup;
  static Workload w;
  static bool json = false, no_overlap = false;
  auto* dep_opt = cmd->add_option("--deployment", deployment, "take model, layout and nodes from a deployment YAML");
  auto* config_opt = cmd->add_option("--config", model_path, "model config.json")->excludes(dep_opt);
  cmd->add_option("--mla-model", mla_path, "an MLA model description (configs/simulator/deepseek-v3.yaml) instead")
      ->excludes(dep_opt)
      ->excludes(config_opt);
  cmd->add_option("--redundant-experts", redundant, "with --mla-model: extra physical expert copies (EPLB)");
  cmd->add_option("--layout", layout_text, "dp,tp,ep,cp")->excludes(dep_opt);
  cmd->add_option("--nodes", setup.nodes, "nodes")->excludes(dep_opt);
  cmd->add_option("--gpus-per-node", setup.gpus_per_node, "devices per node")->excludes(dep_opt);
  cmd->add_option("--hardware", hardware, "hardware profile YAML (configs/hardware/)")->required();
  cmd->add_option("--batch", w.batch, "concurrent sequences over the deployment");
  cmd->add_option("--context", w.context, "KV length of the decode steps");
  cmd->add_option("--prompt", w.prompt, "prompt tokens per request");
  cmd->add_option("--output", w.output, "output tokens per request");
  cmd->add_option("--expert-skew", setup.expert_skew, "expert popularity imbalance factor (>= 1)");
  cmd->add_option("--prefill-chunk", setup.prefill_chunk, "tokens per replica per prefill step");
  cmd->add_flag("--no-overlap", no_overlap, "communication not overlapped with computation");
  cmd->add_option("--sweep", sweep_text, "GPU counts MIN..MAX (doubling), e.g. 8..512");
  cmd->add_option("--csv", csv, "with --sweep: also write the curve as CSV to this file");
  cmd->add_flag("--json", json, "print the result as JSON");
  cmd->callback([] {
    if (!deployment.empty()) {
      const DeploymentConfig dep = load_deployment_config(deployment);
      model_path = dep.model_config.string();
      setup.layout = dep.layout;
      setup.nodes = dep.nodes;
      setup.gpus_per_node = dep.ranks_per_node;
    } else {
      DSV4_CHECK_ARG((!model_path.empty() || !mla_path.empty()) && !layout_text.empty())
          << "simulate needs --deployment, or --config (or --mla-model) and --layout";
      setup.layout = parse_layout(layout_text);
    }
    const HardwareProfile hw = load_hardware_profile(hardware);
    setup.overlap = !no_overlap;
    if (!mla_path.empty()) {
      DSV4_CHECK_ARG(sweep_text.empty()) << "--sweep is for V4 configs (--config)";
      const MlaModel mla = load_mla_model(mla_path);
      const SimResult r = simulate_mla(mla, setup, hw, w, redundant);
      if (json) {
        std::cout << result_to_json(r).dump(2) << "\n";
      } else {
        std::cout << "model " << mla.name << " (MLA)\n" << format_result(setup, hw, w, r);
      }
      return;
    }
    DSV4_CHECK_ARG(redundant == 0) << "--redundant-experts is only modelled with --mla-model";
    const ModelConfig model = load_model_config(model_path);
    if (!sweep_text.empty()) {
      const auto dots = sweep_text.find("..");
      DSV4_CHECK_ARG(dots != std::string::npos) << "--sweep expects MIN..MAX, got '" << sweep_text << "'";
      int64_t lo = 0, hi = 0;
      try {
        lo = std::stoll(sweep_text.substr(0, dots));
        hi = std::stoll(sweep_text.substr(dots + 2));
      } catch (const std::logic_error&) {
        DSV4_THROW(kInvalidArgument) << "--sweep expects MIN..MAX, got '" << sweep_text << "'";
      }
      const auto rows = sweep(model, setup, hw, w, lo, hi);
      std::cout << format_sweep(rows);
      if (!csv.empty()) {
        std::ofstream f(csv);
        DSV4_CHECK_CODE(f.good(), ErrorCode::kIo) << "cannot write " << csv;
        f << sweep_csv(rows);
        std::cout << "wrote " << csv << "\n";
      }
      return;
    }
    const SimResult r = simulate(model, setup, hw, w);
    if (json) {
      std::cout << result_to_json(r).dump(2) << "\n";
    } else {
      std::cout << format_result(setup, hw, w, r);
    }
  });
}

void setup_primitives(CLI::App& app) {
  auto* gemm = app.add_subcommand("gemm", "Roofline time of one GEMM [m,k] x [k,n]");
  static std::string hardware;
  static double m = 1, n = 1, k = 1;
  static std::string dtype = "fp8";
  gemm->add_option("--hardware", hardware, "hardware profile YAML")->required();
  gemm->add_option("-m", m, "rows (tokens)")->required();
  gemm->add_option("-n", n, "output columns")->required();
  gemm->add_option("-k", k, "inner dimension")->required();
  gemm->add_option("--dtype", dtype,
                   "weight format: fp8 (1 byte, FP8 rate), bf16 (2 bytes, BF16 rate); on a cpu profile also fp4 and "
                   "f32 (the CPU linear-kernel model)")
      ->check(CLI::IsMember({"fp8", "fp4", "bf16", "f32"}));
  gemm->callback([] {
    const HardwareProfile hw = load_hardware_profile(hardware);
    nlohmann::json j;
    if (hw.device == "cpu") {
      // The CPU kernel model: one pass over the weights per 8 tokens plus the per-token FMAs (hardware.h).
      j = {{"seconds", cpu_linear_time(m, n, k, hw.get("cpu_" + dtype + "_pass"), hw.get("cpu_" + dtype + "_flops"))},
           {"passes", std::ceil(m / 8.0)}};
    } else {
      DSV4_CHECK_ARG(dtype == "fp8" || dtype == "bf16") << "--dtype " << dtype << " is for cpu profiles";
      const bool fp8 = dtype == "fp8";
      const Roofline r =
          gemm_time(m, n, k, fp8 ? 1.0 : 2.0, hw.get(fp8 ? "fp8_flops" : "bf16_flops"), hw.get("memory_bandwidth"));
      j = {{"flops", r.flops}, {"bytes", r.bytes}, {"seconds", r.seconds}, {"compute_bound", r.compute_bound}};
    }
    std::cout << j.dump() << "\n";
  });

  auto* coll = app.add_subcommand("collective", "Modelled time of an expert dispatch/combine or a TP all-reduce");
  static std::string chw, kind = "dispatch";
  static int64_t ranks = 8, gpn = 8, tokens = 128, hidden = 7168, topk = 8;
  static double skew = 1.0;
  coll->add_option("--hardware", chw, "hardware profile YAML")->required();
  coll->add_option("--kind", kind, "dispatch (FP8), combine (BF16) or allreduce (BF16 tokens x hidden)")
      ->check(CLI::IsMember({"dispatch", "combine", "allreduce"}));
  coll->add_option("--ranks", ranks, "ranks in the group (EP or TP)");
  coll->add_option("--gpus-per-node", gpn, "devices per node");
  coll->add_option("--tokens", tokens, "tokens each rank sends");
  coll->add_option("--hidden", hidden, "hidden size");
  coll->add_option("--topk", topk, "experts per token");
  coll->add_option("--expert-skew", skew, "expert popularity imbalance factor (>= 1)");
  coll->callback([] {
    const HardwareProfile hw = load_hardware_profile(chw);
    const double d = static_cast<double>(hidden);
    nlohmann::json j;
    if (kind == "allreduce") {
      const bool intra = ranks <= gpn;
      j["seconds"] = allreduce_time(static_cast<double>(tokens) * d * 2.0, ranks,
                                    hw.get(intra ? "intra_bandwidth" : "inter_bandwidth"),
                                    hw.get(intra ? "intra_latency" : "inter_latency"));
    } else {
      const double copies = expected_max_load(static_cast<double>(tokens * topk * ranks), ranks, skew);
      const double bytes = kind == "dispatch" ? d + d / 128.0 * 4.0 : d * 2.0;
      j["max_copies_per_rank"] = copies;
      j["seconds"] = all_to_all_time(copies, bytes, ranks, gpn, hw);
    }
    std::cout << j.dump() << "\n";
  });
}

}  // namespace
}  // namespace dsv4::launch

int main(int argc, char** argv) {
  CLI::App app{"dsv4-launch: plan, start and simulate DeepSeek-V4 deployments"};
  app.require_subcommand(1);
  dsv4::launch::setup_plan(app);
  dsv4::launch::setup_run(app);
  dsv4::launch::setup_slurm(app);
  dsv4::launch::setup_simulate(app);
  dsv4::launch::setup_primitives(app);
  return dsv4::parse_and_run(app, argc, argv);
}
