// MPI communicator: host memory over a private MPI communicator (RAII), rank-ordered reductions.
//
// Reductions do not use MPI_Allreduce: MPI may sum in any order (tree, ring, recursive halving), which
// changes float results with the rank count and the message size. Instead all_reduce is a reduce-scatter
// by chunks (MPI_Alltoallv: chunk p of every rank goes to rank p, which reduces the contributions in rank
// order with the same code as the in-process backend) followed by MPI_Allgatherv of the reduced chunks.
// The traffic is the same as a ring all-reduce; the results are bitwise reproducible and equal to
// "inproc" for the same rank count.
//
// make_shared_window: MPI-3 shared memory (MPI_Comm_split_type + MPI_Win_allocate_shared) when the whole group
// is on one node.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <vector>

#include "parallel/backends.h"
#include "parallel/fault_inject.h"
#include "parallel/mpi_util.h"
#include "parallel/reduce.h"

namespace dsv4::parallel::detail {
namespace {

/// Tags of point-to-point traffic on our private communicators (collectives do not use tags).
enum class MpiTag : int { kSendRecv = 1 };

bool overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  auto pa = reinterpret_cast<uintptr_t>(a);
  auto pb = reinterpret_cast<uintptr_t>(b);
  return a_bytes && b_bytes && pa < pb + b_bytes && pb < pa + a_bytes;
}

/// Segments of an MPI_Win_allocate_shared window. Holds a passive-target epoch (lock_all) for its whole
/// life so that loads and stores through the segment pointers are legal at any time; fence() makes them
/// visible with MPI_Win_sync (a memory barrier over the window) on both sides of a barrier, the pattern of
/// the MPI-3 shared-memory model.
class MpiSharedWindow final : public SharedWindow {
 public:
  /// Takes ownership of `node` (the members, all on one node) and `win` (allocated over `node`).
  MpiSharedWindow(MPI_Comm node, MPI_Win win, size_t bytes, int world_rank)
      : node_(node), win_(win), bytes_(bytes), world_rank_(world_rank) {
    DSV4_MPI_CHECK(MPI_Comm_rank(node_, &rank_));
    DSV4_MPI_CHECK(MPI_Comm_size(node_, &size_));
    segments_.resize(static_cast<size_t>(size_));
    for (int p = 0; p < size_; ++p) {
      MPI_Aint size = 0;
      int disp_unit = 0;
      void* base = nullptr;
      DSV4_MPI_CHECK(MPI_Win_shared_query(win_, p, &size, &disp_unit, &base));
      // Open MPI's segments start 8 or 16 bytes past a 64-byte boundary: each was allocated kAlign bytes
      // longer and starts at the next boundary (the same offset in every process, whose mappings are
      // page-aligned). MPI may round segments up (Open MPI: to pages), never down; every rank sees every size,
      // so a rank that asked for less makes all of them throw.
      const size_t pad = (kAlign - reinterpret_cast<uintptr_t>(base) % kAlign) % kAlign;
      DSV4_CHECK_ARG(static_cast<size_t>(size) >= bytes_ + pad)
          << "make_shared_window: rank " << p << " has a segment of " << size << " bytes, this rank asked for "
          << bytes_ << " (the size must be the same on every rank)";
      segments_[p] = static_cast<std::byte*>(base) + pad;
    }
    DSV4_MPI_CHECK(MPI_Win_lock_all(MPI_MODE_NOCHECK, win_));
    locked_ = true;
  }
  ~MpiSharedWindow() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    // MPI_Win_free is collective (Open MPI's has a barrier). While an exception unwinds this rank is on its way
    // to run_rank_main's MPI_Abort, and its peers may be waiting in another collective: freeing would hang
    // the job instead of ending it, so the window is left to the process's end.
    if (!finalized && std::uncaught_exceptions() == 0) {
      if (locked_) MPI_Win_unlock_all(win_);
      MPI_Win_free(&win_);  // collective; teardown never throws
    }
    mpi_free_comm(&node_);
  }
  MpiSharedWindow(const MpiSharedWindow&) = delete;
  /// Segment alignment; make_shared_window allocates this much more per segment.
  static constexpr size_t kAlign = 64;
  MpiSharedWindow& operator=(const MpiSharedWindow&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  size_t capacity() const override { return bytes_; }
  std::byte* segment(int rank) override {
    DSV4_CHECK_ARG(rank >= 0 && rank < size_) << "shared window: no segment " << rank << " of " << size_;
    return segments_[static_cast<size_t>(rank)];
  }
  void fence() override {
    maybe_inject_fault("window_fence", world_rank_);
    maybe_delay_collective("window_fence", size(), 0);
    DSV4_MPI_CHECK(MPI_Win_sync(win_));
    DSV4_MPI_CHECK(MPI_Barrier(node_));
    DSV4_MPI_CHECK(MPI_Win_sync(win_));
  }

 private:
  MPI_Comm node_ = MPI_COMM_NULL;
  MPI_Win win_ = MPI_WIN_NULL;
  size_t bytes_;
  int world_rank_;
  int rank_ = 0;
  int size_ = 1;
  bool locked_ = false;
  std::vector<std::byte*> segments_;
};

class MpiCommunicator final : public Communicator {
 public:
  /// Takes ownership of `comm` (freed in the destructor).
  explicit MpiCommunicator(MPI_Comm comm) : comm_(comm) {
    DSV4_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    DSV4_MPI_CHECK(MPI_Comm_size(comm_, &size_));
    DSV4_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_));
  }
  ~MpiCommunicator() override { mpi_free_comm(&comm_); }
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string_view backend_name() const override { return "mpi"; }
  bool concurrent_communicators() const override {
    int level = MPI_THREAD_SINGLE;
    MPI_Query_thread(&level);
    return level == MPI_THREAD_MULTIPLE;
  }

  void all_reduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op, Stream stream) override {
    check_reducible(dtype, "all_reduce");
    const size_t elem = comm_element_size(dtype);
    begin("all_reduce", stream, count * elem);
    const size_t n = static_cast<size_t>(size_);
    // Chunk p = elements [p * count / n, (p + 1) * count / n): reduced by rank p.
    std::vector<int> chunk_bytes(n), chunk_displs(n);
    for (size_t p = 0; p < n; ++p) {
      const size_t first = p * count / n, last = (p + 1) * count / n;
      chunk_bytes[p] = mpi_count((last - first) * elem, "all_reduce");
      chunk_displs[p] = mpi_count(first * elem, "all_reduce");
    }
    const int mine = chunk_bytes[rank_];
    std::vector<std::byte> gathered(static_cast<size_t>(mine) * n);
    std::vector<int> mine_counts(n, mine), mine_displs(n);
    for (size_t p = 0; p < n; ++p) mine_displs[p] = static_cast<int>(p) * mine;
    DSV4_MPI_CHECK(MPI_Alltoallv(send, chunk_bytes.data(), chunk_displs.data(), MPI_BYTE, gathered.data(),
                                 mine_counts.data(), mine_displs.data(), MPI_BYTE, comm_));
    std::vector<std::byte> reduced(static_cast<size_t>(mine));
    reduce_blocks(gathered.data(), static_cast<size_t>(mine), reduced.data(), static_cast<size_t>(mine) / elem, dtype,
                  op);
    DSV4_MPI_CHECK(MPI_Allgatherv(reduced.data(), mine, MPI_BYTE, recv, chunk_bytes.data(), chunk_displs.data(),
                                  MPI_BYTE, comm_));
  }

  void all_gather(const void* send, void* recv, size_t count_per_rank, DType dtype, Stream stream) override {
    const size_t bytes = count_per_rank * comm_element_size(dtype);
    begin("all_gather", stream, bytes * size_);
    std::vector<std::byte> staged;
    if (overlaps(send, bytes, recv, bytes * size_)) {
      staged.assign(static_cast<const std::byte*>(send), static_cast<const std::byte*>(send) + bytes);
      send = staged.data();
    }
    const int count = mpi_count(bytes, "all_gather");
    DSV4_MPI_CHECK(MPI_Allgather(send, count, MPI_BYTE, recv, count, MPI_BYTE, comm_));
  }

  void reduce_scatter(const void* send, void* recv, size_t count_per_rank, DType dtype, ReduceOp op,
                      Stream stream) override {
    check_reducible(dtype, "reduce_scatter");
    const size_t bytes = count_per_rank * comm_element_size(dtype);
    begin("reduce_scatter", stream, bytes * size_);
    std::vector<std::byte> gathered(bytes * size_);
    const int count = mpi_count(bytes, "reduce_scatter");
    DSV4_MPI_CHECK(MPI_Alltoall(send, count, MPI_BYTE, gathered.data(), count, MPI_BYTE, comm_));
    reduce_blocks(gathered.data(), bytes, recv, count_per_rank, dtype, op);
  }

  void all_to_all_v(const AllToAllVArgs& args, Stream stream) override {
    const size_t elem = comm_element_size(args.dtype);
    const size_t n = static_cast<size_t>(size_);
    DSV4_CHECK_ARG(args.send_counts.size() == n && args.send_displs.size() == n && args.recv_counts.size() == n &&
                   args.recv_displs.size() == n)
        << "all_to_all_v: counts and displacements need " << n << " entries each";
    size_t recv_bytes = 0;
    for (size_t c : args.recv_counts) recv_bytes += c * elem;
    begin("all_to_all_v", stream, recv_bytes);
    std::vector<int> sc(n), sd(n), rc(n), rd(n);
    for (size_t p = 0; p < n; ++p) {
      sc[p] = mpi_count(args.send_counts[p] * elem, "all_to_all_v");
      sd[p] = mpi_count(args.send_displs[p] * elem, "all_to_all_v");
      rc[p] = mpi_count(args.recv_counts[p] * elem, "all_to_all_v");
      rd[p] = mpi_count(args.recv_displs[p] * elem, "all_to_all_v");
    }
    DSV4_MPI_CHECK(MPI_Alltoallv(args.send, sc.data(), sd.data(), MPI_BYTE, args.recv, rc.data(), rd.data(), MPI_BYTE,
                                 comm_));
  }

  void broadcast(void* buf, size_t count, DType dtype, int root, Stream stream) override {
    DSV4_CHECK_ARG(root >= 0 && root < size_) << "broadcast root " << root << " of " << size_ << " ranks";
    const size_t bytes = count * comm_element_size(dtype);
    begin("broadcast", stream, bytes);
    DSV4_MPI_CHECK(MPI_Bcast(buf, mpi_count(bytes, "broadcast"), MPI_BYTE, root, comm_));
  }

  void send(const void* buf, size_t count, DType dtype, int peer, Stream stream) override {
    check_peer(peer, "send");
    const size_t bytes = count * comm_element_size(dtype);
    begin("send", stream, bytes);
    DSV4_MPI_CHECK(
        MPI_Send(buf, mpi_count(bytes, "send"), MPI_BYTE, peer, static_cast<int>(MpiTag::kSendRecv), comm_));
  }

  void recv(void* buf, size_t count, DType dtype, int peer, Stream stream) override {
    check_peer(peer, "recv");
    const size_t bytes = count * comm_element_size(dtype);
    begin("recv", stream, bytes);
    MPI_Status status;
    // A longer matching send is MPI_ERR_TRUNCATE (reported below); a shorter one is caught by the count check.
    const int rc = MPI_Recv(buf, mpi_count(bytes, "recv"), MPI_BYTE, peer, static_cast<int>(MpiTag::kSendRecv),
                            comm_, &status);
    DSV4_CHECK_ARG(rc != MPI_ERR_TRUNCATE) << "recv from rank " << peer << ": the matching send is longer than "
                                           << bytes << " bytes";
    DSV4_MPI_CHECK(rc);
    int received = 0;
    DSV4_MPI_CHECK(MPI_Get_count(&status, MPI_BYTE, &received));
    DSV4_CHECK_ARG(static_cast<size_t>(received) == bytes)
        << "recv from rank " << peer << ": expected " << bytes << " bytes, the matching send had " << received;
  }

  std::unique_ptr<Communicator> split(int color, int key) override {
    begin("split", kDefaultStream);
    MPI_Comm child = MPI_COMM_NULL;
    DSV4_MPI_CHECK(MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &child));
    if (child == MPI_COMM_NULL) return nullptr;
    DSV4_MPI_CHECK(MPI_Comm_set_errhandler(child, MPI_ERRORS_RETURN));
    return std::make_unique<MpiCommunicator>(child);
  }

  std::unique_ptr<SharedWindow> make_shared_window(size_t bytes_per_rank) override {
    begin("make_shared_window", kDefaultStream);
    // The members that share memory with this rank, in this communicator's order (key 0 keeps it). The group
    // shares one node iff that set is all of it; then every member sees the full size, else none does.
    MPI_Comm node = MPI_COMM_NULL;
    DSV4_MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    int node_size = 0;
    const int rc = MPI_Comm_size(node, &node_size);
    if (rc != MPI_SUCCESS || node_size != size_) {
      mpi_free_comm(&node);
      DSV4_MPI_CHECK(rc);
      return nullptr;
    }
    DSV4_MPI_CHECK(MPI_Comm_set_errhandler(node, MPI_ERRORS_RETURN));
    // Non-contiguous segments: each starts on its own page, first touched (so placed) by its owner's writes.
    MPI_Info info = MPI_INFO_NULL;
    DSV4_MPI_CHECK(MPI_Info_create(&info));
    MPI_Info_set(info, "alloc_shared_noncontig", "true");
    void* base = nullptr;
    MPI_Win win = MPI_WIN_NULL;
    const auto bytes = static_cast<MPI_Aint>(bytes_per_rank + MpiSharedWindow::kAlign);
    const int alloc_rc = MPI_Win_allocate_shared(bytes, 1, info, node, &base, &win);
    MPI_Info_free(&info);
    if (alloc_rc != MPI_SUCCESS) mpi_free_comm(&node);
    DSV4_MPI_CHECK(alloc_rc);
    MPI_Win_set_errhandler(win, MPI_ERRORS_RETURN);
    return std::make_unique<MpiSharedWindow>(node, win, bytes_per_rank, world_rank_);
  }

  void abort() noexcept override {
    // MPI has no way to unblock only some peers: end the job. mpirun then kills every rank.
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, abort_exit_code());
  }

 private:
  // `bytes`: what this rank receives (for DSV4_COMM_DELAY_MBPS).
  void begin(std::string_view op, Stream stream, size_t bytes = 0) {
    maybe_inject_fault(op, world_rank_);
    maybe_delay_collective(op, size(), bytes);
    synchronize_stream(stream);
  }

  void check_peer(int peer, std::string_view op) const {
    DSV4_CHECK_ARG(peer >= 0 && peer < size_ && peer != rank_)
        << op << ": peer " << peer << " is not another rank of this " << size_ << "-rank communicator";
  }

  // `blocks` holds size_ consecutive blocks of `block_bytes`, one per rank in rank order.
  void reduce_blocks(const std::byte* blocks, size_t block_bytes, void* out, size_t count, DType dtype, ReduceOp op) {
    if (count == 0) return;
    std::vector<const void*> inputs(static_cast<size_t>(size_));
    for (int p = 0; p < size_; ++p) inputs[p] = blocks + p * block_bytes;
    reduce_in_rank_order(inputs.data(), size_, out, count, dtype, op);
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  int world_rank_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(Bootstrap& bootstrap) {
  MPI_Comm comm = mpi_bootstrap_comm(bootstrap);
  DSV4_CHECK_ARG(comm != MPI_COMM_NULL) << "the 'mpi' communicator needs the Bootstrap from make_mpi_bootstrap()";
  return std::make_unique<MpiCommunicator>(mpi_dup_comm(comm));
}

}  // namespace dsv4::parallel::detail
