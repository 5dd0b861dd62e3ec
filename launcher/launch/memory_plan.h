// What each rank of a deployment owns and how much memory it needs: weights (from the expected tensor set
// of the model, spec §7.2), decode state per sequence (spec §5.3) and a workspace estimate. Used by
// `dsv4-launch plan` and by the simulator's memory column.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "runtime/config/deployment_config.h"
#include "runtime/config/model_config.h"
#include "runtime/kv/memory_budget.h"  // workspace_bytes: the server subtracts the same workspace

namespace dsv4::launch {

/// Weight bytes one rank holds, from the runtime's ShardPlan (model_shard_plan, what load_shard reads):
/// replicated tensors in full, its 1/tp slice of the TP-split tensors and the experts of its EP slot. Given
/// for rank 0, which holds the most (a full ceil(V/tp)-row vocabulary shard; the last tp rank's may be shorter).
struct RankWeights {
  int64_t replicated = 0;  // wq_a, wkv, norms, compressors, indexer, gate, hc_*, tid2eid, MTP projections
  int64_t tp_shard = 0;    // this rank's slice of wq_b, wo_a, wo_b, attn_sink, shared expert, embed, head
  int64_t experts = 0;     // routed experts this rank owns (all layers, MTP included)
  int64_t total() const { return replicated + tp_shard + experts; }
};

/// Bytes of decode state of one sequence in the production FP8 layout (spec §5.3).
struct SequenceState {
  double bytes_per_token = 0;     // growing compressed rows over all layers (CSA main + indexer, HCA main)
  int64_t ring_bytes = 0;         // raw sliding-window ring, every layer plus the MTP layer
  int64_t compressor_bytes = 0;   // fp32 compressor buffers (kv and score) of every compressed layer
  int64_t main_row_bytes = 0;     // one compressed / raw KV row: FP8 nope dims + bf16 rope dims + scales
  int64_t indexer_row_bytes = 0;  // one indexer row: FP8 dims + one fp32 scale
  /// Whole state of a sequence holding `tokens` tokens, split over `cp` context-parallel ranks (the growing
  /// rows are divided; the ring and compressor buffers are kept on every CP rank).
  int64_t at(int64_t tokens, int64_t cp = 1) const;
};

/// Rank 0's weight bytes split by ownership (model_shard_plan). Throws if the layout cannot shard the model.
RankWeights weights_per_rank(const ModelConfig& model, const ParallelLayout& layout);

/// Decode state per sequence for `model`.
SequenceState sequence_state(const ModelConfig& model);

/// The whole plan of a deployment.
struct MemoryPlan {
  RankWeights weights;
  SequenceState state;
  int64_t sequences_per_rank = 0;  // ceil(max_running / dp): the scheduler's sequences land on one replica
  int64_t workspace = 0;           // deployment_workspace_bytes: max_batch_tokens / dp tokens at max_prompt_tokens
  int64_t required = 0;            // weights + workspace + fixed state of every sequence + one longest prompt
  int64_t budget = 0;
  int64_t max_context_sequences = 0;  // sequences at max_prompt_tokens the rest of the budget holds (>= 0)
  /// budget - weights - workspace: what dsv4-server gives each rank's state pool (RankMemory::state()); <= 0
  /// means the server refuses to start.
  int64_t state_budget = 0;
  bool fits() const { return required <= budget; }
};

MemoryPlan plan_memory(const ModelConfig& model, const DeploymentConfig& deployment);

/// The text `dsv4-launch plan` prints (layout, ownership, memory) and its JSON form (`--json`).
std::string format_plan(const ModelConfig& model, const DeploymentConfig& deployment, const MemoryPlan& plan);
nlohmann::json plan_to_json(const ModelConfig& model, const DeploymentConfig& deployment, const MemoryPlan& plan);

/// "1.23 GiB" style.
std::string format_bytes(double bytes);

}  // namespace dsv4::launch
