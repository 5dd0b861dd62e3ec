// The per-rank memory split shared by `dsv4-launch plan` and dsv4-server (runtime/kv/memory_budget.h), against
// numbers worked out by hand for the tiny model (configs/models/tiny.json: D 256, hc_mult 4, 4 heads of 128,
// q_lora 128, 8 experts top-2 of width 256, vocabulary 129,280) under tiny-cpu.yaml's layout (dp 2, tp 2) and
// limits (max_batch_tokens 2048 -> 1024 tokens per replica, max_prompt_tokens 4096).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "runtime/config/model_config.h"
#include "runtime/core/error.h"
#include "runtime/kv/memory_budget.h"
#include "tests/support/test_paths.h"

namespace dsv4 {
namespace {

ModelConfig tiny() { return load_model_config(testing::source_dir() / "configs" / "models" / "tiny.json"); }

// The tiny model's workspace for 1024 tokens at 4096 context under tp 2, term by term:
constexpr int64_t kResidual = 2 * 1024 * 4 * 256 * 4;   // 8,388,608: two fp32 streams of hc_mult x D
constexpr int64_t kQuery = 1024 * 2 * 128 * 2;          // 524,288: 2 heads of 128, bf16
constexpr int64_t kQLora = 1024 * 128 * 2;              // 262,144
constexpr int64_t kRouted = 1024 * 2 * 2 / 2;           // 2,048 expert copies (top-2 x imbalance 2 / tp 2)
constexpr int64_t kDispatch = kRouted * (256 + 2 * 4);  // 540,672: FP8 + two fp32 scales per row
constexpr int64_t kCombine = kRouted * 256 * 2;         // 1,048,576
constexpr int64_t kExpert = kRouted * 2 * 256 * 2;      // 2,097,152
constexpr int64_t kLogits = 1024 * 64640 * 4;           // 264,765,440: half the vocabulary, fp32
constexpr int64_t kIndexer = 128 * 1024 * 4;            // 524,288: 128 queries x 1024 CSA rows
constexpr int64_t kTinyWorkspace = 278151168;

TEST(KvMemoryBudget, WorkspaceOfTheTinyModelByHand) {
  EXPECT_EQ(kResidual + kQuery + kQLora + kDispatch + kCombine + kExpert + kLogits + kIndexer, kTinyWorkspace);
  const ModelConfig c = tiny();
  const ParallelLayout layout{.dp = 2, .tp = 2, .ep = 4, .cp = 1};
  EXPECT_EQ(workspace_bytes(c, layout, 1024, 4096), kTinyWorkspace);
  // The deployment's step: ceil(2048 / dp 2) tokens at max_prompt_tokens, what the planner and the server use.
  SchedulerLimits limits;
  limits.max_batch_tokens = 2048;
  limits.max_prompt_tokens = 4096;
  EXPECT_EQ(deployment_workspace_bytes(c, layout, limits), kTinyWorkspace);
  // An odd batch rounds up per replica: 2047 tokens over dp 2 is still a 1024-token step.
  limits.max_batch_tokens = 2047;
  EXPECT_EQ(deployment_workspace_bytes(c, layout, limits), kTinyWorkspace);
}

TEST(KvMemoryBudget, TheTightestRankDecides) {
  constexpr int64_t kGiB = int64_t{1} << 30;
  // Rank 1 holds more weights (a longer vocabulary shard), rank 3 as much as rank 1: the lowest rank wins ties.
  const std::vector<RankMemory> ranks = {{0, 2 * kGiB, 3000000, kTinyWorkspace},
                                         {1, 2 * kGiB, 3500000, kTinyWorkspace},
                                         {2, 2 * kGiB, 3000000, kTinyWorkspace},
                                         {3, 2 * kGiB, 3500000, kTinyWorkspace}};
  EXPECT_EQ(tightest_rank(ranks).rank, 1);
  // 2,147,483,648 - 3,500,000 - 278,151,168 = 1,865,832,480 bytes for state on every rank.
  EXPECT_EQ(ranks[1].state(), 1865832480);
  EXPECT_EQ(state_budget_bytes(ranks, 0, "tiny-cpu.yaml"), 1865832480);
  // An operator may lower it ...
  EXPECT_EQ(state_budget_bytes(ranks, 1 << 20, "tiny-cpu.yaml"), 1 << 20);
  EXPECT_EQ(state_budget_bytes(ranks, 1865832480, "tiny-cpu.yaml"), 1865832480);
  // ... but not promise more than the tightest rank has.
  try {
    state_budget_bytes(ranks, 1865832481, "tiny-cpu.yaml");
    FAIL() << "an override above what is left was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    const std::string m = e.what();
    EXPECT_NE(m.find("--state-budget-bytes 1865832481"), std::string::npos) << m;
    EXPECT_NE(m.find("tiny-cpu.yaml: memory.budget_per_rank"), std::string::npos) << m;
    EXPECT_NE(m.find("on rank 1"), std::string::npos) << m;
  }
}

TEST(KvMemoryBudget, NothingLeftIsRefusedWithTheNumbersAndTheKey) {
  // 256 MiB cannot hold 3 MB of weights and the 265 MiB workspace.
  const std::vector<RankMemory> ranks = {{0, 256 << 20, 3000000, kTinyWorkspace},
                                         {1, 256 << 20, 3000000, kTinyWorkspace}};
  EXPECT_EQ(ranks[0].state(), 268435456 - 3000000 - kTinyWorkspace);
  try {
    state_budget_bytes(ranks, 0, "small.yaml");
    FAIL() << "a budget that leaves nothing for state was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    const std::string m = e.what();
    EXPECT_NE(m.find("small.yaml: memory.budget_per_rank = 256.00 MiB (268435456 bytes)"), std::string::npos) << m;
    EXPECT_NE(m.find("on rank 0"), std::string::npos) << m;
    EXPECT_NE(m.find("(3000000 bytes)"), std::string::npos) << m;
    EXPECT_NE(m.find("(278151168 bytes)"), std::string::npos) << m;
  }
  // Exactly nothing left is refused too (a pool of 0 bytes admits nothing).
  const std::vector<RankMemory> exact = {{0, 3000000 + kTinyWorkspace, 3000000, kTinyWorkspace}};
  EXPECT_THROW(state_budget_bytes(exact, 0, "x.yaml"), Error);
}

}  // namespace
}  // namespace dsv4
