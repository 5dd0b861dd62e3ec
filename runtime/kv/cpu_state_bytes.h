// Bytes of sequence state the CPU model (runtime/model) really holds, as opposed to the production planner of
// state_bytes.h. The CPU model keeps everything in fp32: the raw window ring (window x head_dim per layer,
// MTP layers included), the compressor windows, and the emitted rows in StatePool pages of `page_bytes`
// (rows never straddle pages, so a store of n rows of width h holds ceil(n / floor(page_bytes / 4h)) pages).
// The production layout (fp8 rows, 584 B main / 132 B indexer) is what plan-memory prints for GPUs; this is
// what the scheduler admits by on the CPU engine, and it equals what a StatePool books, byte for byte.
#pragma once

#include <cstdint>

#include "runtime/config/model_config.h"
#include "runtime/kv/state_pool.h"

namespace dsv4 {

struct CpuStateBytes {
  int64_t ring = 0;        // fp32 raw window rings (main layers, plus MTP layers when counted)
  int64_t compressor = 0;  // fp32 compressor windows (kv + score, current and previous), main and indexer
  int64_t row_pages = 0;   // pool pages of compressed and indexer rows
  int64_t page_bytes = 0;
  /// The fixed buffers charged to the pool when the sequence opens.
  int64_t fixed() const { return ring + compressor; }
  int64_t total() const { return fixed() + row_pages * page_bytes; }
};

/// The CPU model's state of one sequence after `tokens` tokens. `mtp_layers`: MTP slots the sequence has
/// (Model::new_sequence makes one per MTP layer of the weights: config.num_mtp_layers for a full checkpoint).
/// With context parallelism over `cp` ranks, the state of the busiest rank (CP rank 0): the fixed buffers in
/// full (they are replicated) and ceil(rows / cp) rows of each compressor (round robin, row w on rank w % cp).
CpuStateBytes cpu_state_bytes(const ModelConfig& config, int64_t tokens, int64_t page_bytes = kDefaultStatePageBytes,
                              int64_t mtp_layers = 0, int64_t cp = 1);

}  // namespace dsv4
