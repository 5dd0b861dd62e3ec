// The paged sequence-state pool (issue 5): every byte of per-sequence decode state the CPU model holds is
// either a fixed-size page of this pool (the growing compressed rows and indexer rows, in RowStores) or a
// fixed buffer charged to it at its exact size (the raw window ring and the fp32 compressor windows, which
// are heap vectors of a size known when the sequence opens). One byte budget covers both, so admission by
// bytes is admission by the memory a sequence really holds.
//
// Accounting unit: a sequence opened with open() gets an id; pages and charges are booked to it; close()
// releases its reservation and charges (its pages must have been returned first: RowStore does that in its
// destructor, and StateAccount closes after the state's stores are gone).
//
// Admission: a sequence may reserve bytes at open() (the planner's bytes for its longest possible length,
// runtime/kv/cpu_state_bytes.h). The pool commits max(reserved, used) per sequence, so a sequence that stays
// inside its reservation never fails an allocation, and open() refuses (kResourceExhausted) a reservation
// the uncommitted budget cannot cover. A budget of kUnlimitedStateBudget never refuses.
//
// Thread safety: every member function of StatePool may be called from several threads (one mutex). A
// RowStore is not thread-safe; it belongs to one sequence, which the model updates from one thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace dsv4 {

/// Page size of a pool made without options (64 KiB: 32 rows of a 512-wide fp32 head, 128 of a 128-wide one).
inline constexpr int64_t kDefaultStatePageBytes = int64_t{64} * 1024;
/// budget_bytes value of a pool that never refuses.
inline constexpr int64_t kUnlimitedStateBudget = -1;

struct StatePoolOptions {
  /// Bytes of one page: a multiple of 64 (pages are 64-byte aligned), at least 64.
  int64_t page_bytes = kDefaultStatePageBytes;
  /// Bytes all sequences may commit together (pages x page_bytes + charged fixed buffers), or
  /// kUnlimitedStateBudget.
  int64_t budget_bytes = kUnlimitedStateBudget;
};

/// What one sequence holds, or the whole pool.
struct StateUsage {
  int64_t pages = 0;           // pages in use
  int64_t page_bytes = 0;      // pages x page size
  int64_t fixed_bytes = 0;     // charged fixed buffers
  int64_t reserved_bytes = 0;  // reservations (admission)
  int64_t committed = 0;       // counted against the budget: max(reserved, held) per sequence (summed)
  /// Bytes held: pages plus fixed buffers.
  int64_t bytes() const { return page_bytes + fixed_bytes; }
};

class StatePool {
 public:
  /// Throws Error(kInvalidArgument) for a page size that is not a positive multiple of 64 or a negative budget
  /// other than kUnlimitedStateBudget.
  explicit StatePool(StatePoolOptions options = {});
  /// Frees every page. Sequences still open or pages still out are a bug of the caller: logged, not thrown.
  ~StatePool();
  StatePool(const StatePool&) = delete;
  StatePool& operator=(const StatePool&) = delete;

  int64_t page_bytes() const { return options_.page_bytes; }
  /// kUnlimitedStateBudget when unlimited.
  int64_t budget_bytes() const { return options_.budget_bytes; }
  bool unlimited() const { return options_.budget_bytes < 0; }

  /// Whether a new sequence reserving `bytes` would be admitted now (the budget minus what is committed).
  bool can_admit(int64_t bytes) const;
  /// Opens a sequence that reserves `reserve_bytes` (>= 0). Throws Error(kResourceExhausted) saying how much
  /// is committed and free when the reservation does not fit.
  int64_t open(int64_t reserve_bytes = 0);
  /// Releases the sequence's reservation and charges. Throws Error(kInternal) for an unknown id or when the
  /// sequence still holds pages (return them first).
  void close(int64_t sequence);

  /// A page of page_bytes() bytes (64-byte aligned, contents undefined) booked to `sequence`. Throws
  /// Error(kResourceExhausted) when the sequence is past its reservation and the budget is full.
  void* allocate_page(int64_t sequence);
  /// Returns a page booked to `sequence` (kInternal if it is not one of its pages).
  void free_page(int64_t sequence, void* page);
  /// Books `bytes` of a fixed buffer the caller allocated itself (kResourceExhausted as allocate_page).
  void charge(int64_t sequence, int64_t bytes);
  /// Returns a charge (at most what was charged).
  void uncharge(int64_t sequence, int64_t bytes);

  /// One sequence's usage (kInternal for an unknown id).
  StateUsage usage(int64_t sequence) const;
  /// The whole pool: pages in use, bytes held, reserved and committed over all open sequences.
  StateUsage total() const;
  /// Highest total().bytes() since the pool was made.
  int64_t high_water_bytes() const;
  /// Budget minus committed bytes (INT64_MAX when unlimited).
  int64_t available_bytes() const;
  /// Open sequences.
  int64_t sequences() const;
  /// Freed pages kept for reuse (allocated from the system, not in use).
  int64_t cached_pages() const;
  /// Gives the cached pages back to the system.
  void trim();

