// In-process communicator: N rank-threads of one process, host memory, memcpy and rank-ordered reductions.
//
// Each collective is "publish, barrier, read peers, barrier" over an InProcGroup (see inproc_world.h).
// A failure between the two barriers (e.g. mismatched all_to_all_v counts) is rethrown after the second
// barrier and aborts the world; the peers of that collective throw kRemote (see collective()).
#include <algorithm>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <numeric>
#include <vector>

#include "parallel/backends.h"
#include "parallel/fault_inject.h"
#include "parallel/inproc_world.h"
#include "parallel/reduce.h"
#include "runtime/core/error.h"

namespace dsv4::parallel::detail {
namespace {

bool overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  auto pa = reinterpret_cast<uintptr_t>(a);
  auto pb = reinterpret_cast<uintptr_t>(b);
  return a_bytes && b_bytes && pa < pb + b_bytes && pb < pa + a_bytes;
}

/// One heap block per rank-thread. Every member's window holds every block, so a block lives until the last
/// window that can reach it is gone: no member frees memory a peer may still read, with no barrier in the
/// destructor (which could not report an aborted world). fence() is the group's barrier, whose mutex orders
/// the accesses before it on every member before the accesses after it.
class InProcSharedWindow final : public SharedWindow {
 public:
  using Block = std::shared_ptr<std::byte[]>;

  InProcSharedWindow(std::shared_ptr<InProcGroup> group, int rank, size_t bytes, std::vector<Block> blocks)
      : group_(std::move(group)), rank_(rank), bytes_(bytes), blocks_(std::move(blocks)) {}

  /// A 64-byte aligned block of `bytes` (at least 1), not initialised.
  static Block allocate(size_t bytes) {
    constexpr std::align_val_t kAlign{64};
    auto* data = static_cast<std::byte*>(::operator new[](std::max<size_t>(bytes, 1), kAlign));
    return Block(data, [](std::byte* p) { ::operator delete[](p, kAlign); });
  }

  int rank() const override { return rank_; }
  int size() const override { return group_->size(); }
  size_t capacity() const override { return bytes_; }
  std::byte* segment(int rank) override {
    DSV4_CHECK_ARG(rank >= 0 && rank < size()) << "shared window: no segment " << rank << " of " << size();
    return blocks_[static_cast<size_t>(rank)].get();
  }
  void fence() override {
    maybe_inject_fault("window_fence", rank_);
    maybe_delay_collective("window_fence", size(), 0);
    group_->barrier("window_fence");
  }

 private:
  std::shared_ptr<InProcGroup> group_;
  int rank_;
  size_t bytes_;
  std::vector<Block> blocks_;
};

class InProcCommunicator final : public Communicator {
 public:
  InProcCommunicator(std::shared_ptr<InProcGroup> group, int rank) : group_(std::move(group)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return group_->size(); }
  std::string_view backend_name() const override { return "inproc"; }

  void all_reduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op, Stream stream) override {
    check_reducible(dtype, "all_reduce");
    const size_t bytes = count * comm_element_size(dtype);
    begin("all_reduce", stream);
    const void* in = stage_if_overlapping(send, bytes, recv, bytes);
    collective("all_reduce", in, nullptr, [&] {
      std::vector<const void*> inputs(static_cast<size_t>(size()));
      for (int p = 0; p < size(); ++p) inputs[p] = group_->slot(p).in;
      if (count) reduce_in_rank_order(inputs.data(), size(), recv, count, dtype, op);
    });
  }

  void all_gather(const void* send, void* recv, size_t count_per_rank, DType dtype, Stream stream) override {
    const size_t bytes = count_per_rank * comm_element_size(dtype);
    begin("all_gather", stream);
    const void* in = stage_if_overlapping(send, bytes, recv, bytes * size());
    collective("all_gather", in, nullptr, [&] {
      for (int p = 0; p < size(); ++p)
        if (bytes) std::memcpy(static_cast<std::byte*>(recv) + p * bytes, group_->slot(p).in, bytes);
    });
  }

