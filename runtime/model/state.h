// Per-sequence decode state (spec §5.1): per layer a raw KV ring of `sliding_window` rows, the fp32
// compressor buffers (current window, and for ratio 4 the previous window's A-halves), the compressed
// rows and the indexer rows emitted so far. Prefill and decode share it: a chunk continues from `length`.
//
// Memory: the state belongs to a sequence of a StatePool (runtime/kv/state_pool.h). The emitted rows live in
// pool pages (RowStore); the ring and the compressor windows are heap vectors of a size fixed at creation,
// charged to the pool at their exact bytes when the sequence opens. memory_bytes() is what the pool books for
// the sequence, and runtime/kv/cpu_state_bytes.h predicts it exactly.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/config/model_config.h"
#include "runtime/kv/state_pool.h"

namespace dsv4 {

/// One compressor (main or indexer) of one layer.
struct CompressorState {
  int64_t ratio = 0;    // m
  int64_t dim = 0;      // h
  int64_t overlap = 1;  // c
  std::vector<float> cur_kv, cur_score;    // [m, c*h]: slot p mod m of the window being filled
  std::vector<float> prev_kv, prev_score;  // [m, h]: A-halves of the last finished window (c = 2 only)
  RowStore rows;                           // emitted rows [num_rows(), h], after norm / RoPE / emulation

  /// Sizes the buffers and binds the row store to `sequence` of `pool`; previous-window scores start at -inf
  /// (weight 0 for the first row).
  void init(StatePool* pool, int64_t sequence, int64_t ratio, int64_t dim, int64_t overlap);
  const float* row(int64_t w) const { return rows.row(w); }
  int64_t num_rows() const { return rows.size(); }
  /// Context parallelism (parallel/context_parallel.h): with cp_size > 1 this rank keeps only the emitted rows
  /// w with w % cp_size == cp_rank, at local index w / cp_size, so rows / num_rows() are this rank's share;
  /// the windows above stay whole (every CP rank appends every token of a chunk: the CP ranks exchange the
  /// compressor inputs of their sub-blocks). Set before the first row is emitted.
  int64_t cp_rank = 0, cp_size = 1;
  bool owns_row(int64_t w) const { return w % cp_size == cp_rank; }
  /// How many of the first `global_rows` rows this rank keeps.
  int64_t local_rows(int64_t global_rows) const {
    return global_rows > cp_rank ? (global_rows - cp_rank + cp_size - 1) / cp_size : 0;
  }
  /// Bytes of the fixed windows (what init charges to the pool).
  static int64_t fixed_bytes(int64_t ratio, int64_t dim, int64_t overlap);
};

struct LayerState {
  std::vector<float> ring;  // [window, head_dim]: kv of position p in slot p mod window
  CompressorState main;     // ratio != 0
  CompressorState index;    // ratio == 4
};

struct SequenceState {
  /// The pool sequence this state is booked to. Declared first so that it is destroyed last: the row stores
  /// return their pages before the account closes.
  StateAccount account;
  int64_t length = 0;                 // tokens processed so far (main model)
  std::vector<LayerState> layers;     // main layers, then MTP layers
  int64_t mtp_length = 0;             // tokens processed by the MTP block

  SequenceState() = default;
  SequenceState(SequenceState&&) noexcept = default;
  /// Frees this state's pages (while its account is still open), then takes `other`'s.
  SequenceState& operator=(SequenceState&& other) noexcept;

  /// Bytes the pool books for this sequence: row pages plus the charged ring and compressor windows.
  int64_t memory_bytes() const;
};

/// A fresh state for `config` with `mtp_layers` MTP slots (ratio 0: ring only), booked to a new sequence of
/// `pool` reserving `reserve_bytes` (null pool: a private unlimited pool). Charges the fixed buffers before
/// allocating them. Throws Error(kResourceExhausted) when the pool cannot admit the sequence.
SequenceState make_sequence_state(const ModelConfig& config, int64_t mtp_layers, StatePool* pool,
                                  int64_t reserve_bytes = 0);

/// Allocates now every row page the state needs to reach `tokens` tokens (floor(tokens / ratio) rows per
/// compressor), so a forward pass up to that length cannot run out of pool memory half-way. Throws
/// Error(kResourceExhausted) with no row changed (pages already taken stay booked to the sequence).
void reserve_sequence_rows(SequenceState& state, int64_t tokens);

}  // namespace dsv4
