// Constructors of the communicator backends, used by make_communicator (internal header).
#pragma once

#include <memory>

#include "parallel/communicator.h"

namespace dsv4::parallel::detail {

std::unique_ptr<Communicator> make_inproc_communicator(Bootstrap& bootstrap);
std::unique_ptr<Communicator> make_mpi_communicator(Bootstrap& bootstrap);
#if defined(DSV4_WITH_NCCL)
std::unique_ptr<Communicator> make_nccl_communicator(Bootstrap& bootstrap);
#endif

/// The exit code a job-ending abort (MPI_Abort) reports; run_rank_main sets it from the error before
/// calling Communicator::abort(). Default 1.
void set_abort_exit_code(int code) noexcept;
int abort_exit_code() noexcept;

}  // namespace dsv4::parallel::detail
