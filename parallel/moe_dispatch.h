// Expert-parallel dispatch and combine over a Communicator (the EP group), host memory.
//
// dispatch: every (token, k) slot whose expert id is not -1 sends a copy of its token's row to the rank
// owning that expert (experts in contiguous blocks: expert e lives on rank e / (num_experts / size)).
// Two all_to_all_v calls: the per-(rank, local expert) row counts, then the rows. The received rows are
// returned grouped by local expert (DeepEP's layout, with num_tokens_per_expert):
//
//   rows = [expert 0 of this rank | expert 1 | ...]; inside one expert: by source rank, then by the
//   source's slot order (token-major, then k).
//
// combine: the caller runs its experts on those rows (same layout, same row count, same dtype), and
// combine sends each result back to its source and accumulates, in the original token order,
//
//   y[t] = sum over k = 0 .. top_k-1 (ascending, skipping -1 slots) of weight[t, k] * result(t, k)
//
// in f32, rounding once to the row dtype. The order of summation is fixed, so the result is bitwise
// identical whatever the number of ranks. Every rank must call both even with zero tokens: they are
// collectives. Rows are F32 or BF16 of width `hidden`.
//
// The rows travel either in one all_to_all_v followed by a regrouping copy, or in one all_to_all_v per
// local expert whose displacements land every block in place, or, when the whole group shares one node,
// through no collective at all: each rank writes its rows straight into their places in the owners'
// segments of a SharedWindow and reads its results back from them in combine (MoeExchange::kShared,
// DeepEP's intranode path on CPU ranks). kAuto takes kShared whenever the window exists, else decides from
// the group-wide row count, which the count exchange carries to every rank, so all ranks make the same
// number of collectives.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "parallel/communicator.h"

namespace dsv4::parallel {

/// How rows travel. All give bitwise identical results; they differ in copies and collective count.
enum class MoeExchange {
  kAuto,       // kShared when the group has a SharedWindow (one node); otherwise kPerExpert when there is one
               // local expert or the average (source, expert) block of the group is at least 32 KiB
               // (prefill-sized batches), else kSingle (decode-sized batches)
  kSingle,     // one all_to_all_v of rows, then a local copy regrouping them by expert (and back in combine)
  kPerExpert,  // one all_to_all_v per local expert, landing rows in place: no regrouping copies
  kShared,     // node-shared window: one all_gather of counts, each row copied once into the owner's segment,
               // combine reads results in place (one copy when expert_out is not result().rows); dispatch
               // throws kUnsupported when the group has no window (several hosts, device backends)
};

/// "auto", "single", "per-expert", "shared".
const char* moe_exchange_name(MoeExchange exchange);

struct MoeDispatchConfig {
  int num_experts = 0;  // routed experts over the whole EP group; divisible by the group size
  int64_t hidden = 0;   // row width in elements
  DType dtype = DType::kBF16;  // F32 or BF16
  MoeExchange exchange = MoeExchange::kAuto;  // must be the same on every rank (it sets the collective count)
};

/// One rank's routed tokens (host memory, row-major).
struct MoeDispatchInput {
  int64_t num_tokens = 0;
  int top_k = 0;
  const int32_t* expert_ids = nullptr;  // [num_tokens, top_k]; -1 = slot unused
  const void* x = nullptr;              // [num_tokens, hidden] of config.dtype
};

/// What dispatch returns: the received rows and what combine needs to send results back. Owned by the
/// MoeDispatcher and valid until its next dispatch.
struct MoeDispatchResult {
  const std::byte* rows = nullptr;             // [num_rows, hidden] of config.dtype, grouped by local expert
  int64_t num_rows = 0;
  std::vector<int64_t> num_tokens_per_expert;  // per local expert (rows, counting a token once per slot)
  std::vector<int64_t> expert_offsets;         // first row of each local expert; size local experts + 1
  int first_local_expert = 0;

  // Routing plan (for combine).
  int64_t num_tokens = 0;
  int top_k = 0;
  std::vector<int64_t> slot_to_send_row;  // [num_tokens * top_k]: row in the send order, -1 for unused slots
  std::vector<size_t> send_rows;           // rows sent to each rank
  std::vector<size_t> recv_rows;           // rows received from each rank
  std::vector<int64_t> recv_counts;        // [size, local experts]: rows from each source for each local expert
};

/// Dispatch/combine over one EP communicator, reusing its staging buffers from call to call (fresh
/// allocations of this size cost more in page faults than the copies themselves). Not thread-safe; one
/// per EP group and stream.
class MoeDispatcher {
 public:
  /// Validates the config against the group (experts divisible by its size, F32/BF16 rows).
  MoeDispatcher(Communicator& ep, const MoeDispatchConfig& config);

  /// Sends rows to the owners of their experts; see the file comment for the layout.
  const MoeDispatchResult& dispatch(const MoeDispatchInput& input, Stream stream = kDefaultStream);

  /// Returns expert results to their tokens for the last dispatch: `expert_out` has num_rows rows in the
  /// dispatched layout (it may be result().rows itself); `weights` is [num_tokens, top_k] f32; `y` is
  /// [num_tokens, hidden] of config.dtype (tokens with no used slot get zeros).
  void combine(const void* expert_out, const float* weights, void* y, Stream stream = kDefaultStream);

  const MoeDispatchResult& result() const { return result_; }
  const MoeDispatchConfig& config() const { return config_; }
  /// The exchange the last dispatch used (never kAuto; kAuto before the first dispatch).
  MoeExchange last_exchange() const { return used_; }

 private:
  /// Grow-only byte storage that is never zero-filled.
  class Workspace {
   public:
    std::byte* get(size_t bytes);

   private:
    std::unique_ptr<std::byte[]> data_;
    size_t size_ = 0;
  };

  Communicator& ep_;
  MoeDispatchConfig config_;
  int local_experts_;
  size_t row_bytes_;
  MoeDispatchResult result_;
  bool dispatched_ = false;
  MoeExchange used_ = MoeExchange::kAuto;  // the exchange the last dispatch used (combine mirrors it)
  std::vector<int64_t> send_counts_;     // [size * local experts] rows per (destination, expert) = per expert id
  std::vector<int64_t> send_start_;      // first send row of each (destination, expert) block
  std::vector<int64_t> grouped_start_;   // [size * local experts]: first grouped row of each (source, expert)
  Workspace send_, recv_, rows_, by_source_, returned_;

  // kShared. Segment layout: [header | rows region | output region], both regions window_rows_bytes_.
  void dispatch_shared(const MoeDispatchInput& input, Stream stream);
  void combine_shared(const void* expert_out, const float* weights, void* y);
  std::unique_ptr<SharedWindow> window_;  // null: not probed yet, not available, or not wanted
  bool window_probed_ = false;
  bool combined_ = false;                 // combine already ran for the last (shared) dispatch
  size_t window_rows_bytes_ = 0;
  std::vector<int64_t> count_matrix_;    // [source, expert id]: every rank's send_counts_
  std::vector<int64_t> remote_start_;    // [expert id]: first row of this rank's block in the owner's layout
  std::vector<int32_t> slot_owner_;      // [slot]: rank owning the slot's expert (-1 unused)
  std::vector<int64_t> slot_row_;        // [slot]: the slot's row in its owner's layout
};

}  // namespace dsv4::parallel
