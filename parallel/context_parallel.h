// Context parallelism (CP): the pieces a group of ranks needs to share one long sequence, with no model
// knowledge (the DeepSeek-V4 use is runtime/model/context_parallel_attention.cc).
//
// Layout. Items that grow with the sequence (compressed KV rows, indexer rows) are sharded round robin:
// global item w lives on rank w % P at local index w / P. Round robin keeps every rank's share within one
// item of the others at any length, so a growing sequence never needs rebalancing, and the owner of an
// item is known without any table.
//
// Attention. A softmax over a set of rows that is split across ranks is computed as one partial per rank:
// over its own rows, lse = log(sum_j exp(l_j)) (-inf when the rank has none of the rows) and
// out = sum_j exp(l_j - lse) v_j. The partials merge exactly (up to rounding):
//   M = max_p lse_p;  w_p = exp(lse_p - M);  out = sum_p w_p out_p / sum_p w_p
// The merge runs in rank order 0, 1, ..., P-1 on every rank, so each rank gets bitwise the same result and
// repeated runs are bitwise reproducible. The result is NOT bitwise equal to a one-shot softmax over all
// rows: the sums are reassociated (expect agreement to ~1e-6 relative in f32).
//
// Top-k. A global top-k of scores spread across ranks: each rank keeps its local top-k candidates
// (score, global id); the union of the local top-ks contains the global top-k, so gathering them and
// selecting again gives exactly the set one rank would pick over all scores, provided the order is total:
// higher score first, then lower id (the order used everywhere here; NaN scores are not supported).
#pragma once

#include <chrono>
#include <cstdint>

#include "parallel/communicator.h"
#include "parallel/stream.h"

namespace dsv4::parallel {

/// Round-robin placement of a growing sequence of items over `size` ranks.
struct RoundRobinShard {
  int rank = 0;
  int size = 1;

  bool owns(int64_t global) const { return global % size == rank; }
  int owner(int64_t global) const { return static_cast<int>(global % size); }
  /// Local index of a global item this rank owns.
  int64_t local_index(int64_t global) const { return global / size; }
  int64_t global_index(int64_t local) const { return local * size + rank; }
  /// How many of the first `n_global` items this rank owns.
  int64_t local_count(int64_t n_global) const { return n_global > rank ? (n_global - rank + size - 1) / size : 0; }
};

/// Merges `parts` partial softmax results of `rows` independent rows (lse[p][r], out[p][r * dim ...]) in
/// the order p = 0 .. parts-1 into merged_out [rows, dim] (and merged_lse [rows] when not null). A row whose
/// partials are all empty (lse -inf) gets zeros and lse -inf. merged_out may alias none of the inputs.
void merge_partials(const float* const* lse, const float* const* out, int parts, int64_t rows, int64_t dim,
                    float* merged_out, float* merged_lse = nullptr);

/// Collective over `comm`: gathers every rank's partials (lse [rows], out [rows, dim]; every rank passes the
/// same rows and dim) and merges them in rank order (merge_partials); every rank gets the same merged_out.
/// A group of one copies out to merged_out. Throws kInvalidArgument on negative sizes or null buffers.
void merge_attention_partials(Communicator& comm, const float* lse, const float* out, int64_t rows, int64_t dim,
                              float* merged_out, Stream stream = kDefaultStream);

/// The top min(k, valid) of n candidates by (score descending, id ascending), written to out_ids[0..k) with
/// -1 padding (and out_scores with -inf padding when not null). Candidates with id < 0 are padding and
/// ignored. Ties in score are broken by the lower id, so the result is a deterministic set and order.
void select_topk(const float* scores, const int32_t* ids, int64_t n, int64_t k, int32_t* out_ids,
                 float* out_scores = nullptr);

/// Collective over `comm`: for each of `queries` queries every rank passes k local candidates
/// (scores [queries, k], ids [queries, k], id -1 = padding, ids distinct across ranks); every rank gets the
/// global top-k ids per query (out_ids [queries, k], ordered as select_topk, -1 padding). Equal to
/// select_topk over the union of all ranks' candidates. Lists already in that order with their padding last
/// (a local select_topk) are merged in O(P k) per query; other lists are sorted.
void distributed_topk(Communicator& comm, const float* scores, const int32_t* ids, int64_t queries, int64_t k,
                      int32_t* out_ids, Stream stream = kDefaultStream);

/// Wall time, bytes received and calls of the collectives above (merge_attention_partials and
/// distributed_topk with more than one rank) and of every scope timed by CpExchangeTimer (the model's row
/// gathers and partial exchanges), summed over the process since the last reset: what a benchmark reports as
/// exchange time. The time includes waiting for the slowest peer to arrive (and, for an overlapped exchange,
/// nothing of the compute beside it). Thread-safe (relaxed counters); in-process rank threads share one total.
struct CpExchangeStats {
  double seconds = 0.0;
  int64_t bytes = 0;
  int64_t calls = 0;
  /// Exchange steps that ran while a helper thread computed (note_cp_overlap): each may hold several calls.
  int64_t overlapped = 0;
  /// Forwards run as two micro-batches (runtime/model/model_pipeline.cc).
  int64_t pipelined_forwards = 0;
};
CpExchangeStats cp_exchange_stats();
void reset_cp_exchange_stats();
/// Counts one exchange step run beside compute in cp_exchange_stats().overlapped.
void note_cp_overlap();
/// Counts one two-micro-batch forward in cp_exchange_stats().pipelined_forwards.
void note_pipelined_forward();

/// Adds its own lifetime (wall time), `bytes` received and one call to the counters of cp_exchange_stats():
/// wrap a CP collective made elsewhere in one.
class CpExchangeTimer {
 public:
  explicit CpExchangeTimer(int64_t bytes) : bytes_(bytes), t0_(std::chrono::steady_clock::now()) {}
  ~CpExchangeTimer();
  CpExchangeTimer(const CpExchangeTimer&) = delete;
  CpExchangeTimer& operator=(const CpExchangeTimer&) = delete;

 private:
  int64_t bytes_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace dsv4::parallel
