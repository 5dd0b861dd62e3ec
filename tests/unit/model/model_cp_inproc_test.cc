// Context parallelism of the model over the in-process backend, 2 and 4 rank-threads (cases in
// tests/mp/model_cp_core.h): CP logits equal CP = 1 within 1e-5 relative (bitwise in deterministic mode),
// bitwise equal across the CP ranks, each rank holding its round-robin share of the compressed rows; and a
// deterministic CP size that does not divide the virtual shards is refused when the model is made.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "parallel/bootstrap.h"
#include "tests/mp/model_cp_core.h"

namespace dsv4 {
namespace {

using namespace std::chrono_literals;

class ModelCpInProc : public ::testing::TestWithParam<int> {};

TEST_P(ModelCpInProc, MatchesSingleRank) {
  const int n = GetParam();
  parallel::run_inproc_ranks(n, 120s, [](int, parallel::Bootstrap& bootstrap) {
    auto world = parallel::make_communicator("inproc", bootstrap);
    for (bool det : {false, true}) {
      for (const auto& c : testing::cp_cases()) testing::case_model_cp(*world, c, det);
      testing::case_model_cp_batches(*world, det);
    }
  });
}

INSTANTIATE_TEST_SUITE_P(Ranks, ModelCpInProc, ::testing::Values(2, 4));

TEST(ModelCpInProc, DeterministicRefusesCpNotDividingVirtualShards) {
  parallel::run_inproc_ranks(3, 60s, [](int, parallel::Bootstrap& bootstrap) {
    auto world = parallel::make_communicator("inproc", bootstrap);
    const ModelConfig cfg = testing::tiny_config({4, 128});
    const testing::TinyWeights weights(cfg, 11);
    auto tp = world->split(world->rank(), 0);
    auto ep = world->split(world->rank(), 0);
    auto cp = world->split(0, world->rank());
    ModelParallel par{tp.get(), ep.get(), true, cp.get()};
    try {
      Model model(cfg, bind_weights(cfg, weights.lookup()), kernels::make_cpu_backend(), Numerics::kPlain, par);
      ADD_FAILURE() << "a deterministic CP group of 3 was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("divides 8"), std::string::npos) << e.what();
    }
    par.deterministic = false;  // plain mode takes any CP size
    Model plain(cfg, bind_weights(cfg, weights.lookup()), kernels::make_cpu_backend(), Numerics::kPlain, par);
  });
}

}  // namespace
}  // namespace dsv4
