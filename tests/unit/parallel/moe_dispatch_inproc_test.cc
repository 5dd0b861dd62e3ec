// EP dispatch/combine over the in-process backend with 1..4 rank-threads (cases in moe_dispatch_core.h): every
// exchange against the single-rank reference and bitwise against each other, the shared window, and input
// validation (kShared without a window).
#include <gtest/gtest.h>

#include <chrono>

#include "parallel/moe_dispatch.h"
#include "runtime/core/error.h"
#include "tests/mp/moe_dispatch_core.h"

namespace dsv4::parallel {
namespace {

using namespace std::chrono_literals;

// Forwards every collective to `inner` but offers no shared window (the Communicator default).
class NoWindow final : public Communicator {
 public:
  explicit NoWindow(Communicator& inner) : inner_(inner) {}
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  std::string_view backend_name() const override { return "no-window"; }
  void all_reduce(const void* s, void* r, size_t c, DType t, ReduceOp op, Stream st) override {
    inner_.all_reduce(s, r, c, t, op, st);
  }
  void all_gather(const void* s, void* r, size_t c, DType t, Stream st) override { inner_.all_gather(s, r, c, t, st); }
  void reduce_scatter(const void* s, void* r, size_t c, DType t, ReduceOp op, Stream st) override {
    inner_.reduce_scatter(s, r, c, t, op, st);
  }
  void all_to_all_v(const AllToAllVArgs& a, Stream st) override { inner_.all_to_all_v(a, st); }
  void broadcast(void* b, size_t c, DType t, int root, Stream st) override { inner_.broadcast(b, c, t, root, st); }
  void send(const void* b, size_t c, DType t, int p, Stream st) override { inner_.send(b, c, t, p, st); }
  void recv(void* b, size_t c, DType t, int p, Stream st) override { inner_.recv(b, c, t, p, st); }
  std::unique_ptr<Communicator> split(int color, int key) override { return inner_.split(color, key); }
  void abort() noexcept override { inner_.abort(); }

 private:
  Communicator& inner_;
};

class MoeDispatchInProc : public ::testing::TestWithParam<int> {};

TEST_P(MoeDispatchInProc, MatchesSingleRankReference) {
  const int n = GetParam();
  run_inproc_ranks(n, 30s, [n](int, Bootstrap& bootstrap) {
    auto comm = make_communicator("inproc", bootstrap);
    for (const auto& c : testing::moe_cases(n)) testing::case_moe_dispatch_combine(*comm, c);
  });
}

TEST_P(MoeDispatchInProc, ExchangesAgreeBitwiseAsTheWindowGrows) {
  run_inproc_ranks(GetParam(), 30s, [](int, Bootstrap& bootstrap) {
    auto comm = make_communicator("inproc", bootstrap);
    testing::case_moe_exchanges_agree(*comm, DType::kF32, 9, /*expect_shared=*/true);
    testing::case_moe_exchanges_agree(*comm, DType::kBF16, 64, /*expect_shared=*/true);
  });
}

TEST_P(MoeDispatchInProc, SharedWindow) {
  run_inproc_ranks(GetParam(), 30s, [](int, Bootstrap& bootstrap) {
    auto comm = make_communicator("inproc", bootstrap);
    testing::case_shared_window(*comm);
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
    // kShared where the group has no window: the test communicator below offers none, like NCCL's.
    NoWindow plain(*comm);
    MoeDispatcher no_window(plain, {8, 2, DType::kF32, MoeExchange::kShared});
    try {
      no_window.dispatch({2, 1, ids, x});
      ADD_FAILURE();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kUnsupported) << e.what();
    }
    MoeDispatcher fallback(plain, {8, 2, DType::kF32, MoeExchange::kAuto});
    int32_t good[2] = {0, 7};
    fallback.dispatch({2, 1, good, x});
    EXPECT_EQ(fallback.last_exchange(), MoeExchange::kSingle);
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