 private:
  struct Account {
    int64_t reserved = 0;
    int64_t pages = 0;
    int64_t fixed = 0;
    int64_t held(int64_t page_bytes) const { return pages * page_bytes + fixed; }
    int64_t committed(int64_t page_bytes) const { return std::max(reserved, held(page_bytes)); }
  };
  Account& account(int64_t sequence);  // caller holds mu_
  const Account& account(int64_t sequence) const;
  // Throws kResourceExhausted unless `a` can grow by `bytes` of held state.
  void check_growth(int64_t sequence, const Account& a, int64_t bytes, const char* what) const;
  void note_high_water();

  StatePoolOptions options_;
  mutable std::mutex mu_;
  std::unordered_map<int64_t, Account> accounts_;
  std::unordered_map<void*, int64_t> owner_;  // page -> sequence, for pages in use
  std::vector<void*> free_pages_;
  int64_t next_id_ = 1;
  int64_t pages_in_use_ = 0;
  int64_t fixed_bytes_ = 0;
  int64_t committed_ = 0;  // sum of Account::committed
  int64_t high_water_ = 0;
};

/// An open sequence of a pool, closed when destroyed (move-only). Made without a pool it owns a private,
/// unlimited pool of default pages: state made that way works as before and still reports its bytes.
class StateAccount {
 public:
  /// An account with no pool (valid() false).
  StateAccount() = default;
  /// Opens a sequence of `pool` (which must outlive the account) reserving `reserve_bytes`; pool == nullptr
  /// makes a private unlimited pool. Throws as StatePool::open.
  explicit StateAccount(StatePool* pool, int64_t reserve_bytes = 0);
  ~StateAccount();
  StateAccount(StateAccount&& other) noexcept;
  StateAccount& operator=(StateAccount&& other) noexcept;
  StateAccount(const StateAccount&) = delete;
  StateAccount& operator=(const StateAccount&) = delete;

  bool valid() const { return pool_ != nullptr; }
  StatePool* pool() const { return pool_; }
  int64_t id() const { return id_; }
  /// Bytes this sequence holds in its pool (pages + fixed buffers); 0 when not valid.
  int64_t held_bytes() const;

 private:
  void release() noexcept;
  std::unique_ptr<StatePool> owned_;  // the private pool, if any
  StatePool* pool_ = nullptr;
  int64_t id_ = 0;
};

/// Rows of `dim` floats in pool pages: rows_per_page() rows per page, a row never straddles two pages, so a
/// kernel reads row i at pages()[i / rows_per_page()] + (i % rows_per_page()) * dim. Rows are appended and
/// never removed (until clear()); pages go back to the pool on clear() and destruction. Move-only.
class RowStore {
 public:
  RowStore() = default;
  /// Binds to sequence `sequence` of `pool` (which must outlive the store). Throws Error(kInvalidArgument)
  /// when a row of `dim` floats does not fit in one page.
  RowStore(StatePool* pool, int64_t sequence, int64_t dim);
  ~RowStore();
  RowStore(RowStore&& other) noexcept;
  RowStore& operator=(RowStore&& other) noexcept;
  RowStore(const RowStore&) = delete;
  RowStore& operator=(const RowStore&) = delete;

  /// Appends one row copied from `row` (dim floats).
  void append(const float* row);
  /// Appends one row and returns it for the caller to fill (contents undefined until written).
  float* append_row();
  /// Makes room for `rows` rows in total now (pages allocated up front), so appends up to that size cannot
  /// fail. Throws Error(kResourceExhausted) from the pool, with the rows already stored unchanged.
  void reserve(int64_t rows);
  /// Returns every page; size() becomes 0.
  void clear();

  const float* row(int64_t i) const { return pages_[i / rows_per_page_] + (i % rows_per_page_) * dim_; }
  float* mutable_row(int64_t i) { return pages_[i / rows_per_page_] + (i % rows_per_page_) * dim_; }
  int64_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  int64_t dim() const { return dim_; }
  int64_t rows_per_page() const { return rows_per_page_; }
  /// Page table: num_pages() entries (the last ones may be reserved, not yet filled).
  const float* const* pages() const { return pages_.data(); }
  int64_t num_pages() const { return static_cast<int64_t>(pages_.size()); }
  /// Rows that fit in the pages held.
  int64_t capacity() const { return num_pages() * rows_per_page_; }

 private:
  void release() noexcept;
  StatePool* pool_ = nullptr;
  int64_t sequence_ = 0;
  int64_t dim_ = 0;
  int64_t rows_per_page_ = 1;
  int64_t size_ = 0;
  std::vector<float*> pages_;
};

}  // namespace dsv4
