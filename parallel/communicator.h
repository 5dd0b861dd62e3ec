// Communicator: the stream-ordered data plane (all-reduce, all-to-all-v, ...) over a group of ranks.
//
// Interface after mscclpp/c10d, lifecycle after NCCL. Three backends:
//   - "mpi":    host memory, over a private MPI communicator; abort() is MPI_Abort (ends the whole job);
//   - "inproc": host memory, N threads sharing an InProcWorld; abort() wakes every waiter with kRemote;
//   - "nccl":   device memory (built when NCCL is found), unique id distributed over the Bootstrap.
// "mpi" (on one node) and "inproc" also offer a node-shared window (make_shared_window, shared_window.h).
//
// Semantics shared by every backend:
//   - counts are in elements of `dtype`; 4-bit dtypes are not accepted (no whole-byte elements);
//   - every call is collective over the group except send/recv; all members call in the same order;
//   - work is ordered on `stream`; host backends synchronise it first and finish before returning;
//   - all_reduce / reduce_scatter on the host backends reduce in rank order (rank 0 + rank 1 + ...),
//     accumulating bf16 in f32 and rounding once, so "mpi" and "inproc" give bitwise identical results for
//     a given rank count regardless of timing. NCCL's order is its own (not bitwise reproducible);
//   - send may block until the matching recv is posted (MPI rendezvous): order ring exchanges so that
//     even ranks send first and odd ranks receive first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "parallel/bootstrap.h"
#include "parallel/shared_window.h"
#include "parallel/stream.h"
#include "runtime/core/dtype.h"

namespace dsv4::parallel {

enum class ReduceOp { kSum, kMax, kMin };

std::string_view reduce_op_name(ReduceOp op);

/// Arguments of all_to_all_v. Rank r sends send_counts[p] elements starting at send_displs[p] to each
/// peer p, and receives recv_counts[p] elements at recv_displs[p] from each peer p. All four spans have
/// size() entries, in elements of `dtype`. Counts must match pairwise (what p sends to r is what r
/// expects from p): "inproc" reports any mismatch (kInvalidArgument), "mpi" reports a longer send
/// (MPI_ERR_TRUNCATE, kMpi) but not a shorter one, "nccl" does not check.
struct AllToAllVArgs {
  const void* send = nullptr;
  std::span<const size_t> send_counts;
  std::span<const size_t> send_displs;
  void* recv = nullptr;
  std::span<const size_t> recv_counts;
  std::span<const size_t> recv_displs;
  DType dtype = DType::kF32;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string_view backend_name() const = 0;

  /// recv[i] = op over ranks of send[i]; `count` elements; send == recv (in place) is allowed.
  /// Reductions accept f32, bf16, i32 and i64.
  virtual void all_reduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op, Stream stream) = 0;
  /// recv = concatenation in rank order of every rank's `count_per_rank` elements.
  virtual void all_gather(const void* send, void* recv, size_t count_per_rank, DType dtype, Stream stream) = 0;
  /// send holds size() blocks of `count_per_rank`; rank r receives op over ranks of block r.
  virtual void reduce_scatter(const void* send, void* recv, size_t count_per_rank, DType dtype, ReduceOp op,
                              Stream stream) = 0;
  virtual void all_to_all_v(const AllToAllVArgs& args, Stream stream) = 0;
  /// Copies `count` elements of `buf` on `root` into `buf` on every rank.
  virtual void broadcast(void* buf, size_t count, DType dtype, int root, Stream stream) = 0;
  virtual void send(const void* buf, size_t count, DType dtype, int peer, Stream stream) = 0;
  virtual void recv(void* buf, size_t count, DType dtype, int peer, Stream stream) = 0;

  /// Collective: ranks with the same `color` form a new communicator, ordered by (key, old rank).
  /// A negative color takes no part and gets nullptr.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

  /// Collective: a node-shared window with a segment of `bytes_per_rank` bytes (the same on every rank) per
  /// member, or nullptr on every rank when the members cannot address each other's memory (different
  /// hosts, device-memory backends). See shared_window.h. Every rank must destroy its window (the "mpi"
  /// window's destruction is collective); the window may outlive this communicator.
  virtual std::unique_ptr<SharedWindow> make_shared_window(size_t bytes_per_rank) {
    (void)bytes_per_rank;
    return nullptr;
  }

  /// Whether another thread of this rank may run collectives on a DIFFERENT communicator while this one is in
  /// use (the model's two-micro-batch pipeline gives each micro-batch its own groups). One communicator is
  /// never used by two threads at once. "mpi" answers MPI_Query_thread == MPI_THREAD_MULTIPLE.
  virtual bool concurrent_communicators() const { return true; }

  /// Unblocks peers after a fatal error: MPI ends the job (MPI_Abort), NCCL aborts the communicator,
  /// the in-process backend wakes every waiter of its world with Error(kRemote). Never throws.
  virtual void abort() noexcept = 0;
};

/// Creates the world communicator of backend `name` ("mpi", "inproc", "nccl") from `bootstrap`, which must
/// be of the matching kind for "mpi" (make_mpi_bootstrap) and "inproc" (InProcWorld::bootstrap); "nccl"
/// accepts any. Collective over the bootstrap's ranks. Unknown or unavailable names throw kInvalidArgument
/// or kUnsupported, listing what this build offers.
std::unique_ptr<Communicator> make_communicator(std::string_view name, Bootstrap& bootstrap);

/// The backend names this build can create.
std::span<const std::string_view> available_backends();

/// Element size in bytes; throws kInvalidArgument for sub-byte dtypes (not valid in collectives).
size_t comm_element_size(DType dtype);

}  // namespace dsv4::parallel
