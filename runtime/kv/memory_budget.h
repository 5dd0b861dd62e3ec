// One rank's memory split, shared by the planner (`dsv4-launch plan`, launcher/launch/memory_plan.h) and the
// server (launcher/server/main.cc), so that both give sequence state the same bytes:
//
//   state budget = memory.budget_per_rank - this rank's weight bytes - the activation workspace of a step
//
// taken as the minimum over every rank of the job (a replica's TP ranks each hold the whole state of its
// sequences, so the tightest rank decides how much the scheduler may admit on any replica).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "runtime/config/deployment_config.h"
#include "runtime/config/model_config.h"

namespace dsv4 {

/// Activation workspace of one rank for a step of `tokens` tokens (per attention replica) at `context`:
/// residual streams (hc_mult x D, fp32, twice), the query of this rank's heads (bf16), the q_lora activations
/// (bf16), MoE dispatch (FP8 + scales) and combine (bf16) buffers for top-k copies times `imbalance` (headroom
/// over the mean load of a rank, for routing noise and skew), the expert intermediate (2F, bf16), logits of
/// this rank's vocab shard (fp32) and the indexer score tile (128 queries x every compressed row, fp32; the
/// indexer is chunked by query so the workspace stays bounded at long context).
int64_t workspace_bytes(const ModelConfig& model, const ParallelLayout& layout, int64_t tokens, int64_t context,
                        double imbalance = 2.0);

/// The workspace a deployment's ranks set aside: one step of ceil(max_batch_tokens / dp) tokens per replica at
/// max_prompt_tokens of context (what `dsv4-launch plan` prints and the server subtracts).
int64_t deployment_workspace_bytes(const ModelConfig& model, const ParallelLayout& layout,
                                   const SchedulerLimits& limits);

/// One rank's memory: what it may use and what its weights and workspace take.
struct RankMemory {
  int64_t rank = 0;
  int64_t budget = 0;     // memory.budget_per_rank
  int64_t weights = 0;    // the weight bytes this rank holds
  int64_t workspace = 0;  // deployment_workspace_bytes
  /// What is left for sequence state; <= 0 when weights and workspace take it all.
  int64_t state() const { return budget - weights - workspace; }
};

/// The rank with the least left for state (the lowest rank on ties). `ranks` must not be empty.
const RankMemory& tightest_rank(std::span<const RankMemory> ranks);

/// The state budget every rank uses (pool and scheduler): the tightest rank's state(), or `override_bytes`
/// when > 0 (an operator's --state-budget-bytes). Throws Error(kInvalidArgument) naming the numbers, the
/// tightest rank and `<origin>: memory.budget_per_rank` when nothing is left for state, or when the override
/// exceeds what is left.
int64_t state_budget_bytes(std::span<const RankMemory> ranks, int64_t override_bytes, std::string_view origin);

}  // namespace dsv4
