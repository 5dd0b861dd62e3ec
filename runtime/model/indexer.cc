// Lightning indexer selection (spec §3.6): scores every visible indexer row and keeps the top-k; when no
// more rows are visible than k, all of them are taken (exact shortcut).
//
// Work is tiled both ways so no buffer grows with the context: queries in blocks of kQueryBlock, keys in
// tiles of kKeyTile rows; each query keeps a running top-k, merged with each tile's scores. The final order
// is the total order (score descending, then row ascending), so the result is the same set in the same order
// as one sort over all rows would give, bit for bit.
#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "runtime/model/layers.h"

namespace dsv4::model_detail {
namespace {

constexpr int64_t kQueryBlock = 128;  // queries scored together (the score tile is kQueryBlock x kKeyTile)
constexpr int64_t kKeyTile = 4096;    // indexer rows per tile: 2 MiB of fp32 scores per block
constexpr float kInf = std::numeric_limits<float>::infinity();

struct Candidate {
  float score;
  int32_t row;
};

// Highest score first; ties broken by the lower row id so the set is deterministic.
bool better(const Candidate& a, const Candidate& b) { return a.score > b.score || (a.score == b.score && a.row < b.row); }

}  // namespace

void indexer_select(Ctx& ctx, const IndexerWeights& w, const CompressorState& index_rows, const float* q_index,
                    const float* head_weights, int64_t start, int64_t count, int32_t* out, float* out_scores) {
  const int64_t k = ctx.cfg.index_topk, nh = ctx.cfg.index_num_heads, hd = ctx.cfg.index_head_dim;
  const int64_t m = index_rows.ratio;
  // Only queries that see more than k rows need scores.
  std::vector<int64_t> scored, visible;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t n_vis = (start + i + 1) / m;
    int32_t* dst = out + i * k;
    std::fill(dst, dst + k, -1);
    if (out_scores != nullptr) std::fill(out_scores + i * k, out_scores + (i + 1) * k, -kInf);
    // With context parallelism the rows held here are this rank's share of the n_vis visible ones.
    const int64_t local_vis = index_rows.local_rows(n_vis);
    if (n_vis <= k) {
      for (int64_t r = 0; r < local_vis; ++r) dst[r] = static_cast<int32_t>(r);
      if (out_scores != nullptr) std::fill(out_scores + i * k, out_scores + i * k + local_vis, kInf);
    } else {
      scored.push_back(i);
      visible.push_back(local_vis);
    }
  }
  if (scored.empty()) return;
  const RowStore& keys = index_rows.rows;
  std::vector<float> q, beta, scores;
  std::vector<std::vector<Candidate>> best(static_cast<size_t>(std::min<int64_t>(kQueryBlock, scored.size())));
  for (int64_t j0 = 0; j0 < static_cast<int64_t>(scored.size()); j0 += kQueryBlock) {
    const int64_t n = std::min<int64_t>(kQueryBlock, static_cast<int64_t>(scored.size()) - j0);
    q.resize(n * nh * hd);
    beta.resize(n * nh);
    for (int64_t j = 0; j < n; ++j) {
      std::copy_n(q_index + scored[j0 + j] * nh * hd, nh * hd, q.data() + j * nh * hd);
      std::copy_n(head_weights + scored[j0 + j] * nh, nh, beta.data() + j * nh);
      best[j].clear();
    }
    const int64_t max_visible = visible[j0 + n - 1];  // queries are in position order
    const int64_t tile = std::min(kKeyTile, max_visible);
    scores.resize(n * tile);
    for (int64_t kb = 0; kb < max_visible; kb += tile) {
      const int64_t ke = std::min(kb + tile, max_visible);
      kernels::IndexerScoreParams sp;
      sp.q = q.data();
      sp.weights = beta.data();
      sp.tokens = n;
      sp.heads = nh;
      sp.dim = hd;
      sp.key_pages = keys.pages();
      sp.key_rows_per_page = keys.rows_per_page();
      sp.visible = visible.data() + j0;
      sp.key_begin = kb;
      sp.key_end = ke;
      sp.scores = scores.data();
      sp.score_stride = tile;
      ctx.be.indexer_scores(sp);
      for (int64_t j = 0; j < n; ++j) {
        const float* s = scores.data() + j * tile;
        const int64_t end = std::min(ke, visible[j0 + j]);
        std::vector<Candidate>& b = best[j];
        // Rows of this tile come after every kept row, so one that ties the k-th best loses: only a strictly
        // higher score can enter a full set.
        const bool full = static_cast<int64_t>(b.size()) >= k;
        const float floor = full ? b[k - 1].score : 0.0f;
        for (int64_t r = kb; r < end; ++r) {
          if (!full || s[r - kb] > floor) b.push_back({s[r - kb], static_cast<int32_t>(r)});
        }
        if (static_cast<int64_t>(b.size()) > k || (!full && static_cast<int64_t>(b.size()) == k)) {
          std::nth_element(b.begin(), b.begin() + (k - 1), b.end(), better);
          b.resize(k);
        }
      }
    }
    for (int64_t j = 0; j < n; ++j) {
      std::vector<Candidate>& b = best[j];
      std::sort(b.begin(), b.end(), better);
      int32_t* dst = out + scored[j0 + j] * k;
      const int64_t kept = static_cast<int64_t>(b.size());  // < k only for a CP rank's share
      for (int64_t i = 0; i < kept; ++i) dst[i] = b[i].row;
      if (out_scores != nullptr) {
        for (int64_t i = 0; i < kept; ++i) out_scores[scored[j0 + j] * k + i] = b[i].score;
      }
    }
  }
}

}  // namespace dsv4::model_detail
