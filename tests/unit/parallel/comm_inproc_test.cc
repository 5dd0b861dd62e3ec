// The shared communicator cases (tests/mp/comm_core.h) over the in-process backend with 1..4 rank-threads,
// plus what only this backend can show without ending the process: abort and timeout unblocking peers.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "parallel/communicator.h"
#include "runtime/core/error.h"
#include "tests/mp/comm_core.h"

namespace dsv4::parallel {
namespace {

using namespace std::chrono_literals;

class CommInProc : public ::testing::TestWithParam<int> {};

TEST_P(CommInProc, AllCases) {
  run_inproc_ranks(GetParam(), 30s, [](int rank, Bootstrap& bootstrap) {
    auto comm = make_communicator("inproc", bootstrap);
    EXPECT_EQ(comm->rank(), rank);
    EXPECT_EQ(comm->backend_name(), "inproc");
    testing::HostMemory memory;
    testing::run_all_cases(*comm, memory);
  });
}

TEST_P(CommInProc, BootstrapExchanges) {
  const int n = GetParam();
  run_inproc_ranks(n, 30s, [n](int rank, Bootstrap& bootstrap) {
    std::vector<int> all(n, -1);
    int mine = rank * 3;
    bootstrap.all_gather(&mine, all.data(), sizeof(int));
    for (int p = 0; p < n; ++p) EXPECT_EQ(all[p], p * 3);
    long value = rank == n - 1 ? 42 : 0;
    bootstrap.broadcast(&value, sizeof value, n - 1);
    EXPECT_EQ(value, 42);
    bootstrap.barrier();
  });
}

INSTANTIATE_TEST_SUITE_P(Ranks, CommInProc, ::testing::Values(1, 2, 3, 4));

TEST(CommInProcFailures, AbortWakesPeersWithRemoteError) {
  std::vector<ErrorCode> codes(3, ErrorCode::kInternal);
  std::vector<char> threw(3, 0);  // not vector<bool>: each thread writes its own element
  InProcWorld world(3, 30s);
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r) {
    threads.emplace_back([&, r] {
      auto bootstrap = world.bootstrap(r);
      auto comm = make_communicator("inproc", *bootstrap);
      if (r == 0) {
        std::this_thread::sleep_for(50ms);  // the peers are blocked in all_reduce by now
        comm->abort();
        return;
      }
      float x = 1.0f;
      try {
        comm->all_reduce(&x, &x, 1, DType::kF32, ReduceOp::kSum, kDefaultStream);
      } catch (const Error& e) {
        threw[r] = true;
        codes[r] = e.code();
      }
    });
  }
  const auto start = std::chrono::steady_clock::now();
  for (auto& t : threads) t.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  for (int r = 1; r < 3; ++r) {
    EXPECT_TRUE(threw[r]) << "rank " << r;
    EXPECT_EQ(codes[r], ErrorCode::kRemote) << "rank " << r;
  }
}

TEST(CommInProcFailures, MissingPeerTimesOut) {
  // Rank 1 never joins the all_reduce: rank 0 gives up after the world's timeout with kTimeout.
  try {
    run_inproc_ranks(2, 200ms, [](int rank, Bootstrap& bootstrap) {
      auto comm = make_communicator("inproc", bootstrap);
      if (rank == 1) return;
      float x = 1.0f;
      comm->all_reduce(&x, &x, 1, DType::kF32, ReduceOp::kSum, kDefaultStream);
    });
    ADD_FAILURE() << "no timeout";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kTimeout) << e.what();
    EXPECT_NE(std::string(e.what()).find("DSV4_COMM_TIMEOUT_S"), std::string::npos) << e.what();
  }
}

TEST(CommInProcFailures, MismatchedAllToAllCountsAreReported) {
  try {
    run_inproc_ranks(2, 30s, [](int rank, Bootstrap& bootstrap) {
      auto comm = make_communicator("inproc", bootstrap);
      std::vector<float> buf(8);
      std::vector<size_t> sc = {1, rank == 0 ? size_t{2} : size_t{1}}, displ = {0, 4}, rc = {1, 1};
      AllToAllVArgs args{buf.data(), sc, displ, buf.data() + 0, rc, displ, DType::kF32};
      std::vector<float> out(8);
      args.recv = out.data();
      comm->all_to_all_v(args, kDefaultStream);
    });
    ADD_FAILURE() << "mismatch not detected";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    EXPECT_NE(std::string(e.what()).find("sends 2 elements to rank 1"), std::string::npos) << e.what();
  }
}

TEST(CommInProcFailures, RankExceptionIsRethrownAsRootCause) {
  try {
    run_inproc_ranks(3, 30s, [](int rank, Bootstrap& bootstrap) {
      auto comm = make_communicator("inproc", bootstrap);
      if (rank == 2) DSV4_THROW(kNotFound) << "rank 2 failed on purpose";
      int x = 0;
      comm->all_reduce(&x, &x, 1, DType::kI32, ReduceOp::kSum, kDefaultStream);
    });
    ADD_FAILURE() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound) << e.what();
  }
}

TEST(CommFactory, UnknownBackendListsTheAvailableOnes) {
  InProcWorld world(1);
  auto bootstrap = world.bootstrap(0);
  try {
    make_communicator("gloo", *bootstrap);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("inproc"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_communicator("mpi", *bootstrap), Error);  // an in-process bootstrap is not MPI's
}

TEST(CommFactory, SubByteDtypesAreRefused) {
  run_inproc_ranks(1, 30s, [](int, Bootstrap& bootstrap) {
    auto comm = make_communicator("inproc", bootstrap);
    uint8_t b = 0;
    EXPECT_THROW(comm->all_gather(&b, &b, 1, DType::kFP4E2M1, kDefaultStream), Error);
    EXPECT_THROW(comm->all_reduce(&b, &b, 1, DType::kU8, ReduceOp::kSum, kDefaultStream), Error);
  });
}

}  // namespace
}  // namespace dsv4::parallel
