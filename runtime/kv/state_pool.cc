#include "runtime/kv/state_pool.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <new>
#include <utility>

#include "runtime/core/error.h"
#include "runtime/core/logging.h"

namespace dsv4 {
namespace {

constexpr int64_t kPageAlign = 64;  // a cache line: SIMD loads of a row never split a line at its start

}  // namespace

StatePool::StatePool(StatePoolOptions options) : options_(options) {
  DSV4_CHECK_ARG(options_.page_bytes >= kPageAlign && options_.page_bytes % kPageAlign == 0)
      << "state pool: page size must be a positive multiple of " << kPageAlign << " bytes, got "
      << options_.page_bytes;
  DSV4_CHECK_ARG(options_.budget_bytes >= 0 || options_.budget_bytes == kUnlimitedStateBudget)
      << "state pool: budget must be >= 0 bytes (or unlimited), got " << options_.budget_bytes;
}

StatePool::~StatePool() {
  if (!accounts_.empty() || pages_in_use_ != 0) {
    DSV4_LOG(ERROR) << "state pool destroyed with " << accounts_.size() << " open sequence(s) and " << pages_in_use_
                    << " page(s) in use";
  }
  for (void* p : free_pages_) std::free(p);
  for (auto& [page, owner] : owner_) std::free(page);
}

StatePool::Account& StatePool::account(int64_t sequence) {
  auto it = accounts_.find(sequence);
  DSV4_CHECK(it != accounts_.end()) << "state pool: unknown sequence " << sequence;
  return it->second;
}

const StatePool::Account& StatePool::account(int64_t sequence) const {
  auto it = accounts_.find(sequence);
  DSV4_CHECK(it != accounts_.end()) << "state pool: unknown sequence " << sequence;
  return it->second;
}

void StatePool::check_growth(int64_t sequence, const Account& a, int64_t bytes, const char* what) const {
  if (unlimited()) return;
  // Growth inside the reservation is already committed; only the part beyond it needs free budget.
  const int64_t pb = options_.page_bytes;
  const int64_t extra = std::max<int64_t>(0, a.held(pb) + bytes - a.committed(pb));
  DSV4_CHECK_CODE(committed_ + extra <= options_.budget_bytes, ErrorCode::kResourceExhausted)
      << "sequence state pool exhausted: " << what << " of " << bytes << " bytes for sequence " << sequence
      << " (holding " << a.held(pb) << ", reserved " << a.reserved << ") needs " << extra
      << " more bytes; committed " << committed_ << " of a budget of " << options_.budget_bytes << " bytes";
}

void StatePool::note_high_water() {
  high_water_ = std::max(high_water_, pages_in_use_ * options_.page_bytes + fixed_bytes_);
}

bool StatePool::can_admit(int64_t bytes) const {
  std::lock_guard<std::mutex> lock(mu_);
  return unlimited() || committed_ + std::max<int64_t>(0, bytes) <= options_.budget_bytes;
}

int64_t StatePool::open(int64_t reserve_bytes) {
  DSV4_CHECK_ARG(reserve_bytes >= 0) << "state pool: reservation must be >= 0 bytes, got " << reserve_bytes;
  std::lock_guard<std::mutex> lock(mu_);
  DSV4_CHECK_CODE(unlimited() || committed_ + reserve_bytes <= options_.budget_bytes, ErrorCode::kResourceExhausted)
      << "sequence state pool cannot admit a sequence reserving " << reserve_bytes << " bytes: committed "
      << committed_ << " of a budget of " << options_.budget_bytes << " bytes ("
      << options_.budget_bytes - committed_ << " free)";
  const int64_t id = next_id_++;
  Account& a = accounts_[id];
  a.reserved = reserve_bytes;
  committed_ += reserve_bytes;
  return id;
}

void StatePool::close(int64_t sequence) {
  std::lock_guard<std::mutex> lock(mu_);
  const Account& a = account(sequence);
  DSV4_CHECK(a.pages == 0) << "state pool: sequence " << sequence << " closed while holding " << a.pages
                           << " page(s)";
  committed_ -= a.committed(options_.page_bytes);
  fixed_bytes_ -= a.fixed;
  accounts_.erase(sequence);
}

void* StatePool::allocate_page(int64_t sequence) {
  std::lock_guard<std::mutex> lock(mu_);
  Account& a = account(sequence);
  check_growth(sequence, a, options_.page_bytes, "a page");
  void* page = nullptr;
  if (!free_pages_.empty()) {
    page = free_pages_.back();
    free_pages_.pop_back();
  } else {
    page = std::aligned_alloc(kPageAlign, static_cast<size_t>(options_.page_bytes));
    DSV4_CHECK_CODE(page != nullptr, ErrorCode::kResourceExhausted)
        << "state pool: the system refused a page of " << options_.page_bytes << " bytes";
  }
  const int64_t before = a.committed(options_.page_bytes);
  ++a.pages;
  committed_ += a.committed(options_.page_bytes) - before;
  ++pages_in_use_;
  owner_.emplace(page, sequence);
  note_high_water();
  return page;
}

void StatePool::free_page(int64_t sequence, void* page) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = owner_.find(page);
  DSV4_CHECK(it != owner_.end() && it->second == sequence)
      << "state pool: page " << page << " is not a page of sequence " << sequence;
  Account& a = account(sequence);
  const int64_t before = a.committed(options_.page_bytes);
  --a.pages;
  committed_ += a.committed(options_.page_bytes) - before;
  --pages_in_use_;
  owner_.erase(it);
  free_pages_.push_back(page);
}

