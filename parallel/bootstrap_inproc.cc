// In-process world: groups, barriers with timeout and abort, and the Bootstrap of each rank-thread.
#include <cstring>
#include <exception>
#include <thread>

#include "parallel/inproc_world.h"
#include "runtime/core/env.h"
#include "runtime/core/error.h"

namespace dsv4::parallel {
namespace detail {

InProcGroup::InProcGroup(std::shared_ptr<InProcWorldState> world, uint64_t id, int size)
    : world_(std::move(world)),
      id_(id),
      size_(size),
      slots_(static_cast<size_t>(size)),
      mail_(static_cast<size_t>(size) * static_cast<size_t>(size)) {}

template <typename Pred>
void InProcGroup::wait(std::unique_lock<std::mutex>& lock, Pred ready, std::string_view what, bool abortable) {
  const auto deadline = std::chrono::steady_clock::now() + world_->timeout;
  while (true) {
    // Readiness first: a barrier that completed before the abort must release every member, or the ones
    // that did leave it would wait for this one at the collective's second (non-abortable) barrier.
    if (ready()) return;
    DSV4_CHECK_CODE(!abortable || !world_->aborted(), ErrorCode::kRemote)
        << "in-process " << what << ": another rank aborted the world";
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && !ready() && (!abortable || !world_->aborted())) {
      // Unlock before aborting: the abort takes every group's mutex, this one included.
      lock.unlock();
      world_->abort();
      DSV4_THROW(kTimeout) << "in-process " << what << " waited more than " << world_->timeout.count()
                           << " ms for a peer (DSV4_COMM_TIMEOUT_S); the world is aborted";
    }
  }
}

void InProcGroup::barrier(std::string_view what, bool abortable) {
  std::unique_lock lock(mu_);
  DSV4_CHECK_CODE(!abortable || !world_->aborted(), ErrorCode::kRemote)
      << "in-process " << what << ": the world was aborted";
  const uint64_t generation = generation_;
  if (++arrived_ == size_) {
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
    return;
  }
  wait(lock, [&] { return generation_ != generation; }, what, abortable);
}

void InProcGroup::post(int src, int dst, const void* data, size_t bytes) {
  std::vector<std::byte> message(bytes);
  if (bytes) std::memcpy(message.data(), data, bytes);
  std::lock_guard lock(mu_);
  DSV4_CHECK_CODE(!world_->aborted(), ErrorCode::kRemote) << "in-process send: the world was aborted";
  mail_[static_cast<size_t>(src) * size_ + dst].push_back(std::move(message));
  cv_.notify_all();
}

std::vector<std::byte> InProcGroup::take(int src, int dst) {
  std::unique_lock lock(mu_);
  auto& box = mail_[static_cast<size_t>(src) * size_ + dst];
  wait(lock, [&] { return !box.empty(); }, "recv");
  std::vector<std::byte> message = std::move(box.front());
  box.pop_front();
  return message;
}

void InProcGroup::notify_all() {
  std::lock_guard lock(mu_);
  cv_.notify_all();
}

InProcWorldState::InProcWorldState(int size_in, std::chrono::milliseconds timeout_in)
    : size(size_in), timeout(timeout_in) {}

std::shared_ptr<InProcGroup> InProcWorldState::new_group_locked(int group_size) {
  auto group = std::make_shared<InProcGroup>(shared_from_this(), next_group_id_++, group_size);
  groups_.push_back(group);
  return group;
}

std::shared_ptr<InProcGroup> InProcWorldState::rendezvous_group(std::tuple<uint64_t, uint64_t, int> key,
                                                                int members) {
  std::lock_guard lock(mu_);
  auto it = pending_.find(key);
  if (it == pending_.end()) it = pending_.emplace(key, Pending{new_group_locked(members), members}).first;
  std::shared_ptr<InProcGroup> group = it->second.group;
  if (--it->second.remaining == 0) pending_.erase(it);
  return group;
}

void InProcWorldState::abort() noexcept {
  aborted_.store(true, std::memory_order_release);
  std::vector<std::shared_ptr<InProcGroup>> live;
  {
    std::lock_guard lock(mu_);
    for (auto& weak : groups_)
      if (auto group = weak.lock()) live.push_back(std::move(group));
  }
  for (auto& group : live) group->notify_all();
}

std::shared_ptr<InProcWorldState> make_inproc_world_state(int size, std::chrono::milliseconds timeout) {
  DSV4_CHECK_ARG(size >= 1) << "in-process world of " << size << " ranks";
  DSV4_CHECK_ARG(timeout.count() > 0) << "in-process world timeout must be positive";
  auto state = std::make_shared<InProcWorldState>(size, timeout);
  std::lock_guard lock(state->mu_);
  state->bootstrap_group = state->new_group_locked(size);
  return state;
}

namespace {

class InProcBootstrap final : public Bootstrap {
 public:
  InProcBootstrap(std::shared_ptr<InProcWorldState> world, int rank) : world_(std::move(world)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return world_->size; }

