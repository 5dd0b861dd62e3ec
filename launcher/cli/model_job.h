// One rank of a model job for the tools that run the model (`dsv4 forward`, `dsv4 generate`): MPI start-up under
// an MPI launcher (a process started without one is a single rank over a one-rank in-process world: no MPI at
// all), the layout (launcher/layout_args.h), checks that every rank makes alike before
// any collective, the sharded load and the Engine, and the rank-level error handling.
//
// Errors every rank detects alike (bad flags, a layout the model cannot take, bad token ids, an unreadable
// checkpoint) are raised before the first collective: every rank prints the same message and exits non-zero,
// nothing hangs. Anything later goes through parallel::run_rank_main: the failing rank prints
// "[rank R] fatal: ..." and aborts the job (MPI_Abort), so its peers do not wait forever.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>

#include "launcher/layout_args.h"
#include "parallel/bootstrap.h"
#include "parallel/communicator.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/loaded_model.h"

namespace dsv4::cli {

struct ModelJobArgs {
  std::string checkpoint, tokenizer, numerics;
  bool deterministic = false;
  LayoutArgs layout;
};

/// Adds --numerics, --deterministic and the layout options (with --deployment) to `cmd`.
void add_model_job_options(CLI::App* cmd, ModelJobArgs& a);

/// What a rank's body works with. With one rank `world` has size 1 and the model is the single-process one
/// (weights mapped from the checkpoint).
struct ModelJob {
  parallel::Bootstrap* bootstrap = nullptr;
  parallel::Communicator* world = nullptr;
  std::unique_ptr<LoadedModel> loaded;
  std::unique_ptr<Engine> engine;
  parallel::MeshConfig layout;
  int rank() const { return bootstrap->rank(); }
  Model& model() { return *loaded->model; }
};

/// Runs `body` on this rank. `precheck` (may be empty) sees the checkpoint's config before any collective and
/// throws for bad input. Returns normally when every rank's body returned; otherwise throws (alike errors) or
/// ends the job (errors of one rank).
void run_model_job(const ModelJobArgs& args, const std::function<void(const ModelConfig&)>& precheck,
                   const std::function<void(ModelJob&)>& body);

}  // namespace dsv4::cli
