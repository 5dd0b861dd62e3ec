// The shared gtest main of multi-rank MPI tests (linked into each executable of tests/mp/).
//
//  1. MPI_Init; every log line carries the rank.
//  2. A gtest Environment builds the world Bootstrap (mpi_world_bootstrap()) and frees it before
//     MPI_Finalize.
//  3. Rank 0 keeps gtest's printer and --gtest_output=xml; other ranks print only their failures, each
//     line prefixed "[rank r]", and write no XML (one file per job, not per rank).
//  4. A watchdog ends the process when the tests take longer than --watchdog_s=N (default 120): a hang
//     becomes a failure, and mpirun then ends the other ranks.
//  5. MPI_Allreduce(MIN) of the pass flag: every rank exits with the same code, non-zero when any rank
//     failed.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "parallel/bootstrap.h"
#include "runtime/core/logging.h"
#include "tests/support/mpi_test_env.h"

namespace dsv4::testing {
namespace {

std::unique_ptr<parallel::Bootstrap> g_world;

class MpiWorldEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { g_world = parallel::make_mpi_bootstrap(); }
  void TearDown() override { g_world.reset(); }
};

// Failures of ranks other than 0, which have no printer of their own.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::fprintf(stderr, "[rank %d] %s.%s failed at %s:%d\n%s\n", rank_, info ? info->test_suite_name() : "?",
                 info ? info->name() : "?", result.file_name() ? result.file_name() : "?", result.line_number(),
                 result.message());
    std::fflush(stderr);
  }

 private:
  int rank_;
};

class Watchdog {
 public:
  Watchdog(int rank, int seconds) {
    thread_ = std::thread([this, rank, seconds] {
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, std::chrono::seconds(seconds), [this] { return done_; })) return;
      std::fprintf(stderr, "[rank %d] watchdog: tests still running after %d s; failing the job\n", rank, seconds);
      std::fflush(stderr);
      _exit(70);  // EX_SOFTWARE; no MPI call from this thread: mpirun sees the exit and ends the other ranks
    });
  }
  ~Watchdog() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

int take_watchdog_flag(int* argc, char** argv) {
  int seconds = 120;
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    if (std::strncmp(argv[i], "--watchdog_s=", 13) == 0) {
      seconds = std::atoi(argv[i] + 13);
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  return seconds > 0 ? seconds : 120;
}

}  // namespace

parallel::Bootstrap& mpi_world_bootstrap() {
  if (!g_world) {
    std::fprintf(stderr, "mpi_world_bootstrap() called outside the tests of mpi_gtest_main\n");
    std::abort();
  }
  return *g_world;
}

}  // namespace dsv4::testing

int main(int argc, char** argv) {
  int provided = 0;  // MULTIPLE: the model's pipelined forwards call MPI from two threads
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  dsv4::set_log_rank(rank);
  const int watchdog_s = dsv4::testing::take_watchdog_flag(&argc, argv);

  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new dsv4::testing::MpiWorldEnvironment);
  if (rank != 0) {
    GTEST_FLAG_SET(output, "");
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new dsv4::testing::RankFailurePrinter(rank));
  }

  int passed = 0;
  {
    dsv4::testing::Watchdog watchdog(rank, watchdog_s);
    passed = RUN_ALL_TESTS() == 0 ? 1 : 0;
  }
  int all_passed = 0;
  MPI_Allreduce(&passed, &all_passed, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (rank == 0 && !all_passed && passed) std::fprintf(stderr, "[rank 0] another rank failed (see its lines)\n");
  MPI_Finalize();
  return all_passed ? 0 : 1;
}
