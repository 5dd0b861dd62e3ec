// Lightning indexer selection (spec §3.6): scores every visible indexer row and keeps the top-k; when no
// more rows are visible than k, all of them are taken (exact shortcut).
#include <algorithm>
#include <numeric>
#include <vector>

#include "runtime/model/layers.h"

namespace dsv4::model_detail {

void indexer_select(Ctx& ctx, const IndexerWeights& w, const CompressorState& index_rows, const float* q_index,
                    const float* head_weights, int64_t start, int64_t count, int32_t* out) {
  const int64_t k = ctx.cfg.index_topk, nh = ctx.cfg.index_num_heads, hd = ctx.cfg.index_head_dim;
  const int64_t m = index_rows.ratio;
  // Only queries that see more than k rows need scores.
  std::vector<int64_t> scored, visible;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t n_vis = (start + i + 1) / m;
    int32_t* dst = out + i * k;
    std::fill(dst, dst + k, -1);
    if (n_vis <= k) {
      for (int64_t r = 0; r < n_vis; ++r) dst[r] = static_cast<int32_t>(r);
    } else {
      scored.push_back(i);
      visible.push_back(n_vis);
    }
  }
  if (scored.empty()) return;
  // Queries in blocks so the score matrix stays bounded (a long prompt has T/4 visible rows per query).
  const int64_t stride = visible.back();
  const int64_t block = std::max<int64_t>(1, (int64_t{1} << 24) / stride);
  std::vector<float> q, beta, scores;
  std::vector<int32_t> order;
  for (int64_t j0 = 0; j0 < static_cast<int64_t>(scored.size()); j0 += block) {
    const int64_t n = std::min<int64_t>(block, static_cast<int64_t>(scored.size()) - j0);
    q.resize(n * nh * hd);
    beta.resize(n * nh);
    scores.resize(n * stride);
    for (int64_t j = 0; j < n; ++j) {
      std::copy_n(q_index + scored[j0 + j] * nh * hd, nh * hd, q.data() + j * nh * hd);
      std::copy_n(head_weights + scored[j0 + j] * nh, nh, beta.data() + j * nh);
    }
    ctx.be.indexer_scores({q.data(), beta.data(), n, nh, hd, index_rows.rows.data(), visible.data() + j0,
                           scores.data(), stride});
    for (int64_t j = 0; j < n; ++j) {
      const float* s = scores.data() + j * stride;
      order.resize(visible[j0 + j]);
      std::iota(order.begin(), order.end(), 0);
      // Highest score first; ties broken by the lower row id so the set is deterministic.
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&](int32_t x, int32_t y) { return s[x] > s[y] || (s[x] == s[y] && x < y); });
      std::copy_n(order.begin(), k, out + scored[j0 + j] * k);
    }
  }
}

}  // namespace dsv4::model_detail
