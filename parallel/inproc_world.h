// Shared state of an in-process world: groups of rank-threads meeting at barriers (internal header).
//
// A collective on an InProcGroup is "publish, barrier, read peers, barrier": each rank publishes pointers
// to its inputs in its slot, waits until every member has, computes its own output by reading the peers'
// inputs (memcpy / rank-ordered reduction), and waits again so that no input is reused or freed while a
// peer still reads it. Point-to-point messages are copied into per-pair mailboxes (sends never block).
//
// Every wait honours the world's timeout and abort flag: an abort wakes all waiters with Error(kRemote);
// a timeout throws Error(kTimeout) on the rank that saw it and aborts the world for the others.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string_view>
#include <tuple>
#include <vector>

#include "parallel/bootstrap.h"

namespace dsv4::parallel::detail {

struct InProcWorldState;

class InProcGroup {
 public:
  InProcGroup(std::shared_ptr<InProcWorldState> world, uint64_t id, int size);

  uint64_t id() const { return id_; }
  int size() const { return size_; }
  InProcWorldState& world() { return *world_; }

  /// Blocks until all members have arrived (or throws kTimeout / kRemote). `what` names the operation.
  /// A barrier that is not `abortable` ignores the world's abort (it still times out): the second barrier
  /// of a collective uses it, because every member is then between the barriers and will arrive, and a
  /// member leaving early would free buffers its peers are still reading.
  void barrier(std::string_view what, bool abortable = true);
  /// Marks the current collective as failed on some member (read by all after its second barrier; the
  /// world is aborted right after, so the flag is never cleared).
  void mark_failed() { failed_.store(true, std::memory_order_release); }
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  /// Per-rank slots read by peers between the two barriers of a collective.
  struct Slot {
    const void* in = nullptr;
    const void* args = nullptr;  // operation-specific (e.g. the AllToAllVArgs of that rank)
    int64_t aux[2] = {0, 0};
  };
  Slot& slot(int rank) { return slots_[static_cast<size_t>(rank)]; }

  /// Buffered point-to-point: copies `bytes` into the (src, dst) mailbox.
  void post(int src, int dst, const void* data, size_t bytes);
  /// Waits for the oldest message of (src, dst) and returns it.
  std::vector<std::byte> take(int src, int dst);

  /// Wakes every waiter (used by the world's abort).
  void notify_all();

 private:
  template <typename Pred>
  void wait(std::unique_lock<std::mutex>& lock, Pred ready, std::string_view what, bool abortable = true);

  std::shared_ptr<InProcWorldState> world_;
  uint64_t id_;
  int size_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> failed_{false};
  int arrived_ = 0;
  uint64_t generation_ = 0;
  std::vector<Slot> slots_;
  std::vector<std::deque<std::vector<std::byte>>> mail_;  // [src * size + dst]
};

struct InProcWorldState : std::enable_shared_from_this<InProcWorldState> {
  InProcWorldState(int size, std::chrono::milliseconds timeout);

  /// The group keyed by `key` (shared by the `members` ranks that ask for it): created by the first caller,
  /// forgotten once all members have taken it.
  std::shared_ptr<InProcGroup> rendezvous_group(std::tuple<uint64_t, uint64_t, int> key, int members);
  void abort() noexcept;
  bool aborted() const { return aborted_.load(std::memory_order_acquire); }

  const int size;
  const std::chrono::milliseconds timeout;
  std::shared_ptr<InProcGroup> bootstrap_group;  // set right after construction

 private:
  std::atomic<bool> aborted_{false};
  std::mutex mu_;
  uint64_t next_group_id_ = 1;
  std::vector<std::weak_ptr<InProcGroup>> groups_;
  struct Pending {
    std::shared_ptr<InProcGroup> group;
    int remaining;
  };
  std::map<std::tuple<uint64_t, uint64_t, int>, Pending> pending_;

  friend class InProcGroup;
  friend std::shared_ptr<InProcWorldState> make_inproc_world_state(int, std::chrono::milliseconds);
  std::shared_ptr<InProcGroup> new_group_locked(int size);
};

std::shared_ptr<InProcWorldState> make_inproc_world_state(int size, std::chrono::milliseconds timeout);

/// The world state and rank behind an in-process Bootstrap, or nullptr for other kinds.
struct InProcBootstrapInfo {
  std::shared_ptr<InProcWorldState> world;
  int rank;
  uint64_t* communicators_created;  // per-rank sequence number keying world communicators
};
bool inproc_bootstrap_info(Bootstrap& bootstrap, InProcBootstrapInfo* info);

}  // namespace dsv4::parallel::detail
