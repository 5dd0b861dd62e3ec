// Bootstrap: the out-of-band host channel every rank has before any data-plane communicator exists.
//
// It moves small host byte blobs (unique ids, (color, key) pairs, sizes) between the ranks of a job, in
// the spirit of NCCL's bootstrap ring and mscclpp's Bootstrap. Two implementations:
//   - MPI: over a private duplicate of MPI_COMM_WORLD (MPI must be initialised by the caller);
//   - in-process: N threads of one process share an InProcWorld, each holding the Bootstrap of its rank.
// All calls are collective: every rank of the world calls them in the same order.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

namespace dsv4::parallel {

class Bootstrap {
 public:
  virtual ~Bootstrap() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// Gathers `bytes` bytes from every rank into `all` (size() * bytes), in rank order.
  virtual void all_gather(const void* mine, void* all, size_t bytes) = 0;
  /// Copies `bytes` bytes of `data` on `root` into `data` on every rank.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;
};

/// A Bootstrap over all ranks of MPI_COMM_WORLD. MPI must already be initialised (MPI_Init) by the caller.
std::unique_ptr<Bootstrap> make_mpi_bootstrap();

namespace detail {
struct InProcWorldState;
}

/// N ranks as threads of one process. Create one world, then give each thread `bootstrap(rank)`.
///
/// Every blocking wait of the world (bootstrap and in-process communicators alike) gives up after
/// `timeout` with Error(kTimeout), and the world is then aborted so that its other ranks wake up with
/// Error(kRemote) instead of waiting for their own timeout.
class InProcWorld {
 public:
  /// The timeout defaults to DSV4_COMM_TIMEOUT_S.
  explicit InProcWorld(int size);
  InProcWorld(int size, std::chrono::milliseconds timeout);
  ~InProcWorld();
  InProcWorld(const InProcWorld&) = delete;
  InProcWorld& operator=(const InProcWorld&) = delete;

  int size() const;
  /// The Bootstrap of `rank`; call once per rank, from the thread that plays that rank.
  std::unique_ptr<Bootstrap> bootstrap(int rank);
  /// Wakes every waiter of the world with Error(kRemote); later calls throw at once.
  void abort() noexcept;

  const std::shared_ptr<detail::InProcWorldState>& state() const { return state_; }

 private:
  std::shared_ptr<detail::InProcWorldState> state_;
};

/// Runs `fn(rank, bootstrap)` on `size` threads sharing one InProcWorld and joins them. When a rank throws,
/// the world is aborted (its peers wake up with kRemote) and the first exception by rank order among those
/// that are not kRemote consequences is rethrown after every thread has finished.
void run_inproc_ranks(int size, const std::function<void(int rank, Bootstrap& bootstrap)>& fn);
void run_inproc_ranks(int size, std::chrono::milliseconds timeout,
                      const std::function<void(int rank, Bootstrap& bootstrap)>& fn);

}  // namespace dsv4::parallel
