// Per-sequence decode state (spec §5.1): per layer a raw KV ring of `sliding_window` rows, the fp32
// compressor buffers (current window, and for ratio 4 the previous window's A-halves), the compressed
// rows and the indexer rows emitted so far. Prefill and decode share it: a chunk continues from `length`.
#pragma once

#include <cstdint>
#include <vector>

namespace dsv4 {

/// One compressor (main or indexer) of one layer.
struct CompressorState {
  int64_t ratio = 0;    // m
  int64_t dim = 0;      // h
  int64_t overlap = 1;  // c
  std::vector<float> cur_kv, cur_score;    // [m, c*h]: slot p mod m of the window being filled
  std::vector<float> prev_kv, prev_score;  // [m, h]: A-halves of the last finished window (c = 2 only)
  std::vector<float> rows;                 // [num_rows, h]: emitted rows, after norm / RoPE / emulation
  int64_t num_rows = 0;

  /// Sizes the buffers; previous-window scores start at -inf (weight 0 for the first row).
  void init(int64_t ratio, int64_t dim, int64_t overlap);
  const float* row(int64_t w) const { return rows.data() + w * dim; }
};

struct LayerState {
  std::vector<float> ring;  // [window, head_dim]: kv of position p in slot p mod window
  CompressorState main;     // ratio != 0
  CompressorState index;    // ratio == 4
};

struct SequenceState {
  int64_t length = 0;                 // tokens processed so far (main model)
  std::vector<LayerState> layers;     // main layers, then MTP layers
  int64_t mtp_length = 0;             // tokens processed by the MTP block
  int64_t memory_bytes() const;
};

}  // namespace dsv4
