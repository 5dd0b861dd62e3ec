// Test switch: make one rank throw at a named point (DSV4_FAULT_INJECT), to prove failures end the job.
//
// DSV4_FAULT_INJECT='rank=R,at=POINT[#N]' makes the N-th (default first) arrival of rank R at POINT throw
// Error(kInternal, "injected fault ..."). Communicator backends call it at the start of every operation
// with the operation name ("all_reduce", "all_to_all_v", "send", ..., "window_fence" for SharedWindow::fence)
// and the rank in that communicator (the world rank for "mpi"); programs may add their own points. Unset (the default) costs one branch per call.
#pragma once

#include <string>
#include <string_view>

namespace dsv4::parallel {

struct FaultSpec {
  int rank = -1;        // -1: no fault configured
  std::string point;
  int occurrence = 1;   // 1-based: fire on the occurrence-th arrival
};

/// Parses 'rank=R,at=POINT[#N]'; an empty string gives rank -1. Malformed text throws kInvalidArgument
/// naming DSV4_FAULT_INJECT.
FaultSpec parse_fault_spec(std::string_view text);

/// Throws when the configured fault matches (point, rank) on its occurrence-th arrival (counted per thread,
/// so in-process rank-threads count separately).
void maybe_inject_fault(std::string_view point, int rank);

}  // namespace dsv4::parallel
