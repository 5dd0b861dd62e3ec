// run_model_job: MPI start-up (none for a plain process), alike checks, sharded load, and the rank's body under
// run_rank_main.
#include "launcher/cli/model_job.h"

#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <optional>
#include <string_view>
#include <vector>

#include "parallel/rank_main.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/core/env.h"
#include "runtime/core/logging.h"

namespace dsv4::cli {

void add_model_job_options(CLI::App* cmd, ModelJobArgs& a) {
  cmd->add_option("--numerics", a.numerics, "plain|reference (default: DSV4_NUMERICS)");
  cmd->add_flag("--deterministic", a.deterministic,
                "fixed reduction order: logits bitwise equal for every layout (default: DSV4_DETERMINISTIC)");
  add_layout_options(cmd, a.layout, /*with_deployment=*/true);
}

namespace {

// MPI is started once per process and finalized on the way out, also when an alike error unwinds.
class MpiSession {
 public:
  MpiSession() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      // MULTIPLE for the model's two-micro-batch pipeline (runtime/model/model_pipeline.cc).
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
      owns_ = true;
    }
  }
  ~MpiSession() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_ && !finalized) MPI_Finalize();
  }
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

 private:
  bool owns_ = false;
};

// True when an MPI launcher (mpirun, srun, mpiexec) started this process as a rank of a job.
bool started_by_mpi_launcher() {
  return env::is_set(env::kOmpiWorldSize) || env::is_set(env::kPmixRank) || env::is_set(env::kPmiRank);
}

// Ends the process with `code` after the job's failure was reported; MPI is finalized first when in use.
[[noreturn]] void exit_job(int code, bool mpi) {
  if (mpi) MPI_Finalize();
  std::exit(code);
}

// The job over `bootstrap`, whose ranks use communicators of `backend` ("mpi", or "inproc" for one plain
// process); `mpi`: MPI is initialised (and must be finalized before exiting).
void run_job(std::unique_ptr<parallel::Bootstrap> bootstrap, std::string_view backend, bool mpi,
             const ModelJobArgs& args, const std::function<void(const ModelConfig&)>& precheck,
             const std::function<void(ModelJob&)>& body) {
  set_log_rank(bootstrap->rank());
  const int world_size = bootstrap->size();

  // Alike checks: every rank reads the same files and flags, so every rank normally fails the same way. They run
  // before any collective of the data plane; then one all-gather of the outcomes lets every rank print its
  // message (or name the rank that refused) and pass a barrier before exiting, since mpirun kills the other
  // ranks at the first non-zero exit.
  ModelJob job;
  job.bootstrap = bootstrap.get();
  Numerics numerics = Numerics::kReference;
  bool deterministic = false;
  std::exception_ptr failure;
  try {
    numerics = parse_numerics(args.numerics.empty() ? env::get_string(env::kNumerics) : args.numerics);
    deterministic = args.deterministic || env::get_bool(env::kDeterministic);
    std::optional<DeploymentConfig> deployment;
    if (!args.layout.deployment.empty()) deployment.emplace(load_deployment_config(args.layout.deployment));
    job.layout = resolve_layout(args.layout, world_size, deployment ? &*deployment : nullptr);
    const Checkpoint checkpoint = Checkpoint::open(args.checkpoint);
    if (world_size > 1 || job.layout.dp * job.layout.tp * job.layout.cp != 1 || job.layout.ep != 1) {
      model_mesh(checkpoint.config(), job.layout);  // throws naming every broken constraint
    }
    if (precheck) precheck(checkpoint.config());
  } catch (...) {
    failure = std::current_exception();
  }
  const char failed = failure ? 1 : 0;
  std::vector<char> outcomes(static_cast<size_t>(world_size));
  bootstrap->all_gather(&failed, outcomes.data(), 1);
  const auto first_bad = std::find(outcomes.begin(), outcomes.end(), 1);
  if (first_bad != outcomes.end()) {
    int code = 1;
    try {
      if (failure) std::rethrow_exception(failure);
      DSV4_LOG(ERROR) << "stopping: rank " << (first_bad - outcomes.begin()) << " refused the job";
    } catch (const Error& e) {
      DSV4_LOG(ERROR) << e.what();
      code = exit_code_for(e.code());
    } catch (const std::exception& e) {
      DSV4_LOG(ERROR) << "unexpected error: " << e.what();
    }
    bootstrap->barrier();
    bootstrap.reset();
    exit_job(code, mpi);
  }

  std::unique_ptr<parallel::Communicator> world;
  int rc = parallel::run_rank_main(*bootstrap, nullptr, [&] { world = parallel::make_communicator(backend, *bootstrap); });
  if (rc == 0) {
    job.world = world.get();
    rc = parallel::run_rank_main(*bootstrap, world.get(), [&] {
      if (world_size == 1) {
        job.loaded = load_model(args.checkpoint, args.tokenizer, numerics, deterministic);
        job.engine = std::make_unique<Engine>(*job.loaded->model);
      } else {
        job.loaded = load_model_sharded(args.checkpoint, args.tokenizer, numerics, deterministic, *world, job.layout);
        job.engine = std::make_unique<Engine>(*job.loaded->model, *world, job.loaded->groups->mesh);
      }
      body(job);
    });
  }
  job.engine.reset();
  job.loaded.reset();
  world.reset();
  bootstrap.reset();
  if (rc != 0) {
    // Reached only where abort() returns (it does not over MPI); the message is already printed.
    exit_job(rc, mpi);
  }
}

}  // namespace

void run_model_job(const ModelJobArgs& args, const std::function<void(const ModelConfig&)>& precheck,
                   const std::function<void(ModelJob&)>& body) {
  if (!started_by_mpi_launcher()) {
    // One plain process (the layout check still refuses anything that needs more ranks): a one-rank in-process
    // world instead of a singleton MPI_Init, which costs about 0.5 s with Open MPI (it starts a daemon).
    parallel::InProcWorld world(1);
    run_job(world.bootstrap(0), "inproc", /*mpi=*/false, args, precheck, body);
    return;
  }
  MpiSession mpi;
  run_job(parallel::make_mpi_bootstrap(), "mpi", /*mpi=*/true, args, precheck, body);
}

}  // namespace dsv4::cli
