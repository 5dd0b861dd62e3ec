// Proves the shared MPI gtest main turns a hang into a failure: rank 1 blocks in a receive that no rank
// will ever match. Registered only under tests/mp/expect_failure.sh with --watchdog_s=2: the job must end
// non-zero, within seconds, with the watchdog's message.
#include <gtest/gtest.h>

#include "parallel/communicator.h"
#include "tests/support/mpi_test_env.h"

namespace dsv4::parallel {
namespace {

TEST(MpiWatchdog, AHangBecomesAFailure) {
  auto comm = make_communicator("mpi", dsv4::testing::mpi_world_bootstrap());
  ASSERT_GE(comm->size(), 2) << "needs a peer to wait for";
  if (comm->rank() == 1) {
    int never = 0;
    comm->recv(&never, 1, DType::kI32, 0, kDefaultStream);  // rank 0 never sends
  }
}

}  // namespace
}  // namespace dsv4::parallel
