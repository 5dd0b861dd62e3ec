// The capacity planner (runtime/kv/capacity.h) and `dsv4 plan-memory` with a layout, against figures
// worked out by hand from spec §5.3:
//   Flash fixed state: ring 43 x 128 x 584 = 3,214,336 B, compressor windows 12,206,080 B.
//   Per CSA row 584 + 132 = 716 B (21 layers: 15,036 B per 4 tokens); per HCA row 584 B (20 layers: 11,680 B
//   per 128 tokens). At 1,048,576 tokens: 262,144 CSA and 8,192 HCA rows per layer.
#include <gtest/gtest.h>

#include <string>

#include "runtime/config/model_config.h"
#include "runtime/core/error.h"
#include "runtime/kv/capacity.h"
#include "tests/support/test_paths.h"

namespace dsv4 {
namespace {

constexpr int64_t kMillion = 1048576;
constexpr int64_t kGiB = int64_t{1} << 30;
constexpr int64_t kFlashFixed = 3214336 + 12206080;

ModelConfig load(const std::string& name) {
  return load_model_config(testing::source_dir() / "configs" / "models" / name);
}

TEST(KvCapacity, FlashMillionTokensByHand) {
  const ModelConfig c = load("flash.json");
  // cp = 1: 15,420,416 + 21 x 262,144 x 716 + 20 x 8,192 x 584.
  const int64_t one = kFlashFixed + int64_t{21} * 262144 * 716 + int64_t{20} * 8192 * 584;
  EXPECT_EQ(one, 4052700160);
  EXPECT_EQ(rank_sequence_bytes(c, KvLayout::kProductionFp8, kMillion, 1), one);
  EXPECT_EQ(rank_sequence_bytes(c, KvLayout::kProductionFp8, kMillion, 1), sequence_bytes(c, KvLayout::kProductionFp8, kMillion));
  // cp = 2: the rows halve exactly, the fixed state stays on each rank.
  EXPECT_EQ(rank_sequence_bytes(c, KvLayout::kProductionFp8, kMillion, 2), 2034060288);
  // An odd row count: the larger share is counted (1,000,001 tokens: 250,000 CSA rows -> 83,334 of 3;
  // 7,812 HCA rows -> 2,604).
  EXPECT_EQ(rank_sequence_bytes(c, KvLayout::kProductionFp8, 1000001, 3),
            kFlashFixed + int64_t{21} * 83334 * 716 + int64_t{20} * 2604 * 584);

  // 72 GiB of state per rank, dp 8: floor(77,309,411,328 / 4,052,700,160) = 19 per GPU, 152 in all.
  RankCapacity r = rank_capacity(c, KvLayout::kProductionFp8, ParallelLayout{8, 1, 8, 1}, 72 * kGiB, kMillion);
  EXPECT_EQ(r.bytes_per_sequence, one);
  EXPECT_EQ(r.sequences_per_rank, 19);
  EXPECT_EQ(r.sequences_total, 152);
  EXPECT_EQ(r.longest_context, kMillion);  // bounded by max_position_embeddings
}

TEST(KvCapacity, LongestContextByHand) {
  const ModelConfig c = load("flash.json");
  // 1 GiB: 274,875 tokens -> 68,718 CSA rows, 2,147 HCA rows:
  // 15,420,416 + 68,718 x 15,036 + 2,147 x 11,680 = 1,073,741,224 <= 1,073,741,824; one token more adds a
  // CSA row (15,036 B) and no longer fits.
  const RankCapacity r = rank_capacity(c, KvLayout::kProductionFp8, ParallelLayout{}, kGiB, 4096);
  EXPECT_EQ(r.longest_context, 274875);
  EXPECT_EQ(rank_sequence_bytes(c, KvLayout::kProductionFp8, 274875, 1), 1073741224);
  // Less than the fixed state: nothing fits.
  const RankCapacity none = rank_capacity(c, KvLayout::kProductionFp8, ParallelLayout{}, kFlashFixed - 1, 0);
  EXPECT_EQ(none.longest_context, 0);
  EXPECT_EQ(none.sequences_per_rank, 0);
  EXPECT_THROW(rank_sequence_bytes(c, KvLayout::kProductionFp8, 16, 0), Error);
}

TEST(KvCapacity, PlanMemoryPrintsLayoutCapacity) {
  std::string out;
  const std::string flash = (testing::source_dir() / "configs" / "models" / "flash.json").string();
  // Flash, cp 2, dp 8, 40 GiB per rank: floor(42,949,672,960 / 2,034,060,288) = 21 per GPU, 168 in all.
  ASSERT_EQ(testing::run_command(testing::dsv4_bin().string() + " plan-memory --config " + flash +
                                     " --context 1048576 --dp 8 --cp 2 --budget-gib 40",
                                 &out),
            0)
      << out;
  EXPECT_NE(out.find("layout dp=8 tp=1 ep=1 cp=2"), std::string::npos) << out;
  EXPECT_NE(out.find("2,034,060,288"), std::string::npos) << out;
  EXPECT_NE(out.find("sequences of this context per GPU  21 "), std::string::npos) << out;
  EXPECT_NE(out.find("sequences, all 8 dp replicas"), std::string::npos) << out;
  EXPECT_NE(out.find("168 "), std::string::npos) << out;
  // A deployment brings its model, layout and budget; the state budget is what weights and workspace leave.
  const std::string dep = (testing::source_dir() / "configs" / "deployments" / "pro-16x8xh100.yaml").string();
  ASSERT_EQ(testing::run_command(testing::dsv4_bin().string() + " plan-memory --deployment " + dep, &out), 0) << out;
  EXPECT_NE(out.find("layout dp=16 tp=8 ep=128 cp=1"), std::string::npos) << out;
  EXPECT_NE(out.find("5,802,431,488"), std::string::npos) << out;  // Pro at 1M tokens, by hand in the report
  EXPECT_NE(out.find("- weights"), std::string::npos) << out;
  // A layout without a budget, or both a deployment and a layout, are refused.
  EXPECT_NE(testing::run_command(testing::dsv4_bin().string() + " plan-memory --config " + flash + " --cp 2", &out),
            0);
  EXPECT_NE(out.find("--budget-gib"), std::string::npos) << out;
  EXPECT_NE(testing::run_command(testing::dsv4_bin().string() + " plan-memory --deployment " + dep + " --tp 2", &out),
            0);
}

}  // namespace
}  // namespace dsv4