  void reduce_scatter(const void* send, void* recv, size_t count_per_rank, DType dtype, ReduceOp op,
                      Stream stream) override {
    check_reducible(dtype, "reduce_scatter");
    const size_t bytes = count_per_rank * comm_element_size(dtype);
    begin("reduce_scatter", stream);
    const void* in = stage_if_overlapping(send, bytes * size(), recv, bytes);
    collective("reduce_scatter", in, nullptr, [&] {
      std::vector<const void*> inputs(static_cast<size_t>(size()));
      for (int p = 0; p < size(); ++p) inputs[p] = static_cast<const std::byte*>(group_->slot(p).in) + rank_ * bytes;
      if (count_per_rank) reduce_in_rank_order(inputs.data(), size(), recv, count_per_rank, dtype, op);
    });
  }

  void all_to_all_v(const AllToAllVArgs& args, Stream stream) override {
    const size_t elem = comm_element_size(args.dtype);
    const size_t n = static_cast<size_t>(size());
    DSV4_CHECK_ARG(args.send_counts.size() == n && args.send_displs.size() == n && args.recv_counts.size() == n &&
                   args.recv_displs.size() == n)
        << "all_to_all_v: counts and displacements need " << n << " entries each";
    begin("all_to_all_v", stream);
    size_t send_extent = 0, recv_extent = 0;
    for (size_t p = 0; p < n; ++p) {
      if (args.send_counts[p]) send_extent = std::max(send_extent, (args.send_displs[p] + args.send_counts[p]) * elem);
      if (args.recv_counts[p]) recv_extent = std::max(recv_extent, (args.recv_displs[p] + args.recv_counts[p]) * elem);
    }
    const void* in = stage_if_overlapping(args.send, send_extent, args.recv, recv_extent);
    collective("all_to_all_v", in, &args, [&] {
      for (int p = 0; p < size(); ++p) {
        const auto& peer = *static_cast<const AllToAllVArgs*>(group_->slot(p).args);
        const size_t count = peer.send_counts[rank_];
        DSV4_CHECK_ARG(count == args.recv_counts[p])
            << "all_to_all_v: rank " << p << " sends " << count << " elements to rank " << rank_ << ", which expects "
            << args.recv_counts[p];
        DSV4_CHECK_ARG(peer.dtype == args.dtype) << "all_to_all_v: ranks disagree on the dtype";
        if (count)
          std::memcpy(static_cast<std::byte*>(args.recv) + args.recv_displs[p] * elem,
                      static_cast<const std::byte*>(group_->slot(p).in) + peer.send_displs[rank_] * elem, count * elem);
      }
    });
  }

  void broadcast(void* buf, size_t count, DType dtype, int root, Stream stream) override {
    DSV4_CHECK_ARG(root >= 0 && root < size()) << "broadcast root " << root << " of " << size() << " ranks";
    const size_t bytes = count * comm_element_size(dtype);
    begin("broadcast", stream);
    collective("broadcast", buf, nullptr, [&] {
      if (rank_ != root && bytes) std::memcpy(buf, group_->slot(root).in, bytes);
    });
  }

  void send(const void* buf, size_t count, DType dtype, int peer, Stream stream) override {
    check_peer(peer, "send");
    begin("send", stream);
    group_->post(rank_, peer, buf, count * comm_element_size(dtype));
  }

  void recv(void* buf, size_t count, DType dtype, int peer, Stream stream) override {
    check_peer(peer, "recv");
    const size_t bytes = count * comm_element_size(dtype);
    begin("recv", stream);
    std::vector<std::byte> message = group_->take(peer, rank_);
    DSV4_CHECK_ARG(message.size() == bytes)
        << "recv from rank " << peer << ": expected " << bytes << " bytes, the matching send had " << message.size();
    if (bytes) std::memcpy(buf, message.data(), bytes);
  }

  std::unique_ptr<Communicator> split(int color, int key) override {
    begin("split", kDefaultStream);
    const uint64_t sequence = splits_++;
    std::vector<std::pair<int, int>> members;  // (key, old rank) of my color
    InProcGroup::Slot& mine = group_->slot(rank_);
    mine.aux[0] = color;
    mine.aux[1] = key;
    std::shared_ptr<InProcGroup> child;
    int child_rank = -1;
    collective("split", nullptr, nullptr, [&] {
      if (color < 0) return;
      for (int p = 0; p < size(); ++p)
        if (group_->slot(p).aux[0] == color) members.emplace_back(static_cast<int>(group_->slot(p).aux[1]), p);
      std::sort(members.begin(), members.end());
      child_rank = static_cast<int>(std::find(members.begin(), members.end(), std::make_pair(key, rank_)) -
                                    members.begin());
      child = group_->world().rendezvous_group({group_->id(), sequence, color}, static_cast<int>(members.size()));
    });
    if (!child) return nullptr;
    return std::make_unique<InProcCommunicator>(std::move(child), child_rank);
  }

