// The capacity planner (issue 5): for a model, a parallel layout and a per-rank memory budget for sequence
// state, how long a context fits and how many sequences of a given context each GPU (rank) holds.
//
// Where the state lives (ARCHITECTURE.md "Parallel layout"): the single KV head, the compressors and the
// indexer are replicated over the TP ranks of a replica, so every TP rank holds the whole state of the
// replica's sequences; DP replicas hold different sequences; a CP group of `cp` ranks shares one sequence,
// each rank holding about 1/cp of its compressed and indexer rows (the largest share: ceil(rows / cp) per
// layer) while the fixed state (raw window ring, fp32 compressor windows, MTP ring) is counted on every CP
// rank. Bytes per row are those of the layout (state_bytes.h: production FP8 or bf16 reference).
#pragma once

#include <cstdint>

#include "runtime/config/deployment_config.h"
#include "runtime/config/model_config.h"
#include "runtime/kv/state_bytes.h"

namespace dsv4 {

/// Bytes the most loaded rank of a CP group of `cp` ranks holds for one sequence of `tokens` tokens.
/// cp = 1 equals sequence_bytes(). Throws Error(kInvalidArgument) for tokens < 0 or cp < 1.
int64_t rank_sequence_bytes(const ModelConfig& config, KvLayout layout, int64_t tokens, int64_t cp,
                            bool with_mtp = false);

struct RankCapacity {
  int64_t budget_bytes = 0;         // state budget of one rank
  int64_t tokens = 0;               // the context asked about
  int64_t bytes_per_sequence = 0;   // rank_sequence_bytes at `tokens`
  int64_t sequences_per_rank = 0;   // sequences of `tokens` one rank (GPU) holds state for
  int64_t longest_context = 0;      // longest single context whose rank share fits (<= max_position_embeddings)
  int64_t sequences_per_replica = 0;  // = sequences_per_rank: every rank of a replica holds a share of each
  int64_t sequences_total = 0;        // x dp replicas
};

/// The capacity of `layout` (dp, tp, cp used; ep does not touch the state) with `budget_bytes` of state
/// memory per rank, for sequences of `tokens` tokens.
RankCapacity rank_capacity(const ModelConfig& config, KvLayout layout, const ParallelLayout& parallel,
                           int64_t budget_bytes, int64_t tokens, bool with_mtp = false);

}  // namespace dsv4
