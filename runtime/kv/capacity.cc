#include "runtime/kv/capacity.h"

#include "runtime/core/error.h"

namespace dsv4 {

int64_t rank_sequence_bytes(const ModelConfig& c, KvLayout layout, int64_t tokens, int64_t cp, bool with_mtp) {
  DSV4_CHECK_ARG(tokens >= 0) << "context length must be >= 0, got " << tokens;
  DSV4_CHECK_ARG(cp >= 1) << "context-parallel size must be >= 1, got " << cp;
  const KvRowBytes rows = kv_row_bytes(c, layout);
  const SequenceStateBytes s = sequence_state_bytes(c, layout);
  int64_t total = s.fixed() + (with_mtp ? s.mtp_ring : 0);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const int64_t ratio = c.compress_ratio(l);
    if (ratio == 0) continue;
    // A row is emitted when its window's last token arrives; the busiest of the cp shares holds the rest.
    const int64_t share = (tokens / ratio + cp - 1) / cp;
    total += share * (rows.main_row + (ratio == 4 ? rows.indexer_row : 0));
  }
  return total;
}

RankCapacity rank_capacity(const ModelConfig& c, KvLayout layout, const ParallelLayout& parallel,
                           int64_t budget_bytes, int64_t tokens, bool with_mtp) {
  DSV4_CHECK_ARG(budget_bytes >= 0) << "state budget must be >= 0 bytes, got " << budget_bytes;
  DSV4_CHECK_ARG(parallel.dp >= 1 && parallel.tp >= 1 && parallel.cp >= 1)
      << "layout sizes must be >= 1, got " << to_string(parallel);
  RankCapacity r;
  r.budget_bytes = budget_bytes;
  r.tokens = tokens;
  r.bytes_per_sequence = rank_sequence_bytes(c, layout, tokens, parallel.cp, with_mtp);
  r.sequences_per_rank = r.bytes_per_sequence > 0 ? budget_bytes / r.bytes_per_sequence : 0;
  r.sequences_per_replica = r.sequences_per_rank;
  r.sequences_total = r.sequences_per_replica * parallel.dp;
  // rank_sequence_bytes is non-decreasing in tokens: the last length that fits, by bisection.
  auto fits = [&](int64_t t) { return rank_sequence_bytes(c, layout, t, parallel.cp, with_mtp) <= budget_bytes; };
  if (!fits(0)) {
    r.longest_context = 0;
  } else if (fits(c.max_position_embeddings)) {
    r.longest_context = c.max_position_embeddings;
  } else {
    int64_t lo = 0, hi = c.max_position_embeddings;
    while (hi - lo > 1) {
      const int64_t mid = lo + (hi - lo) / 2;
      (fits(mid) ? lo : hi) = mid;
    }
    r.longest_context = lo;
  }
  return r;
}

}  // namespace dsv4
