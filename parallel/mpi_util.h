// MPI helpers shared by the MPI bootstrap and communicator (internal header).
#pragma once

#include <mpi.h>

#include <climits>
#include <cstddef>
#include <string>
#include <string_view>

#include "parallel/bootstrap.h"
#include "runtime/core/error.h"

namespace dsv4::parallel::detail {

/// The text of an MPI error code.
std::string mpi_error_string(int code);

/// MPI counts are ints: refuse what does not fit instead of truncating.
inline int mpi_count(size_t value, std::string_view what) {
  DSV4_CHECK_CODE(value <= static_cast<size_t>(INT_MAX), ErrorCode::kUnsupported)
      << what << ": " << value << " bytes exceed the MPI int count limit";
  return static_cast<int>(value);
}

/// The MPI communicator behind an MPI Bootstrap, or MPI_COMM_NULL for other kinds.
MPI_Comm mpi_bootstrap_comm(Bootstrap& bootstrap);

/// Duplicates `comm` with MPI_ERRORS_RETURN so that failures become exceptions carrying MPI's message.
MPI_Comm mpi_dup_comm(MPI_Comm comm);
/// Frees a communicator unless MPI is already finalised; never throws (teardown path).
void mpi_free_comm(MPI_Comm* comm) noexcept;

}  // namespace dsv4::parallel::detail

/// Throws Error(kMpi) with MPI's error text when an MPI call does not return MPI_SUCCESS.
#define DSV4_MPI_CHECK(expr)                                                                               \
  do {                                                                                                     \
    const int dsv4_mpi_rc_ = (expr);                                                                       \
    DSV4_CHECK_CODE(dsv4_mpi_rc_ == MPI_SUCCESS, ::dsv4::ErrorCode::kMpi)                                  \
        << #expr << " failed: " << ::dsv4::parallel::detail::mpi_error_string(dsv4_mpi_rc_);               \
  } while (0)
