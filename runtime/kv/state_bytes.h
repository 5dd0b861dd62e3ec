// Bytes of per-sequence decode state of a DeepSeek-V4 config (spec §5.1, §5.3): what grows with the context
// (compressed rows and indexer rows) and what does not (the raw window ring and the fp32 compressor buffers).
// The capacity planner behind `dsv4 plan-memory` and the admission budget of the state pool use these numbers.
#pragma once

#include <cstdint>
#include <string_view>

#include "runtime/config/model_config.h"

namespace dsv4 {

/// Storage format of the attention state.
enum class KvLayout {
  /// FP8 rows as production engines store them: per main row, (d - r) e4m3 bytes, r bf16 rotary values and
  /// one ue8m0 scale per 64 e4m3 values, padded to 8 bytes (584 B for d = 512, r = 64); indexer rows as
  /// index_head_dim e4m3 bytes plus one fp32 scale (132 B).
  kProductionFp8,
  /// bf16 rows, as the reference model keeps them (1024 B main, 256 B indexer).
  kReferenceBf16,
};

std::string_view kv_layout_name(KvLayout layout);

/// Bytes of one stored row of each kind.
struct KvRowBytes {
  int64_t main_row = 0;     // compressed main row and raw-ring row (head_dim wide)
  int64_t indexer_row = 0;  // compressed indexer row (index_head_dim wide)
};

KvRowBytes kv_row_bytes(const ModelConfig& config, KvLayout layout);

/// Per-sequence state of the main layers (MTP layers listed apart: they exist only when drafting with MTP).
struct SequenceStateBytes {
  /// Average growth per token of context over all main layers. Exact: every term is a row size divided by
  /// its ratio (4 or 128), so the value is a dyadic rational that a double holds exactly.
  double per_token = 0.0;
  int64_t ring = 0;        // raw window rows: sliding_window x main_row per main layer
  int64_t compressor = 0;  // fp32 compressor buffers (kv + score), main and indexer compressors
  int64_t mtp_ring = 0;    // raw window of the MTP layers (their ratio is 0: no compressor, no growth)

  /// The state a sequence holds from its first token on (main layers).
  int64_t fixed() const { return ring + compressor; }
};

SequenceStateBytes sequence_state_bytes(const ModelConfig& config, KvLayout layout);

/// Exact bytes one sequence holds after `tokens` tokens: fixed state plus every compressed row emitted so far
/// (floor(tokens / ratio) per compressed layer), plus the MTP rings when `with_mtp`.
int64_t sequence_bytes(const ModelConfig& config, KvLayout layout, int64_t tokens, bool with_mtp = false);

/// The longest context (at most max_position_embeddings) whose sequence_bytes fits in `budget_bytes`;
/// 0 when not even the fixed state fits.
int64_t max_context_tokens(const ModelConfig& config, KvLayout layout, int64_t budget_bytes, bool with_mtp = false);

/// How many sequences of `tokens` tokens fit in `budget_bytes`.
int64_t sequences_that_fit(const ModelConfig& config, KvLayout layout, int64_t tokens, int64_t budget_bytes,
                           bool with_mtp = false);

}  // namespace dsv4
