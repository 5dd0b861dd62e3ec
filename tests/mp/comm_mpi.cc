// The shared communicator cases (comm_core.h) over the MPI backend, run under mpirun at several rank counts.
#include <gtest/gtest.h>

#include "parallel/communicator.h"
#include "tests/mp/comm_core.h"
#include "tests/support/mpi_test_env.h"

namespace dsv4::parallel {
namespace {

class CommMpi : public ::testing::Test {
 protected:
  void SetUp() override { comm_ = make_communicator("mpi", dsv4::testing::mpi_world_bootstrap()); }
  std::unique_ptr<Communicator> comm_;
  testing::HostMemory memory_;
};

TEST_F(CommMpi, AllReduce) { testing::case_all_reduce(*comm_, memory_); }
TEST_F(CommMpi, AllGather) { testing::case_all_gather(*comm_, memory_); }
TEST_F(CommMpi, ReduceScatter) { testing::case_reduce_scatter(*comm_, memory_); }
TEST_F(CommMpi, AllToAllV) { testing::case_all_to_all_v(*comm_, memory_); }
TEST_F(CommMpi, Broadcast) { testing::case_broadcast(*comm_, memory_); }
TEST_F(CommMpi, SendRecvRing) { testing::case_send_recv_ring(*comm_, memory_); }
TEST_F(CommMpi, Split) { testing::case_split(*comm_, memory_); }

TEST_F(CommMpi, BootstrapAndIdentity) {
  Bootstrap& world = dsv4::testing::mpi_world_bootstrap();
  EXPECT_EQ(comm_->rank(), world.rank());
  EXPECT_EQ(comm_->size(), world.size());
  EXPECT_EQ(comm_->backend_name(), "mpi");
  std::vector<int> all(world.size(), -1);
  const int mine = 7 * world.rank();
  world.all_gather(&mine, all.data(), sizeof mine);
  for (int p = 0; p < world.size(); ++p) EXPECT_EQ(all[p], 7 * p);
  int value = world.rank() == 0 ? 99 : 0;
  world.broadcast(&value, sizeof value, 0);
  EXPECT_EQ(value, 99);
  world.barrier();
}

}  // namespace
}  // namespace dsv4::parallel
