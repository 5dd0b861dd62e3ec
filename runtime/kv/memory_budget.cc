#include "runtime/kv/memory_budget.h"

#include <algorithm>
#include <cstdio>
#include <string>

#include "runtime/core/error.h"

namespace dsv4 {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// "2.00 GiB (2147483648 bytes)": the rounded figure for people, the exact one for comparing with the YAML.
std::string bytes_text(int64_t bytes) {
  char text[64];
  std::snprintf(text, sizeof(text), "%.2f MiB (%lld bytes)", static_cast<double>(bytes) / (1024.0 * 1024.0),
                static_cast<long long>(bytes));
  return text;
}

}  // namespace

int64_t workspace_bytes(const ModelConfig& m, const ParallelLayout& l, int64_t tokens, int64_t context,
                        double imbalance) {
  const int64_t t = tokens;
  const int64_t d = m.hidden_size;
  int64_t bytes = 0;
  bytes += 2 * t * m.hc_mult * d * 4;                  // residual streams in and out, fp32
  bytes += t * (m.num_heads / l.tp) * m.head_dim * 2;  // query of this rank's heads, bf16
  bytes += t * m.q_lora_rank * 2;                      // q_lora activations, bf16
  const auto routed = static_cast<int64_t>(static_cast<double>(t * m.num_experts_per_token) * imbalance / l.tp);
  bytes += routed * (d + d / 128 * 4);                // dispatch buffer: FP8 + one fp32 scale per 128
  bytes += routed * d * 2;                            // combine buffer, bf16
  bytes += routed * 2 * m.moe_intermediate_size * 2;  // expert gate/up output, bf16
  bytes += t * ceil_div(m.vocab_size, l.tp) * 4;      // logits of this vocab shard, fp32
  const int64_t rows = ceil_div(context, 4);
  bytes += std::min<int64_t>(t, 128) * rows * 4;  // indexer score tile, fp32
  return bytes;
}

int64_t deployment_workspace_bytes(const ModelConfig& model, const ParallelLayout& layout,
                                   const SchedulerLimits& limits) {
  return workspace_bytes(model, layout, ceil_div(limits.max_batch_tokens, layout.dp), limits.max_prompt_tokens);
}

const RankMemory& tightest_rank(std::span<const RankMemory> ranks) {
  DSV4_CHECK(!ranks.empty()) << "tightest_rank: no rank";
  return *std::min_element(ranks.begin(), ranks.end(), [](const RankMemory& a, const RankMemory& b) {
    return a.state() != b.state() ? a.state() < b.state() : a.rank < b.rank;
  });
}

int64_t state_budget_bytes(std::span<const RankMemory> ranks, int64_t override_bytes, std::string_view origin) {
  const RankMemory& t = tightest_rank(ranks);
  const std::string key = std::string(origin) + ": memory.budget_per_rank";
  DSV4_CHECK_ARG(t.state() > 0) << key << " = " << bytes_text(t.budget) << " leaves nothing for sequence state on rank "
                                << t.rank << ": its weights take " << bytes_text(t.weights)
                                << " and the activation workspace " << bytes_text(t.workspace) << ", together "
                                << bytes_text(t.weights + t.workspace) << "; raise memory.budget_per_rank "
                                << "or lower scheduler.max_batch_tokens / scheduler.max_prompt_tokens";
  if (override_bytes <= 0) return t.state();
  DSV4_CHECK_ARG(override_bytes <= t.state())
      << "--state-budget-bytes " << override_bytes << " exceeds what " << key << " = " << bytes_text(t.budget)
      << " leaves for sequence state on rank " << t.rank << ": " << bytes_text(t.state()) << " after weights "
      << bytes_text(t.weights) << " and workspace " << bytes_text(t.workspace);
  return override_bytes;
}

}  // namespace dsv4
