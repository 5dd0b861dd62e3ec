// Sparse multi-query attention with a per-head sink logit (spec §3.4.5).
//
// Each query t attends over an index list: entries in [0, n_raw) address rows of `kv_raw`, entries
// >= n_raw address compressed row i = index - n_raw, -1 is padding. K = V = the row (shared 512-d head).
// Compressed rows live in fixed-size pages of the sequence-state pool (runtime/kv/state_pool.h), read through
// a page table: row i is comp_pages[i / comp_rows_per_page] + (i % comp_rows_per_page) * dim. A contiguous
// [n, dim] array is the one-page case (comp_rows_per_page >= n).
//   l_j = scale * q_h . v_j;  M = max_j l_j;  den = sum_j exp(l_j - M) + exp(sink_h - M)
//   o_h = sum_j exp(l_j - M) v_j / den
// The sink adds mass to the denominator only. A query with an empty list gets o = 0.
// Optional log-sum-exp output (context parallelism merges per-rank partials with it): lse_h = M + log(den),
// the log of the whole denominator including the sink; an empty list gives sink_h (or -inf without a sink).
// sink = null is the no-sink switch: a partial over a subset of the rows that must not add the sink again.
#pragma once

#include <cstdint>

namespace dsv4::kernels {

struct SparseAttentionParams {
  const float* q = nullptr;     // [tokens, heads, dim]
  int64_t tokens = 0;
  int64_t heads = 0;
  int64_t dim = 0;
  const float* kv_raw = nullptr;   // [n_raw, dim]
  int64_t n_raw = 0;
  const float* const* comp_pages = nullptr;  // page table of the n_comp compressed rows
  int64_t comp_rows_per_page = 1;
  int64_t n_comp = 0;
  const int32_t* indices = nullptr;  // [tokens, max_indices], -1 = padding
  int64_t max_indices = 0;
  const float* sink = nullptr;  // [heads] or null (no sink)
  float scale = 1.0f;
  float* out = nullptr;         // [tokens, heads, dim]
  float* lse = nullptr;         // [tokens, heads] or null (not wanted)
};

/// Lightning-indexer scores (spec §3.6): for each query t and key row r in [key_begin, visible[t]),
/// scores[t, r - key_begin] = sum_h weights[t, h] * max(0, q[t, h] . key[r]). Other entries are untouched.
/// Keys are indexer rows in pool pages (row r at key_pages[r / key_rows_per_page] + (r % ...) * dim). The
/// caller scores a long context in tiles of keys [key_begin, key_end) so the score buffer stays bounded.
struct IndexerScoreParams {
  const float* q = nullptr;        // [tokens, heads, dim]
  const float* weights = nullptr;  // [tokens, heads]
  int64_t tokens = 0;
  int64_t heads = 0;
  int64_t dim = 0;
  const float* const* key_pages = nullptr;  // page table of the indexer rows
  int64_t key_rows_per_page = 1;
  const int64_t* visible = nullptr;  // [tokens]: rows query t sees
  int64_t key_begin = 0;             // first key row of this tile
  int64_t key_end = 0;               // one past the last key row of this tile
  float* scores = nullptr;           // [tokens, score_stride]: column j is key row key_begin + j
  int64_t score_stride = 0;
};

namespace cpu {
void sparse_attention(const SparseAttentionParams& p);
void indexer_scores(const IndexerScoreParams& p);
}  // namespace cpu

}  // namespace dsv4::kernels
