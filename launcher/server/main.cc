// `dsv4-server`: the inference server, one MPI program. Every rank loads its shard of the model under the
// layout of the deployment YAML (or --dp/--tp/--ep/--cp; launcher/layout_args.h); rank 0 also runs the gRPC
// service, the scheduler and the Prometheus endpoint, and sends a StepPlan each iteration; all ranks step in
// lock-step (runtime/serve/server.h). Plans travel over an MpiPlanChannel, so idle followers do not spin.
// Without mpirun it runs as a single rank over the whole model.
//
// SIGTERM / SIGINT drain: rank 0 stops admitting, finishes what it accepted, broadcasts the shutdown plan, and
// every rank exits 0. A failing rank aborts the whole job (run_rank_main -> MPI_Abort), so clients see the
// connection drop (UNAVAILABLE) instead of a hang.
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <csignal>
#include <fstream>
#include <iostream>
#include <optional>
#include <vector>

#include <unistd.h>

#include "launcher/layout_args.h"
#include "launcher/server/mpi_plan_channel.h"
#include "parallel/bootstrap.h"
#include "parallel/communicator.h"
#include "parallel/rank_main.h"
#include "runtime/config/deployment_config.h"
#include "runtime/core/env.h"
#include "runtime/core/error.h"
#include "runtime/core/logging.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/loaded_model.h"
#include "runtime/kv/cpu_state_bytes.h"
#include "runtime/kv/memory_budget.h"
#include "runtime/kv/state_pool.h"
#include "runtime/serve/server.h"

