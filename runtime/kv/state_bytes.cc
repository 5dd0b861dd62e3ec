#include "runtime/kv/state_bytes.h"

#include "runtime/kv/capacity.h"

#include "runtime/core/error.h"

namespace dsv4 {
namespace {

constexpr int64_t kFp8ScaleGroup = 64;  // one ue8m0 scale per 64 e4m3 values of a main row (spec §6)
constexpr int64_t kRowAlign = 8;        // production rows are padded to 8 bytes (448 + 128 + 7 -> 584)
constexpr int64_t kFp32Bytes = 4;
constexpr int64_t kBf16Bytes = 2;

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Compressor width factor: ratio 4 pools overlapping windows, so each token carries two halves (spec §3.5).
int64_t overlap(int64_t ratio) { return ratio == 4 ? 2 : 1; }

// fp32 buffers of one compressor of head width h: kv and score, c*m token slots of c*h values each
// (the reference's [8, 2h] pair for ratio 4, [128, h] pair for ratio 128; spec §5.1).
int64_t compressor_state_bytes(int64_t ratio, int64_t h) {
  const int64_t c = overlap(ratio);
  return 2 * (c * ratio) * (c * h) * kFp32Bytes;
}

}  // namespace

std::string_view kv_layout_name(KvLayout layout) {
  switch (layout) {
    case KvLayout::kProductionFp8: return "fp8";
    case KvLayout::kReferenceBf16: return "bf16";
  }
  return "?";
}

KvRowBytes kv_row_bytes(const ModelConfig& c, KvLayout layout) {
  KvRowBytes rows;
  if (layout == KvLayout::kReferenceBf16) {
    rows.main_row = c.head_dim * kBf16Bytes;
    rows.indexer_row = c.index_head_dim * kBf16Bytes;
    return rows;
  }
  const int64_t nope = c.nope_dim();
  const int64_t scales = (nope + kFp8ScaleGroup - 1) / kFp8ScaleGroup;
  rows.main_row = round_up(nope + c.rope_dim * kBf16Bytes + scales, kRowAlign);
  rows.indexer_row = c.index_head_dim + kFp32Bytes;
  return rows;
}

SequenceStateBytes sequence_state_bytes(const ModelConfig& c, KvLayout layout) {
  const KvRowBytes rows = kv_row_bytes(c, layout);
  SequenceStateBytes s;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const int64_t ratio = c.compress_ratio(l);
    s.ring += c.sliding_window * rows.main_row;
    if (ratio == 0) continue;
    s.per_token += static_cast<double>(rows.main_row) / static_cast<double>(ratio);
    s.compressor += compressor_state_bytes(ratio, c.head_dim);
    if (ratio == 4) {  // CSA: the indexer keeps its own rows and its own compressor
      s.per_token += static_cast<double>(rows.indexer_row) / static_cast<double>(ratio);
      s.compressor += compressor_state_bytes(ratio, c.index_head_dim);
    }
  }
  s.mtp_ring = c.num_mtp_layers * c.sliding_window * rows.main_row;
  return s;
}

int64_t sequence_bytes(const ModelConfig& c, KvLayout layout, int64_t tokens, bool with_mtp) {
  return rank_sequence_bytes(c, layout, tokens, /*cp=*/1, with_mtp);  // one rank holds every row
}

int64_t max_context_tokens(const ModelConfig& c, KvLayout layout, int64_t budget_bytes, bool with_mtp) {
  if (sequence_bytes(c, layout, 0, with_mtp) > budget_bytes) return 0;
  // sequence_bytes is non-decreasing in tokens: binary search the last length that fits.
  int64_t lo = 0;
  int64_t hi = c.max_position_embeddings;
  if (sequence_bytes(c, layout, hi, with_mtp) <= budget_bytes) return hi;
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (sequence_bytes(c, layout, mid, with_mtp) <= budget_bytes) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

int64_t sequences_that_fit(const ModelConfig& c, KvLayout layout, int64_t tokens, int64_t budget_bytes,
                           bool with_mtp) {
  DSV4_CHECK_ARG(budget_bytes >= 0) << "memory budget must be >= 0, got " << budget_bytes;
  const int64_t one = sequence_bytes(c, layout, tokens, with_mtp);
  return one > 0 ? budget_bytes / one : 0;
}

}  // namespace dsv4
