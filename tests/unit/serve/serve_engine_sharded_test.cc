// The Engine on a sharded model over the in-process backend (4 rank-threads, dp 2 x tp 2, experts over 4):
// the Scheduler spreads sequences over both replicas, each TP rank reduces its vocabulary shard to candidates,
// rank 0 merges and samples; in deterministic mode every request's tokens equal those of one process, for
// greedy, top-k, top-p and untruncated temperature sampling (whose candidates must be widened).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "kernels/backend.h"
#include "parallel/bootstrap.h"
#include "parallel/communicator.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/generator.h"
#include "runtime/engine/loaded_model.h"
#include "runtime/model/shard_load.h"
#include "runtime/serve/scheduler.h"
#include "runtime/serve/server.h"
#include "tests/support/test_paths.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

struct Request {
  std::vector<int32_t> prompt;
  GenerationOptions options;
};

std::map<uint64_t, Request> requests() {
  auto opts = [](float temperature, int32_t top_k, float top_p, int32_t max_tokens, uint64_t seed) {
    GenerationOptions o;
    o.sampling.temperature = temperature;
    o.sampling.top_k = top_k;
    o.sampling.top_p = top_p;
    o.sampling.seed = seed;
    o.sampling.top_logprobs = 3;
    o.max_tokens = max_tokens;
    return o;
  };
  return {{1, {{0, 17, 300, 5, 5, 1023, 42}, opts(0.0f, 0, 1.0f, 6, 0)}},
          {2, {{0, 5, 9}, opts(0.9f, 0, 1.0f, 7, 11)}},  // untruncated: widened only when the draw lands past
          {3, {{0, 100, 200, 300, 400, 500, 17, 18, 19, 20, 21}, opts(1.0f, 5, 1.0f, 5, 12)}},
          {4, {{0}, opts(0.7f, 0, 0.8f, 6, 13)}},
          {5, {{0, 1, 2, 3}, opts(0.0f, 0, 1.0f, 4, 0)}}};
}

// Runs every request through Scheduler + Engine; `engine_step` is the engine of this rank (rank 0 drives).
// Returns the tokens of each request (on rank 0) and the replicas the plans used.
struct Driven {
  std::map<uint64_t, std::vector<int32_t>> tokens;
  std::map<uint64_t, std::vector<float>> logprobs;
  std::set<int> replicas;
};

Driven drive(Engine& engine, int64_t vocab, parallel::Bootstrap* bootstrap) {
  const bool root = bootstrap == nullptr || bootstrap->rank() == 0;
  Driven d;
  std::optional<serve::Scheduler> sched;
  std::map<uint64_t, GenerationStream> streams;
  if (root) {
    sched.emplace(serve::SchedulerLimits{.state_budget_bytes = 1 << 30, .max_step_tokens = 8, .max_running = 4,
                                         .max_prefill_chunk = 4, .dp_size = engine.dp_size()},
                  [](int64_t t) { return t; });
    for (auto& [id, r] : requests()) {
      sched->enqueue(id, r.prompt, r.options.max_tokens, sampling_plan_of(id, r.options.sampling));
      streams.emplace(id, GenerationStream(nullptr, r.options, vocab, static_cast<int64_t>(r.prompt.size()), 0));
    }
  }
  for (int step = 0; step < 200; ++step) {
    v1::StepPlan plan;
    if (root) {
      if (sched->idle()) {
        plan.set_shutdown(true);
      } else {
        plan = sched->next_plan();
      }
      for (const v1::SequenceWork& w : plan.work()) d.replicas.insert(w.dp_rank());
    }
    if (bootstrap != nullptr) serve::broadcast_plan(*bootstrap, plan);
    if (plan.shutdown()) break;
    auto check = [&streams](uint64_t id, const MergedCandidates& merged, int32_t count, bool all_in) {
      return streams.at(id).candidates_suffice(merged, count, all_in);
    };
    for (SampledCandidates& s : engine.step(plan, check)) {
      GenerationStream& stream = streams.at(s.sequence_id);
      GenerationStep g = stream.step(s.candidates);
      d.logprobs[s.sequence_id].push_back(g.logprob);
      sched->on_sampled(s.sequence_id, g.token, stream.finished());
    }
  }
  for (auto& [id, stream] : streams) d.tokens[id] = stream.tokens();
  EXPECT_EQ(engine.num_sequences(), 0u) << "finished sequences were not freed";
  return d;
}

TEST(ServeEngineSharded, ReplicasAndShardsSampleWhatOneProcessSamples) {
  const fs::path dir = testing::scratch_dir("engine_sharded");
  std::ifstream in(testing::source_dir() / "configs/models/tiny.json");
  nlohmann::json config = nlohmann::json::parse(in);
  config["vocab_size"] = 1024;
  config["moe_intermediate_size"] = 256;  // tp = 2 keeps 128-column FP8 blocks
  std::ofstream(dir / "config.json") << config.dump(2);
  std::string out;
  ASSERT_EQ(testing::run_command(testing::dsv4_bin().string() + " make-checkpoint --config " +
                                     (dir / "config.json").string() + " --seed 4 --out " + (dir / "ckpt").string(),
                                 &out),
            0)
      << out;
  const Checkpoint ckpt = Checkpoint::open(dir / "ckpt");
  const ModelConfig& cfg = ckpt.config();

  Model whole = Model::from_checkpoint(ckpt, Numerics::kPlain, /*deterministic=*/true);
  Engine single(whole);
  const Driven ref = drive(single, cfg.vocab_size, nullptr);
  ASSERT_EQ(ref.tokens.size(), 5u);

  Driven got;
  parallel::run_inproc_ranks(4, [&](int rank, parallel::Bootstrap& bootstrap) {
    auto world = parallel::make_communicator("inproc", bootstrap);
    const parallel::Mesh mesh = model_mesh(cfg, {.world_size = 4, .dp = 2, .tp = 2, .ep = 4, .cp = 1});
    ModelGroups groups = make_model_groups(*world, mesh);
    Model model(cfg, load_shard(ckpt, model_shard_for_rank(cfg, mesh, rank)), kernels::make_cpu_backend(),
                Numerics::kPlain, groups.parallel(/*deterministic=*/true));
    Engine engine(model, *world, mesh);
    EXPECT_EQ(engine.dp_rank(), rank / 2);
    Driven d = drive(engine, cfg.vocab_size, &bootstrap);
    if (rank == 0) got = std::move(d);
  });
  EXPECT_EQ(got.replicas, (std::set<int>{0, 1})) << "the scheduler did not use both replicas";
  for (const auto& [id, tokens] : ref.tokens) {
    EXPECT_EQ(got.tokens[id], tokens) << "request " << id;
    EXPECT_EQ(got.logprobs[id], ref.logprobs.at(id)) << "request " << id;
  }
}

}  // namespace
}  // namespace dsv4
