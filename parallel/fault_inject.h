// Test switch: make one rank throw at a named point (DSV4_FAULT_INJECT), to prove failures end the job.
//
// DSV4_FAULT_INJECT='rank=R,at=POINT[#N]' makes the N-th (default first) arrival of rank R at POINT throw
// Error(kInternal, "injected fault ..."). Communicator backends call it at the start of every operation
// with the operation name ("all_reduce", "all_to_all_v", "send", ..., "window_fence" for SharedWindow::fence)
// and the rank in that communicator (the world rank for "mpi"); programs may add their own points. Unset (the default) costs one branch per call.
#pragma once

#include <cstddef>
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

/// Benchmark switches: an emulated slower interconnect whose wait costs no CPU, as DMA-driven transfers do, to
/// show what overlap hides on a machine with no core to spare (docs/PERFORMANCE.md). Every collective and
/// shared-window fence of the "mpi" and "inproc" backends on a group of more than one rank (not the group
/// splits) first sleeps DSV4_COMM_DELAY_US microseconds plus, on "mpi", the `bytes` this rank receives at
/// DSV4_COMM_DELAY_MBPS megabytes per second (fences and "inproc": latency only). Both 0, the default: one
/// branch.
void maybe_delay_collective(std::string_view op, int group_size, size_t bytes);

}  // namespace dsv4::parallel
