// Sparse multi-query attention with a per-head sink logit (spec §3.4.5).
//
// Each query t attends over an index list: entries in [0, n_raw) address rows of `kv_raw`, entries
// >= n_raw address rows of `kv_comp` (index - n_raw), -1 is padding. K = V = the row (shared 512-d head).
//   l_j = scale * q_h . v_j;  M = max_j l_j;  den = sum_j exp(l_j - M) + exp(sink_h - M)
//   o_h = sum_j exp(l_j - M) v_j / den
// The sink adds mass to the denominator only. A query with an empty list gets o = 0.
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
  const float* kv_comp = nullptr;  // [n_comp, dim]
  int64_t n_comp = 0;
  const int32_t* indices = nullptr;  // [tokens, max_indices], -1 = padding
  int64_t max_indices = 0;
  const float* sink = nullptr;  // [heads] or null (no sink)
  float scale = 1.0f;
  float* out = nullptr;         // [tokens, heads, dim]
};

/// Lightning-indexer scores (spec §3.6): for each query t and key row r < visible[t],
/// scores[t, r] = sum_h weights[t, h] * max(0, q[t, h] . keys[r]). Entries r >= visible[t] are untouched.
struct IndexerScoreParams {
  const float* q = nullptr;        // [tokens, heads, dim]
  const float* weights = nullptr;  // [tokens, heads]
  int64_t tokens = 0;
  int64_t heads = 0;
  int64_t dim = 0;
  const float* keys = nullptr;     // [n_keys, dim]
  const int64_t* visible = nullptr;  // [tokens]
  float* scores = nullptr;         // [tokens, score_stride]
  int64_t score_stride = 0;
};

namespace cpu {
void sparse_attention(const SparseAttentionParams& p);
void indexer_scores(const IndexerScoreParams& p);
}  // namespace cpu

}  // namespace dsv4::kernels