  void all_gather(const void* mine, void* all, size_t bytes) override {
    InProcGroup& group = *world_->bootstrap_group;
    group.slot(rank_).in = mine;
    group.barrier("bootstrap all_gather");
    for (int p = 0; p < size(); ++p)
      if (bytes) std::memcpy(static_cast<std::byte*>(all) + p * bytes, group.slot(p).in, bytes);
    group.barrier("bootstrap all_gather", /*abortable=*/false);
  }

  void broadcast(void* data, size_t bytes, int root) override {
    DSV4_CHECK_ARG(root >= 0 && root < size()) << "bootstrap broadcast root " << root << " of " << size();
    InProcGroup& group = *world_->bootstrap_group;
    group.slot(rank_).in = data;
    group.barrier("bootstrap broadcast");
    if (rank_ != root && bytes) std::memcpy(data, group.slot(root).in, bytes);
    group.barrier("bootstrap broadcast", /*abortable=*/false);
  }

  void barrier() override { world_->bootstrap_group->barrier("bootstrap barrier"); }

  const std::shared_ptr<InProcWorldState>& world() const { return world_; }
  uint64_t* communicators_created() { return &communicators_created_; }

 private:
  std::shared_ptr<InProcWorldState> world_;
  int rank_;
  uint64_t communicators_created_ = 0;
};

}  // namespace

bool inproc_bootstrap_info(Bootstrap& bootstrap, InProcBootstrapInfo* info) {
  auto* inproc = dynamic_cast<InProcBootstrap*>(&bootstrap);
  if (!inproc) return false;
  *info = InProcBootstrapInfo{inproc->world(), inproc->rank(), inproc->communicators_created()};
  return true;
}

}  // namespace detail

namespace {
std::chrono::milliseconds default_timeout() {
  return std::chrono::seconds(env::get_int(env::kCommTimeoutS, 1, 365LL * 24 * 3600));
}
}  // namespace

InProcWorld::InProcWorld(int size) : InProcWorld(size, default_timeout()) {}
InProcWorld::InProcWorld(int size, std::chrono::milliseconds timeout)
    : state_(detail::make_inproc_world_state(size, timeout)) {}
InProcWorld::~InProcWorld() = default;

int InProcWorld::size() const { return state_->size; }

std::unique_ptr<Bootstrap> InProcWorld::bootstrap(int rank) {
  DSV4_CHECK_ARG(rank >= 0 && rank < state_->size) << "in-process rank " << rank << " of " << state_->size;
  return std::make_unique<detail::InProcBootstrap>(state_, rank);
}

void InProcWorld::abort() noexcept { state_->abort(); }

void run_inproc_ranks(int size, const std::function<void(int, Bootstrap&)>& fn) {
  run_inproc_ranks(size, default_timeout(), fn);
}

void run_inproc_ranks(int size, std::chrono::milliseconds timeout, const std::function<void(int, Bootstrap&)>& fn) {
  InProcWorld world(size, timeout);
  std::vector<std::exception_ptr> errors(static_cast<size_t>(size));
  std::vector<char> remote(static_cast<size_t>(size), 0);  // not vector<bool>: threads write neighbours
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      try {
        auto bootstrap = world.bootstrap(r);
        fn(r, *bootstrap);
      } catch (const Error& e) {
        errors[r] = std::current_exception();
        remote[r] = e.code() == ErrorCode::kRemote;
        world.abort();
      } catch (...) {
        errors[r] = std::current_exception();
        world.abort();
      }
    });
  }
  for (auto& t : threads) t.join();
  // The root cause first: a rank's own failure, not the kRemote errors it caused in its peers.
  for (int r = 0; r < size; ++r)
    if (errors[r] && !remote[r]) std::rethrow_exception(errors[r]);
  for (int r = 0; r < size; ++r)
    if (errors[r]) std::rethrow_exception(errors[r]);
}

}  // namespace dsv4::parallel
