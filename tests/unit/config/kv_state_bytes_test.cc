// Sequence-state bytes (runtime/kv/state_bytes.h) against the figures of spec §5.3, and the planner's
// consistency (exact row counts, budget search), and `dsv4 plan-memory`.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "runtime/config/model_config.h"
#include "runtime/core/error.h"
#include "runtime/kv/state_bytes.h"
#include "tests/support/test_paths.h"

namespace dsv4 {
namespace {

constexpr int64_t kMillion = 1048576;

ModelConfig load(const std::string& name) {
  return load_model_config(testing::source_dir() / "configs" / "models" / name);
}

double round2(double v) { return std::round(v * 100.0) / 100.0; }

TEST(KvStateBytes, RowSizes) {
  const ModelConfig flash = load("flash.json");
  const KvRowBytes fp8 = kv_row_bytes(flash, KvLayout::kProductionFp8);
  EXPECT_EQ(fp8.main_row, 584);  // 448 e4m3 + 64 bf16 + 7 ue8m0 + 1 pad
  EXPECT_EQ(fp8.indexer_row, 132);
  const KvRowBytes bf16 = kv_row_bytes(flash, KvLayout::kReferenceBf16);
  EXPECT_EQ(bf16.main_row, 1024);
  EXPECT_EQ(bf16.indexer_row, 256);
}

TEST(KvStateBytes, FlashMatchesSpec) {
  const ModelConfig c = load("flash.json");
  const SequenceStateBytes fp8 = sequence_state_bytes(c, KvLayout::kProductionFp8);
  EXPECT_EQ(fp8.per_token, 3850.25);           // 21 x 179 + 20 x 4.5625
  EXPECT_EQ(fp8.ring, 43 * 128 * 584);         // 3.1 MiB
  EXPECT_EQ(round2(fp8.ring / 1048576.0), 3.07);
  EXPECT_EQ(fp8.compressor, 12206080);         // 11.6 MiB
  EXPECT_EQ(round2(fp8.compressor / 1048576.0), 11.64);
  EXPECT_EQ(fp8.mtp_ring, 128 * 584);
  const int64_t grown = sequence_bytes(c, KvLayout::kProductionFp8, kMillion) - fp8.fixed();
  EXPECT_EQ(static_cast<double>(grown), 3850.25 * kMillion);
  EXPECT_EQ(round2(grown / 1e9), 4.04);
  EXPECT_EQ(round2(grown / 1073741824.0), 3.76);

  const SequenceStateBytes bf16 = sequence_state_bytes(c, KvLayout::kReferenceBf16);
  EXPECT_EQ(bf16.per_token, 21 * 320 + 20 * 8);
  const int64_t grown16 = sequence_bytes(c, KvLayout::kReferenceBf16, kMillion) - bf16.fixed();
  EXPECT_EQ(round2(grown16 / 1e9), 7.21);
  EXPECT_EQ(round2(grown16 / 1073741824.0), 6.72);
  EXPECT_EQ(bf16.compressor, fp8.compressor);  // fp32 in both layouts
}

TEST(KvStateBytes, ProMatchesSpec) {
  const ModelConfig c = load("pro.json");
  const SequenceStateBytes fp8 = sequence_state_bytes(c, KvLayout::kProductionFp8);
  EXPECT_EQ(fp8.per_token, 5511.4375);  // 30 x 179 + 31 x 4.5625, printed as 5511.44 in the spec
  EXPECT_EQ(round2(fp8.per_token), 5511.44);
  EXPECT_EQ(fp8.ring, 61 * 128 * 584);  // 4.35 MiB ("4.3 MiB" in the spec)
  EXPECT_EQ(fp8.compressor, 18710528);
  EXPECT_EQ(round2(fp8.compressor / 1048576.0), 17.84);
  const int64_t grown = sequence_bytes(c, KvLayout::kProductionFp8, kMillion) - fp8.fixed();
  EXPECT_EQ(round2(grown / 1e9), 5.78);
  EXPECT_EQ(round2(grown / 1073741824.0), 5.38);

  const SequenceStateBytes bf16 = sequence_state_bytes(c, KvLayout::kReferenceBf16);
  EXPECT_EQ(bf16.per_token, 30 * 320 + 31 * 8);
  const int64_t grown16 = sequence_bytes(c, KvLayout::kReferenceBf16, kMillion) - bf16.fixed();
  EXPECT_EQ(round2(grown16 / 1e9), 10.33);
  EXPECT_EQ(round2(grown16 / 1073741824.0), 9.62);
}

// Rows appear only when their window's last token arrives: floor(tokens / ratio) of them per layer.
TEST(KvStateBytes, RowsAreCountedWhenEmitted) {
  const ModelConfig c = load("flash.json");
  const KvLayout fp8 = KvLayout::kProductionFp8;
  const int64_t fixed = sequence_state_bytes(c, fp8).fixed();
  EXPECT_EQ(sequence_bytes(c, fp8, 0), fixed);
  EXPECT_EQ(sequence_bytes(c, fp8, 3), fixed);
  EXPECT_EQ(sequence_bytes(c, fp8, 4), fixed + 21 * (584 + 132));        // one CSA row per CSA layer
  EXPECT_EQ(sequence_bytes(c, fp8, 127), fixed + 21 * 31 * (584 + 132));
  EXPECT_EQ(sequence_bytes(c, fp8, 128), fixed + 21 * 32 * (584 + 132) + 20 * 584);  // first HCA rows
  EXPECT_EQ(sequence_bytes(c, fp8, 0, /*with_mtp=*/true), fixed + 128 * 584);
  EXPECT_THROW(sequence_bytes(c, fp8, -1), Error);
}

TEST(KvStateBytes, BudgetSearch) {
  const ModelConfig c = load("flash.json");
  const KvLayout fp8 = KvLayout::kProductionFp8;
  const int64_t budget = 2LL << 30;  // 2 GiB
  const int64_t n = max_context_tokens(c, fp8, budget);
  EXPECT_GT(n, 0);
  EXPECT_LE(sequence_bytes(c, fp8, n), budget);
  EXPECT_GT(sequence_bytes(c, fp8, n + 1), budget);
  EXPECT_EQ(max_context_tokens(c, fp8, 1000), 0);                       // not even the fixed state
  EXPECT_EQ(max_context_tokens(c, fp8, 1LL << 40), c.max_position_embeddings);  // capped at the model's max
  const int64_t one = sequence_bytes(c, fp8, 65536);
  EXPECT_EQ(sequences_that_fit(c, fp8, 65536, 10 * one + one - 1), 10);
}

TEST(KvStateBytes, PlanMemoryCommandPrintsSpecFigures) {
  std::string out;
  const std::string cmd = testing::dsv4_bin().string() + " plan-memory --config " +
                          (testing::source_dir() / "configs" / "models" / "pro.json").string() +
                          " --context 1048576 --budget-gib 80";
  ASSERT_EQ(testing::run_command(cmd, &out), 0) << out;
  EXPECT_NE(out.find("5511.4375 B"), std::string::npos) << out;
  EXPECT_NE(out.find("9848.0000 B"), std::string::npos) << out;
  EXPECT_NE(out.find("5.38 GiB"), std::string::npos) << out;
  EXPECT_NE(out.find("31 HCA"), std::string::npos) << out;
  EXPECT_NE(out.find("sequences of this context"), std::string::npos) << out;

  ASSERT_NE(testing::run_command(testing::dsv4_bin().string() + " plan-memory --config /nonexistent.json", &out), 0);
  EXPECT_NE(out.find("/nonexistent.json"), std::string::npos) << out;
}

}  // namespace
}  // namespace dsv4
