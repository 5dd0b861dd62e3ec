// Context parallelism of the model over the MPI backend, under mpirun -np 2 / 4: the tiny-model cases of
// model_cp_core.h (CP logits equal CP = 1 within 1e-5 relative and bitwise in deterministic mode, bitwise equal
// across the CP ranks, rows sharded round robin), and at np 4 the layout tp 2 x cp 2 x ep 4 on a random
// checkpoint of golden-a's architecture (heads, output groups, shared expert and vocabulary split over TP, the
// sequence over CP, the experts over all four ranks, whose MoE exchange then joins CP ranks holding different
// tokens), whose gathered logits must equal the single-process model's (1e-5 relative; bitwise in
// deterministic mode). Long chunks run through the two-micro-batch pipeline (MPI_THREAD_MULTIPLE).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/context_parallel.h"
#include "parallel/rank_main.h"
#include "parallel/mesh.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/writer.h"
#include "runtime/config/model_config.h"
#include "runtime/model/shard_load.h"
#include "tests/mp/model_cp_core.h"
#include "tests/support/mpi_test_env.h"
#include "tests/support/test_paths.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

TEST(ModelCpMpi, MatchesSingleRank) {
  auto world = parallel::make_communicator("mpi", testing::mpi_world_bootstrap());
  for (bool det : {false, true}) {
    for (const auto& c : testing::cp_cases()) testing::case_model_cp(*world, c, det);
    testing::case_model_cp_batches(*world, det);
  }
}

// Prefill in chunks (ends at 61, 64, 194, 299: past the ring wrap at 16, the first indexer selection, two
// ratio-128 rows) then three decode steps; every forward's logits gathered to whole vocabulary rows.
std::vector<float> run_tp_cp_schedule(Model& model, const std::vector<int32_t>& tokens) {
  SequenceState st = model.new_sequence();
  std::vector<float> all;
  int64_t at = 0;
  for (int64_t n : {61, 3, 130, 105, 1, 1, 1}) {
    SequenceChunk c{&st, std::span<const int32_t>(tokens.data() + at, n)};
    const ForwardOutput out = model.forward(std::span<const SequenceChunk>(&c, 1));
    const Tensor full = gather_full_logits(model, out.logits, out.vocab_begin);
    all.insert(all.end(), full.as<float>(), full.as<float>() + full.numel());
    at += n;
  }
  return all;
}

// The two-micro-batch pipeline over MPI (two threads per rank calling MPI at once, each on its own groups),
// under run_rank_main as a serving rank runs: a 150-token and a 50-token chunk pipelined, then decode, bitwise
// the single-process model's logits (deterministic mode), on every rank. Registered a second and a third time
// with DSV4_FAULT_INJECT failing micro-batch B or A of CP rank 1 mid-forward (tests/mp/CMakeLists.txt): the
// job must end with that rank's message within seconds, not hang.
TEST(ModelCpMpi, PipelinedPrefillUnderRankMain) {
  parallel::Bootstrap& bootstrap = testing::mpi_world_bootstrap();
  auto world = parallel::make_communicator("mpi", bootstrap);
  const int rc = parallel::run_rank_main(bootstrap, world.get(), [&] {
    ModelConfig cfg = testing::tiny_config({4, 8, 0}, 8, 3);
    cfg.o_lora_rank = 128;  // deterministic mode slices wo_b per output group
    const testing::TinyWeights weights(cfg, 17);
    const testing::CpCase c{"pipelined", {4, 8, 0}, 8, 3, {150, 50, 7}, 2, Numerics::kPlain};
    Model single(cfg, bind_weights(cfg, weights.lookup()), kernels::make_cpu_backend(), Numerics::kPlain, true);
    const std::vector<float> want = testing::run_cp_schedule(single, c);
    testing::CpGroups groups(*world);
    Model model(cfg, bind_weights(cfg, weights.lookup()), kernels::make_cpu_backend(), Numerics::kPlain,
                groups.parallel(true));
    const int64_t before = parallel::cp_exchange_stats().pipelined_forwards;
    const std::vector<float> got = testing::run_cp_schedule(model, c);
    DSV4_CHECK(parallel::cp_exchange_stats().pipelined_forwards - before == 2)
        << "expected 2 pipelined forwards (the 150- and 50-token chunks)";
    DSV4_CHECK(got == want) << "pipelined CP logits are not bitwise CP = 1 (relative difference "
                            << testing::cp_relative_error(got, want) << ")";
  });
  ASSERT_EQ(rc, 0);
}

TEST(ModelCpMpi, TensorTimesContextParallel) {
  auto world = parallel::make_communicator("mpi", testing::mpi_world_bootstrap());
  if (world->size() != 4) GTEST_SKIP() << "tp 2 x cp 2 x ep 4 runs on 4 ranks";
  char path[512] = {};
  if (world->rank() == 0) {
    const fs::path d = testing::scratch_dir("model_cp_mpi");
    const ModelConfig cfg = load_model_config(testing::golden_model_dir("golden-a") / "config.json");
    make_random_checkpoint(cfg, 3, d / "ckpt", 1);
    std::strncpy(path, (d / "ckpt").c_str(), sizeof(path) - 1);
  }
  world->broadcast(path, sizeof(path), DType::kU8, 0, parallel::kDefaultStream);
  {
    const Checkpoint ckpt = Checkpoint::open(path);
    const ModelConfig& cfg = ckpt.config();
    const std::vector<int32_t> tokens = testing::cp_tokens(302, cfg.vocab_size, 9);
    parallel::MeshConfig mc;
    mc.world_size = 4;
    mc.tp = 2;
    mc.cp = 2;
    mc.ep = 4;
    const parallel::Mesh mesh = parallel::Mesh::create(mc, mesh_dims(cfg));
    ModelGroups groups = make_model_groups(*world, mesh);
    const ModelShard shard = model_shard_for_rank(cfg, mesh, world->rank());
    for (bool det : {false, true}) {
      SCOPED_TRACE(std::string("tp 2 x cp 2 x ep 4") + (det ? ", deterministic" : "") + ", rank " +
                   std::to_string(world->rank()));
      Model single = Model::from_checkpoint(ckpt, Numerics::kPlain, det);
      const std::vector<float> want = run_tp_cp_schedule(single, tokens);
      // The chunks of 130 and 105 tokens run as two micro-batches (each on its own TP, CP and EP groups).
      ModelParallel par = groups.parallel(det);
      par.pipeline_min_tokens = 100;
      Model model = Model::from_checkpoint_sharded(ckpt, Numerics::kPlain, par, shard);
      const std::vector<float> got = run_tp_cp_schedule(model, tokens);
      ASSERT_EQ(got.size(), want.size());
      if (det) {
        EXPECT_TRUE(got == want) << "not bitwise CP = 1 (relative difference " << testing::cp_relative_error(got, want)
                                 << ")";
      } else {
        EXPECT_LE(testing::cp_relative_error(got, want), 1e-5);
      }
    }
  }
  testing::mpi_world_bootstrap().barrier();
  if (world->rank() == 0) fs::remove_all(fs::path(path).parent_path());
}

}  // namespace
}  // namespace dsv4
