// SharedWindow: node-shared host memory over a Communicator's group (one segment per rank, every member can
// address every segment), for exchanges that need no collective to move data (DeepEP's intranode idea on
// CPU ranks: write straight into the peer's buffer, then synchronise).
//
// Made by Communicator::make_shared_window, a collective that returns nullptr on every rank when the group
// does not share one node ("mpi" across hosts) or the backend has no host memory ("nccl"). Backends:
//   - "mpi":    MPI_Comm_split_type(MPI_COMM_TYPE_SHARED) + MPI_Win_allocate_shared, segments from
//               MPI_Win_shared_query (a passive epoch held for the window's life, MPI_Win_sync around the
//               barrier of fence);
//   - "inproc": one heap block per rank-thread, kept alive until every member's window is gone; fence is
//               the group's barrier.
//
// Memory model: a rank may write into any segment and read any segment; writes by one rank become visible
// to another only across a fence() that both pass (or across any other collective of the group that every
// rank enters after its accesses: the MPI and in-process collectives are full barriers on shared memory).
// Segment contents are not initialised.
#pragma once

#include <cstddef>

namespace dsv4::parallel {

class SharedWindow {
 public:
  virtual ~SharedWindow() = default;

  /// This rank and the member count (the same as the communicator that made the window).
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// Bytes of every member's segment (the size given to make_shared_window).
  virtual size_t capacity() const = 0;
  /// The start of member `rank`'s segment in this process's address space (64-byte aligned at least).
  virtual std::byte* segment(int rank) = 0;
  /// Collective barrier with memory ordering: every access any member made to any segment before its
  /// fence() is visible to (and completed before) every access after the fence() on every member.
  /// Throws like the backend's collectives (kRemote / kTimeout in-process, kMpi).
  virtual void fence() = 0;
};

}  // namespace dsv4::parallel