  std::unique_ptr<SharedWindow> make_shared_window(size_t bytes_per_rank) override {
    begin("make_shared_window", kDefaultStream);
    // Threads of one process always share memory: publish this rank's block, take a reference to every one.
    const InProcSharedWindow::Block mine = InProcSharedWindow::allocate(bytes_per_rank);
    std::vector<InProcSharedWindow::Block> blocks(static_cast<size_t>(size()));
    collective("make_shared_window", &mine, &bytes_per_rank, [&] {
      for (int p = 0; p < size(); ++p) {
        const size_t peer_bytes = *static_cast<const size_t*>(group_->slot(p).args);
        DSV4_CHECK_ARG(peer_bytes == bytes_per_rank)
            << "make_shared_window: rank " << p << " asked for " << peer_bytes << " bytes per segment, rank "
            << rank_ << " for " << bytes_per_rank << " (must be the same on every rank)";
        blocks[p] = *static_cast<const InProcSharedWindow::Block*>(group_->slot(p).in);
      }
    });
    return std::make_unique<InProcSharedWindow>(group_, rank_, bytes_per_rank, std::move(blocks));
  }

  void abort() noexcept override { group_->world().abort(); }

 private:
  void begin(std::string_view op, Stream stream) {
    maybe_inject_fault(op, rank_);
    maybe_delay_collective(op, size(), 0);
    synchronize_stream(stream);
  }

  void check_peer(int peer, std::string_view op) const {
    DSV4_CHECK_ARG(peer >= 0 && peer < size() && peer != rank_)
        << op << ": peer " << peer << " is not another rank of this " << size() << "-rank communicator";
  }

  // In-place and overlapping calls: peers read our input while we write our output, so copy the input aside.
  const void* stage_if_overlapping(const void* in, size_t in_bytes, const void* out, size_t out_bytes) {
    if (!overlaps(in, in_bytes, out, out_bytes)) return in;
    staging_.resize(in_bytes);
    std::memcpy(staging_.data(), in, in_bytes);
    return staging_.data();
  }

  // Publish, barrier, body (reads peers), barrier. A failing body still reaches the second barrier so
  // that no member frees its buffers while a peer reads them; after it, the failing member aborts the
  // world and rethrows, and every other member throws kRemote (its output may be incomplete).
  template <typename Body>
  void collective(std::string_view what, const void* in, const void* args, Body body) {
    InProcGroup::Slot& mine = group_->slot(rank_);
    mine.in = in;
    mine.args = args;
    group_->barrier(what);
    std::exception_ptr error;
    try {
      body();
    } catch (...) {
      error = std::current_exception();
      group_->mark_failed();
    }
    group_->barrier(what, /*abortable=*/false);
    if (error) {
      group_->world().abort();
      std::rethrow_exception(error);
    }
    DSV4_CHECK_CODE(!group_->failed(), ErrorCode::kRemote) << "in-process " << what << ": a peer rank failed in it";
  }

  std::shared_ptr<InProcGroup> group_;
  int rank_;
  uint64_t splits_ = 0;
  std::vector<std::byte> staging_;
};

}  // namespace

std::unique_ptr<Communicator> make_inproc_communicator(Bootstrap& bootstrap) {
  InProcBootstrapInfo info;
  DSV4_CHECK_ARG(inproc_bootstrap_info(bootstrap, &info))
      << "the 'inproc' communicator needs the Bootstrap of an InProcWorld";
  const uint64_t sequence = (*info.communicators_created)++;
  auto group = info.world->rendezvous_group({0, sequence, 0}, info.world->size);
  // All ranks hold the group before any uses it; the bootstrap barrier also orders creation across calls.
  bootstrap.barrier();
  return std::make_unique<InProcCommunicator>(std::move(group), info.rank);
}

}  // namespace dsv4::parallel::detail