namespace {

std::atomic<dsv4::serve::InferenceServer*> g_server{nullptr};

extern "C" void on_terminate(int) {
  // Followers ignore the signal: they leave on rank 0's shutdown plan.
  if (auto* server = g_server.load()) server->request_drain();
}

struct Args {
  std::string deployment, checkpoint, tokenizer, numerics, port_file, auth_token_file;
  bool deterministic = false;
  dsv4::LayoutArgs layout;
  dsv4::serve::ServerOptions server;
};

// Fills what the command line left unset from a deployment YAML (what `dsv4-launch run` passes). Flags given
// explicitly win, so a test or an operator can override one setting without editing the file.
dsv4::DeploymentConfig apply_deployment(Args& a, const CLI::App& app, int world_size) {
  dsv4::DeploymentConfig d = dsv4::load_deployment_config(a.deployment);
  DSV4_CHECK_ARG(d.world_size() == world_size)
      << a.deployment << ": the deployment has " << d.world_size() << " ranks (nodes x ranks_per_node) but mpirun "
      << "started " << world_size;
  auto unset = [&app](const char* flag) { return app.get_option(flag)->count() == 0; };
  if (unset("--checkpoint")) a.checkpoint = d.checkpoint.string();
  if (unset("--address")) a.server.address = d.server.address;
  if (unset("--metrics-address")) {
    const std::string host = d.server.address.substr(0, d.server.address.rfind(':'));
    a.server.metrics_address = d.server.metrics_port > 0 ? host + ":" + std::to_string(d.server.metrics_port) : "";
  }
  if (unset("--auth-token-file") && !d.server.auth_token_file.empty()) a.auth_token_file = d.server.auth_token_file;
  if (unset("--tls-cert") && !d.server.tls_cert.empty()) a.server.tls_cert_file = d.server.tls_cert;
  if (unset("--tls-key") && !d.server.tls_key.empty()) a.server.tls_key_file = d.server.tls_key;
  if (unset("--max-running")) a.server.scheduler.max_running = d.scheduler.max_running;
  if (unset("--max-step-tokens")) a.server.scheduler.max_step_tokens = d.scheduler.max_batch_tokens;
  if (unset("--max-prompt-tokens")) a.server.request_limits.max_prompt_tokens = d.scheduler.max_prompt_tokens;
  if (unset("--max-concurrent-requests")) {
    a.server.max_concurrent_requests = static_cast<int32_t>(d.scheduler.max_running + d.scheduler.max_queue);
  }
  dsv4::set_log_level(d.log_level);
  return d;
}

// What every rank's state pool, and the scheduler per replica, may hold for sequence state. With a deployment:
// memory.budget_per_rank minus this rank's weight bytes minus the activation workspace (the planner's own
// deployment_workspace_bytes, so `dsv4-launch plan` and the server agree), the minimum over all ranks (a
// replica's TP ranks each hold its sequences' whole state): every rank gathers every rank's numbers, so all
// reach the same budget, or all raise the same error (no rank is left waiting). --state-budget-bytes may
// lower it, never raise it. Without a deployment there is no memory budget: --state-budget-bytes, or room for
// max_running sequences of 4096 tokens. `label` gets the log line's description of the budget.
int64_t resolve_state_budget(const Args& a, const dsv4::DeploymentConfig* d, const dsv4::LoadedModel& loaded,
                             const dsv4::parallel::MeshConfig& mesh, dsv4::parallel::Bootstrap& bootstrap,
                             std::string* label) {
  const dsv4::Model& model = *loaded.model;
  const int64_t requested = a.server.scheduler.state_budget_bytes;
  if (d == nullptr) {
    *label = requested > 0 ? "state budget (--state-budget-bytes)" : "state budget (max-running x 4096 tokens)";
    return requested > 0 ? requested
                         : a.server.scheduler.max_running *
                               dsv4::cpu_state_bytes(model.config(), 4096, dsv4::kDefaultStatePageBytes,
                                                     static_cast<int64_t>(model.weights().mtp.size()))
                                   .total();
  }
  const dsv4::ParallelLayout layout{mesh.dp, mesh.tp, mesh.ep, mesh.cp};
  dsv4::SchedulerLimits limits = d->scheduler;  // with the command line's overrides, as the server runs them
  limits.max_batch_tokens = a.server.scheduler.max_step_tokens;
  if (a.server.request_limits.max_prompt_tokens > 0) {
    limits.max_prompt_tokens = a.server.request_limits.max_prompt_tokens;
  }
  const dsv4::RankMemory mine{bootstrap.rank(), d->memory_budget_per_rank, static_cast<int64_t>(model.weight_bytes()),
                              dsv4::deployment_workspace_bytes(model.config(), layout, limits)};
  std::vector<dsv4::RankMemory> all(static_cast<size_t>(bootstrap.size()));
  bootstrap.all_gather(&mine, all.data(), sizeof(mine));
  const int64_t budget =
      dsv4::state_budget_bytes(all, requested, d->source.empty() ? "deployment" : d->source.filename().string());
  *label = "state budget (memory.budget_per_rank " + dsv4::format_mib(static_cast<uint64_t>(mine.budget)) +
           " MiB - weights " + dsv4::format_mib(static_cast<uint64_t>(mine.weights)) + " MiB - workspace " +
           dsv4::format_mib(static_cast<uint64_t>(mine.workspace)) + " MiB = " +
           dsv4::format_mib(static_cast<uint64_t>(std::max<int64_t>(mine.state(), 0))) + " MiB here; " +
           (requested > 0 ? "--state-budget-bytes" : "the least over " + std::to_string(all.size()) + " ranks") + ")";
  return budget;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  a.server.metrics_address = "127.0.0.1:0";
  CLI::App app{"dsv4-server: DeepSeek-V4 gRPC inference server"};
  app.add_option("--deployment", a.deployment, "deployment YAML (configs/deployments/); flags override it");
  app.add_option("--checkpoint", a.checkpoint, "checkpoint directory (required without --deployment)");
  app.add_option("--tokenizer", a.tokenizer, "tokenizer.json (default: the checkpoint's, if any)");
  app.add_option("--numerics", a.numerics, "plain|reference (default: DSV4_NUMERICS)");
  app.add_option("--address", a.server.address, "gRPC host:port (port 0 = any free port)");
  app.add_option("--metrics-address", a.server.metrics_address, "Prometheus host:port; empty = off");
  app.add_option("--port-file", a.port_file, "write 'grpc=PORT metrics=PORT pids=RANK0,RANK1,...' once listening");
  app.add_option("--auth-token-file", a.auth_token_file, "file holding the bearer token every call must carry");
  app.add_option("--tls-cert", a.server.tls_cert_file, "PEM certificate (with --tls-key)");
  app.add_option("--tls-key", a.server.tls_key_file, "PEM private key (with --tls-cert)");
  app.add_option("--max-message-bytes", a.server.max_message_bytes, "largest gRPC message");
  app.add_option("--max-concurrent-requests", a.server.max_concurrent_requests, "Generate calls at once");
  app.add_option("--max-prompt-tokens", a.server.request_limits.max_prompt_tokens, "0 = the model's context - 1");
  app.add_option("--state-budget-bytes", a.server.scheduler.state_budget_bytes,
                 "sequence state a replica's running requests may reserve (0 = what the deployment's "
                 "memory.budget_per_rank leaves after weights and workspace; without a deployment, max-running x "
                 "4096-token sequences); at most what the deployment leaves");
  app.add_option("--max-running", a.server.scheduler.max_running, "sequences batched at once");
  app.add_option("--max-step-tokens", a.server.scheduler.max_step_tokens, "token budget of one step");
  app.add_option("--max-prefill-chunk", a.server.scheduler.max_prefill_chunk, "0 = token budget only");
  app.add_flag("--deterministic", a.deterministic,
               "fixed reduction order: results independent of layout and batch (default: DSV4_DETERMINISTIC)");
  dsv4::add_layout_options(&app, a.layout, /*with_deployment=*/false);
  CLI11_PARSE(app, argc, argv);

  int provided = 0;
  // MULTIPLE: the two micro-batches of a pipelined prefill run their collectives from two threads, each on
  // its own communicators (runtime/model/model_pipeline.cc); with less the model runs every forward as one batch.
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rc = 0;
  {
    auto bootstrap = dsv4::parallel::make_mpi_bootstrap();
    dsv4::set_log_rank(bootstrap->rank());
    std::unique_ptr<dsv4::parallel::Communicator> comm;
    rc = dsv4::parallel::run_rank_main(*bootstrap, nullptr,
                                       [&] { comm = dsv4::parallel::make_communicator("mpi", *bootstrap); });
    if (rc == 0) {
      std::signal(SIGTERM, on_terminate);
      std::signal(SIGINT, on_terminate);
      std::unique_ptr<dsv4::serve::InferenceServer> server;
      rc = dsv4::parallel::run_rank_main(*bootstrap, comm.get(), [&] {
        std::optional<dsv4::DeploymentConfig> deployment;
        if (!a.deployment.empty()) deployment = apply_deployment(a, app, bootstrap->size());
        const dsv4::parallel::MeshConfig layout =
            dsv4::resolve_layout(a.layout, bootstrap->size(), deployment ? &*deployment : nullptr);
        // Collective: every rank makes its plan channel in the same order.
        dsv4::serve::MpiPlanChannel channel;
        DSV4_CHECK_ARG(!a.checkpoint.empty()) << "--checkpoint or --deployment is required";
        if (!a.auth_token_file.empty()) {
          std::ifstream in(a.auth_token_file);
          DSV4_CHECK_ARG(in.good()) << "--auth-token-file: cannot read " << a.auth_token_file;
          std::getline(in, a.server.auth_token);
          DSV4_CHECK_ARG(!a.server.auth_token.empty()) << "--auth-token-file: " << a.auth_token_file << " is empty";
        }
        // Every rank's pid, so that the port file tells operators (and tests) which process is which rank.
        const int32_t my_pid = static_cast<int32_t>(::getpid());
        std::vector<int32_t> pids(static_cast<size_t>(bootstrap->size()));
        bootstrap->all_gather(&my_pid, pids.data(), sizeof(my_pid));
        if (bootstrap->rank() == 0) {
          // Listen first: health answers NOT_SERVING while the model loads.
          server = std::make_unique<dsv4::serve::InferenceServer>(a.server, *bootstrap);
          g_server.store(server.get());
          if (!a.port_file.empty()) {
            const std::string tmp = a.port_file + ".tmp";
            std::ofstream out(tmp);
            out << "grpc=" << server->grpc_port() << " metrics=" << server->metrics_port() << " pids=";
            for (size_t r = 0; r < pids.size(); ++r) out << (r ? "," : "") << pids[r];
            out << "\n";
            out.close();
            std::rename(tmp.c_str(), a.port_file.c_str());  // atomic: readers never see half a file
          }
        }
        const dsv4::Numerics numerics = dsv4::parse_numerics(
            a.numerics.empty() ? dsv4::env::get_string(dsv4::env::kNumerics) : a.numerics);
        const bool deterministic = a.deterministic || dsv4::env::get_bool(dsv4::env::kDeterministic);
        std::unique_ptr<dsv4::LoadedModel> loaded;
        std::unique_ptr<dsv4::StatePool> state_pool;  // declared before the engine: outlives its sequences
        std::unique_ptr<dsv4::Engine> engine;
        if (bootstrap->size() == 1 && layout.dp * layout.tp * layout.cp * layout.ep == 1) {
          loaded = dsv4::load_model(a.checkpoint, a.tokenizer, numerics, deterministic);
          engine = std::make_unique<dsv4::Engine>(*loaded->model);
        } else {
          loaded = dsv4::load_model_sharded(a.checkpoint, a.tokenizer, numerics, deterministic, *comm, layout);
          engine = std::make_unique<dsv4::Engine>(*loaded->model, *comm, loaded->groups->mesh);
        }
        std::string budget_label;
        const int64_t state_budget =
            resolve_state_budget(a, deployment ? &*deployment : nullptr, *loaded, layout, *bootstrap, &budget_label);
        // The pool and the scheduler hold the same budget: the serving loop takes the pool's (InferenceServer::
        // run), and admits by cpu_state_bytes, the bytes the pool books, so the pool never runs out mid-request.
        state_pool = std::make_unique<dsv4::StatePool>(
            dsv4::StatePoolOptions{dsv4::kDefaultStatePageBytes, state_budget});
        engine->set_state_pool(state_pool.get());
        dsv4::log_rank_memory(*loaded, state_budget, budget_label);
        if (bootstrap->rank() == 0) {
          server->run(*loaded, *engine, &channel);
          g_server.store(nullptr);
        } else {
          dsv4::serve::run_follower(*bootstrap, *engine, &channel);
        }
      });
      g_server.store(nullptr);
      server.reset();
    }
  }
  MPI_Finalize();
  return rc;
}
