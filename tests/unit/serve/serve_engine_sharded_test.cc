// The Engine on a sharded model over the in-process backend (4 rank-threads, dp 2 x tp 2, experts over 4):
// the Scheduler spreads sequences over both replicas, each TP rank reduces its vocabulary shard to candidates,
// rank 0 merges and samples; in deterministic mode every request's tokens equal those of one process, for
// greedy, top-k, top-p and untruncated temperature sampling (whose candidates must be widened). With context
// parallelism (cp 2, with dp 2 or tp 2) greedy requests give the tokens of one process.
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

// The scheduler's step and chunk limits of a drive.
struct Limits {
  int64_t max_step_tokens = 8;
  int64_t max_prefill_chunk = 4;
};

Driven drive(Engine& engine, int64_t vocab, parallel::Bootstrap* bootstrap,
             const std::map<uint64_t, Request>& reqs = requests(), Limits limits = {}) {
  const bool root = bootstrap == nullptr || bootstrap->rank() == 0;
  Driven d;
  std::optional<serve::Scheduler> sched;
  std::map<uint64_t, GenerationStream> streams;
  if (root) {
    sched.emplace(serve::SchedulerLimits{.state_budget_bytes = 1 << 30, .max_step_tokens = limits.max_step_tokens,
                                         .max_running = 4, .max_prefill_chunk = limits.max_prefill_chunk,
                                         .dp_size = engine.dp_size()},
                  [](int64_t t) { return t; });
    for (auto& [id, r] : reqs) {
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

// The tiny model with a 1024-token vocabulary, written once per run.
fs::path tiny_checkpoint() {
  static const fs::path ckpt = [] {
    const fs::path dir = testing::scratch_dir("engine_sharded");
    std::ifstream in(testing::source_dir() / "configs/models/tiny.json");
    nlohmann::json config = nlohmann::json::parse(in);
    config["vocab_size"] = 1024;
    config["moe_intermediate_size"] = 256;  // tp = 2 keeps 128-column FP8 blocks
    std::ofstream(dir / "config.json") << config.dump(2);
    std::string out;
    if (testing::run_command(testing::dsv4_bin().string() + " make-checkpoint --config " +
                                 (dir / "config.json").string() + " --seed 4 --out " + (dir / "ckpt").string(),
                             &out) != 0) {
      ADD_FAILURE() << out;
    }
    return dir / "ckpt";
  }();
  return ckpt;
}

// Runs `reqs` on 4 rank-threads under `layout` (rank 0's result).
Driven drive_sharded(const Checkpoint& ckpt, const parallel::MeshConfig& layout,
                     const std::map<uint64_t, Request>& reqs, Limits limits) {
  const ModelConfig& cfg = ckpt.config();
  Driven got;
  parallel::run_inproc_ranks(layout.world_size, [&](int rank, parallel::Bootstrap& bootstrap) {
    auto world = parallel::make_communicator("inproc", bootstrap);
    const parallel::Mesh mesh = model_mesh(cfg, layout);
    ModelGroups groups = make_model_groups(*world, mesh);
    Model model(cfg, load_shard(ckpt, model_shard_for_rank(cfg, mesh, rank)), kernels::make_cpu_backend(),
                Numerics::kPlain, groups.parallel(/*deterministic=*/true));
    Engine engine(model, *world, mesh);
    EXPECT_EQ(engine.cp_size(), layout.cp);
    Driven d = drive(engine, cfg.vocab_size, &bootstrap, reqs, limits);
    if (rank == 0) got = std::move(d);
  });
  return got;
}

TEST(ServeEngineSharded, ReplicasAndShardsSampleWhatOneProcessSamples) {
  const Checkpoint ckpt = Checkpoint::open(tiny_checkpoint());
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

// Context parallelism: the CP ranks of a replica run the same chunks, each over its share of every sequence's
// compressed rows, and CP rank 0 reports the candidates. CP logits equal CP = 1 only to rounding (the attention
// merges per-rank partial softmaxes), so greedy requests are compared: the same tokens as one process, logprobs
// within 1e-4. The 150-token prompt emits ratio-128 rows as well as ratio-4 rows and indexer selections.
TEST(ServeEngineSharded, ContextParallelGivesTheGreedyTokensOfOneProcess) {
  const Checkpoint ckpt = Checkpoint::open(tiny_checkpoint());
  const ModelConfig& cfg = ckpt.config();
  std::map<uint64_t, Request> reqs;
  const int64_t lengths[] = {150, 41, 9};
  for (uint64_t id = 1; id <= 3; ++id) {
    Request r;
    for (int64_t i = 0; i < lengths[id - 1]; ++i) {
      r.prompt.push_back(static_cast<int32_t>((i * 37 + static_cast<int64_t>(id) * 101) % cfg.vocab_size));
    }
    r.options.sampling.temperature = 0.0f;
    r.options.sampling.top_logprobs = 2;
    r.options.max_tokens = 6;
    reqs[id] = std::move(r);
  }
  const Limits limits{.max_step_tokens = 64, .max_prefill_chunk = 32};
  Model whole = Model::from_checkpoint(ckpt, Numerics::kPlain, /*deterministic=*/true);
  Engine single(whole);
  const Driven ref = drive(single, cfg.vocab_size, nullptr, reqs, limits);
  ASSERT_EQ(ref.tokens.size(), 3u);
  for (const parallel::MeshConfig& layout :
       {parallel::MeshConfig{.world_size = 4, .dp = 2, .tp = 1, .ep = 4, .cp = 2},
        parallel::MeshConfig{.world_size = 4, .dp = 1, .tp = 2, .ep = 4, .cp = 2}}) {
    SCOPED_TRACE("dp " + std::to_string(layout.dp) + " tp " + std::to_string(layout.tp) + " cp 2");
    const Driven got = drive_sharded(ckpt, layout, reqs, limits);
    EXPECT_EQ(got.replicas.size(), static_cast<size_t>(layout.dp));
    for (const auto& [id, tokens] : ref.tokens) {
      ASSERT_EQ(tokens.size(), 6u);
      EXPECT_EQ(got.tokens.at(id), tokens) << "request " << id;
      ASSERT_EQ(got.logprobs.at(id).size(), ref.logprobs.at(id).size());
      for (size_t k = 0; k < tokens.size(); ++k) EXPECT_NEAR(got.logprobs.at(id)[k], ref.logprobs.at(id)[k], 1e-4);
    }
  }
}

}  // namespace
}  // namespace dsv4
