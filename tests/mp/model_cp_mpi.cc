// Context parallelism of the model over the MPI backend (cases in model_cp_core.h), under mpirun -np 2 / 4:
// CP logits equal CP = 1 within 1e-5 relative, bitwise equal across the CP ranks, rows sharded round robin.
#include <gtest/gtest.h>

#include "parallel/communicator.h"
#include "tests/mp/model_cp_core.h"
#include "tests/support/mpi_test_env.h"

namespace dsv4 {
namespace {

TEST(ModelCpMpi, MatchesSingleRank) {
  auto world = parallel::make_communicator("mpi", testing::mpi_world_bootstrap());
  for (const auto& c : testing::cp_cases()) testing::case_model_cp(*world, c);
}

}  // namespace
}  // namespace dsv4