void StatePool::charge(int64_t sequence, int64_t bytes) {
  DSV4_CHECK(bytes >= 0) << "state pool: negative charge " << bytes;
  std::lock_guard<std::mutex> lock(mu_);
  Account& a = account(sequence);
  check_growth(sequence, a, bytes, "fixed buffers");
  const int64_t before = a.committed(options_.page_bytes);
  a.fixed += bytes;
  fixed_bytes_ += bytes;
  committed_ += a.committed(options_.page_bytes) - before;
  note_high_water();
}

void StatePool::uncharge(int64_t sequence, int64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  Account& a = account(sequence);
  DSV4_CHECK(bytes >= 0 && bytes <= a.fixed) << "state pool: uncharge of " << bytes << " bytes from sequence "
                                             << sequence << " which has " << a.fixed << " charged";
  const int64_t before = a.committed(options_.page_bytes);
  a.fixed -= bytes;
  fixed_bytes_ -= bytes;
  committed_ += a.committed(options_.page_bytes) - before;
}

StateUsage StatePool::usage(int64_t sequence) const {
  std::lock_guard<std::mutex> lock(mu_);
  const Account& a = account(sequence);
  StateUsage u;
  u.pages = a.pages;
  u.page_bytes = a.pages * options_.page_bytes;
  u.fixed_bytes = a.fixed;
  u.reserved_bytes = a.reserved;
  u.committed = a.committed(options_.page_bytes);
  return u;
}

StateUsage StatePool::total() const {
  std::lock_guard<std::mutex> lock(mu_);
  StateUsage u;
  u.pages = pages_in_use_;
  u.page_bytes = pages_in_use_ * options_.page_bytes;
  u.fixed_bytes = fixed_bytes_;
  for (const auto& [id, a] : accounts_) u.reserved_bytes += a.reserved;
  u.committed = committed_;
  return u;
}

int64_t StatePool::high_water_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return high_water_;
}

int64_t StatePool::available_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return unlimited() ? std::numeric_limits<int64_t>::max() : options_.budget_bytes - committed_;
}

int64_t StatePool::sequences() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(accounts_.size());
}

int64_t StatePool::cached_pages() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(free_pages_.size());
}

void StatePool::trim() {
  std::lock_guard<std::mutex> lock(mu_);
  for (void* p : free_pages_) std::free(p);
  free_pages_.clear();
}

// ---- StateAccount ----

