// Sparse MQA attention with sink: one task per (token, head), two passes over the index list (logits,
// then the weighted sum), with the max taken over the real logits only (spec §3.4.5).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/ops/attention.h"
#include "runtime/core/error.h"

namespace dsv4::kernels::cpu {

void sparse_attention(const SparseAttentionParams& p) {
  const int64_t tasks = p.tokens * p.heads;
  parallel_for(tasks, 4, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> logits;
    thread_local std::vector<const float*> rows;
    if (static_cast<int64_t>(logits.size()) < p.max_indices) {
      logits.resize(p.max_indices);
      rows.resize(p.max_indices);
    }
    for (int64_t task = begin; task < end; ++task) {
      const int64_t t = task / p.heads, h = task % p.heads;
      const float* q = p.q + (t * p.heads + h) * p.dim;
      float* o = p.out + (t * p.heads + h) * p.dim;
      const int32_t* idx = p.indices + t * p.max_indices;
      int64_t n = 0;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < p.max_indices; ++j) {
        const int64_t i = idx[j];
        if (i < 0) continue;
        DSV4_CHECK(i < p.n_raw + p.n_comp) << "sparse_attention: index " << i << " beyond " << p.n_raw << " raw + "
                                           << p.n_comp << " compressed rows";
        const int64_t c = i - p.n_raw;
        const float* v = c < 0 ? p.kv_raw + i * p.dim
                               : p.comp_pages[c / p.comp_rows_per_page] + (c % p.comp_rows_per_page) * p.dim;
        rows[n] = v;
        logits[n] = dot(q, v, p.dim) * p.scale;
        mx = std::max(mx, logits[n]);
        ++n;
      }
      std::fill(o, o + p.dim, 0.0f);
      if (n == 0) {
        if (p.lse != nullptr) p.lse[task] = p.sink != nullptr ? p.sink[h] : -std::numeric_limits<float>::infinity();
        continue;
      }
      float den = 0.0f;
      for (int64_t j = 0; j < n; ++j) {
        logits[j] = std::exp(logits[j] - mx);
        den += logits[j];
      }
      if (p.sink != nullptr) den += std::exp(p.sink[h] - mx);
      if (p.lse != nullptr) p.lse[task] = mx + std::log(den);
      const float inv = 1.0f / den;
      for (int64_t j = 0; j < n; ++j) axpy(logits[j] * inv, rows[j], o, p.dim);
    }
  });
}

void indexer_scores(const IndexerScoreParams& p) {
  parallel_for(p.tokens, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* q = p.q + t * p.heads * p.dim;
      const float* w = p.weights + t * p.heads;
      float* out = p.scores + t * p.score_stride;
      const int64_t end = std::min(p.visible[t], p.key_end);
      for (int64_t r = p.key_begin; r < end; ++r) {
        const float* key = p.key_pages[r / p.key_rows_per_page] + (r % p.key_rows_per_page) * p.dim;
        float s = 0.0f;
        for (int64_t h = 0; h < p.heads; ++h) s += w[h] * std::max(0.0f, dot(q + h * p.dim, key, p.dim));
        out[r - p.key_begin] = s;
      }
    }
  });
}

}  // namespace dsv4::kernels::cpu
