// EP dispatch/combine over the MPI backend (cases in moe_dispatch_core.h), under mpirun.
#include <gtest/gtest.h>

#include "parallel/communicator.h"
#include "tests/mp/moe_dispatch_core.h"
#include "tests/support/mpi_test_env.h"

namespace dsv4::parallel {
namespace {

TEST(MoeDispatchMpi, MatchesSingleRankReference) {
  auto comm = make_communicator("mpi", dsv4::testing::mpi_world_bootstrap());
  for (const auto& c : testing::moe_cases(comm->size())) testing::case_moe_dispatch_combine(*comm, c);
}

TEST(MoeDispatchMpi, ExchangesAgreeBitwiseAsTheWindowGrows) {
  // mpirun on one host: the group shares a node, so kAuto must take the shared window.
  auto comm = make_communicator("mpi", dsv4::testing::mpi_world_bootstrap());
  testing::case_moe_exchanges_agree(*comm, DType::kF32, 9, /*expect_shared=*/true);
  testing::case_moe_exchanges_agree(*comm, DType::kBF16, 64, /*expect_shared=*/true);
}

TEST(MoeDispatchMpi, SharedWindow) {
  auto comm = make_communicator("mpi", dsv4::testing::mpi_world_bootstrap());
  testing::case_shared_window(*comm);
}

TEST(MoeDispatchMpi, InsideSubgroups) {
  // EP over pairs of ranks (or the single rank): dispatch stays inside each group.
  auto world = make_communicator("mpi", dsv4::testing::mpi_world_bootstrap());
  const int group = world->size() % 2 == 0 ? 2 : 1;
  auto ep = world->split(world->rank() / group, world->rank());
  for (const auto& c : testing::moe_cases(ep->size())) testing::case_moe_dispatch_combine(*ep, c);
}

}  // namespace
}  // namespace dsv4::parallel
