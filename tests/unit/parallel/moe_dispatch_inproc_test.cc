// EP dispatch/combine over the in-process backend with 1..4 rank-threads (cases in moe_dispatch_core.h),
// plus input validation.
#include <gtest/gtest.h>

#include <chrono>

#include "parallel/moe_dispatch.h"
#include "runtime/core/error.h"
#include "tests/mp/moe_dispatch_core.h"

namespace dsv4::parallel {
namespace {

using namespace std::chrono_literals;

class MoeDispatchInProc : public ::testing::TestWithParam<int> {};

TEST_P(MoeDispatchInProc, MatchesSingleRankReference) {
  const int n = GetParam();
  run_inproc_ranks(n, 30s, [n](int, Bootstrap& bootstrap) {
    auto comm = make_communicator("inproc", bootstrap);
    for (const auto& c : testing::moe_cases(n)) testing::case_moe_dispatch_combine(*comm, c);
  });
}

INSTANTIATE_TEST_SUITE_P(Ranks, MoeDispatchInProc, ::testing::Values(1, 2, 3, 4));

TEST(MoeDispatchValidation, BadInputsAreNamed) {
  run_inproc_ranks(1, 30s, [](int, Bootstrap& bootstrap) {
    auto comm = make_communicator("inproc", bootstrap);
    float x[4] = {};
    int32_t ids[2] = {0, 9};
    try {
      MoeDispatcher(*comm, {8, 2, DType::kF32}).dispatch({2, 1, ids, x});
      ADD_FAILURE();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("token 1 slot 0 routes to expert 9"), std::string::npos) << e.what();
    }
    EXPECT_THROW(MoeDispatcher(*comm, {8, 2, DType::kI32}), Error);
    EXPECT_THROW(MoeDispatcher(*comm, {8, 0, DType::kF32}), Error);
    MoeDispatcher fresh(*comm, {8, 2, DType::kF32});
    float y[2];
    EXPECT_THROW(fresh.combine(x, x, y), Error);  // no dispatch yet
  });
  run_inproc_ranks(3, 30s, [](int, Bootstrap& bootstrap) {
    auto comm = make_communicator("inproc", bootstrap);
    EXPECT_THROW(MoeDispatcher(*comm, {8, 2, DType::kF32}), Error);  // 8 experts over 3 ranks
  });
}

}  // namespace
}  // namespace dsv4::parallel
