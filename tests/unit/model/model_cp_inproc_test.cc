// Context parallelism of the model over the in-process backend, 2 and 4 rank-threads (cases in
// tests/mp/model_cp_core.h): CP logits equal CP = 1 within 1e-5 relative, bitwise equal across the CP
// ranks, each rank holding its round-robin share of the compressed rows.
#include <gtest/gtest.h>

#include <chrono>

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
    for (const auto& c : testing::cp_cases()) testing::case_model_cp(*world, c);
  });
}

INSTANTIATE_TEST_SUITE_P(Ranks, ModelCpInProc, ::testing::Values(2, 4));

}  // namespace
}  // namespace dsv4
