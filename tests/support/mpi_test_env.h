// What tests running under tests/support/mpi_gtest_main.cc can use: the world Bootstrap of this job.
#pragma once

#include "parallel/bootstrap.h"

namespace dsv4::testing {

/// The MPI world Bootstrap, built by the gtest Environment of the MPI main before the first test.
parallel::Bootstrap& mpi_world_bootstrap();

}  // namespace dsv4::testing
