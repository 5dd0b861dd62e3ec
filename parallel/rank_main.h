// The top-level handler of a rank: nothing escapes a rank silently, and a failing rank ends the job.
#pragma once

#include <functional>

#include "parallel/bootstrap.h"
#include "parallel/communicator.h"

namespace dsv4::parallel {

/// Runs `body` and converts any exception into one stderr line "[rank R] fatal: <code>: <message>",
/// then calls `comm->abort()` (when `comm` is not null) so that the peers do not wait forever, and
/// returns the exit code for the error (dsv4::exit_code_for; 1 for exceptions that are not dsv4::Error).
/// Returns 0 when `body` returns. With the MPI backend, abort() is MPI_Abort with that exit code and does
/// not return; mpirun then kills the other ranks.
int run_rank_main(Bootstrap& bootstrap, Communicator* comm, const std::function<void()>& body);

}  // namespace dsv4::parallel