StateAccount::StateAccount(StatePool* pool, int64_t reserve_bytes) {
  if (pool == nullptr) {
    owned_ = std::make_unique<StatePool>();
    pool = owned_.get();
  }
  id_ = pool->open(reserve_bytes);
  pool_ = pool;
}

StateAccount::~StateAccount() { release(); }

StateAccount::StateAccount(StateAccount&& other) noexcept
    : owned_(std::move(other.owned_)), pool_(std::exchange(other.pool_, nullptr)), id_(std::exchange(other.id_, 0)) {}

StateAccount& StateAccount::operator=(StateAccount&& other) noexcept {
  if (this != &other) {
    release();
    owned_ = std::move(other.owned_);
    pool_ = std::exchange(other.pool_, nullptr);
    id_ = std::exchange(other.id_, 0);
  }
  return *this;
}

void StateAccount::release() noexcept {
  if (pool_ == nullptr) return;
  try {
    pool_->close(id_);
  } catch (const std::exception& e) {
    DSV4_LOG(ERROR) << "closing sequence state: " << e.what();
  }
  pool_ = nullptr;
  owned_.reset();
}

int64_t StateAccount::held_bytes() const { return pool_ == nullptr ? 0 : pool_->usage(id_).bytes(); }

// ---- RowStore ----

RowStore::RowStore(StatePool* pool, int64_t sequence, int64_t dim) : pool_(pool), sequence_(sequence), dim_(dim) {
  DSV4_CHECK(pool_ != nullptr) << "RowStore needs a pool";
  DSV4_CHECK_ARG(dim > 0) << "RowStore: row width must be > 0, got " << dim;
  const int64_t row_bytes = dim * static_cast<int64_t>(sizeof(float));
  rows_per_page_ = pool_->page_bytes() / row_bytes;
  DSV4_CHECK_ARG(rows_per_page_ >= 1) << "RowStore: a row of " << dim << " floats (" << row_bytes
                                      << " bytes) does not fit in a state page of " << pool_->page_bytes()
                                      << " bytes";
}

RowStore::~RowStore() { release(); }

RowStore::RowStore(RowStore&& o) noexcept
    : pool_(std::exchange(o.pool_, nullptr)), sequence_(o.sequence_), dim_(o.dim_), rows_per_page_(o.rows_per_page_),
      size_(std::exchange(o.size_, 0)), pages_(std::move(o.pages_)) {
  o.pages_.clear();
}

RowStore& RowStore::operator=(RowStore&& o) noexcept {
  if (this != &o) {
    release();
    pool_ = std::exchange(o.pool_, nullptr);
    sequence_ = o.sequence_;
    dim_ = o.dim_;
    rows_per_page_ = o.rows_per_page_;
    size_ = std::exchange(o.size_, 0);
    pages_ = std::move(o.pages_);
    o.pages_.clear();
  }
  return *this;
}

void RowStore::release() noexcept {
  if (pool_ != nullptr) {
    for (float* p : pages_) {
      try {
        pool_->free_page(sequence_, p);
      } catch (const std::exception& e) {
        DSV4_LOG(ERROR) << "returning a state page: " << e.what();
      }
    }
  }
  pages_.clear();
  size_ = 0;
}

void RowStore::clear() { release(); }

void RowStore::reserve(int64_t rows) {
  DSV4_CHECK(pool_ != nullptr) << "RowStore::reserve on an unbound store";
  const int64_t need = (rows + rows_per_page_ - 1) / rows_per_page_;
  pages_.reserve(static_cast<size_t>(std::max(need, num_pages())));  // push_back below must not throw
  while (num_pages() < need) pages_.push_back(static_cast<float*>(pool_->allocate_page(sequence_)));
}

float* RowStore::append_row() {
  if (size_ == capacity()) reserve(size_ + 1);
  return mutable_row(size_++);
}

void RowStore::append(const float* row) {
  float* dst = append_row();
  std::copy_n(row, dim_, dst);
}

}  // namespace dsv4
