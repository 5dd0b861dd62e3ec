// ShardPlan ownership: every byte of every tensor is held exactly once per TP group (split kinds) or per
// EP replica (experts), per-rank bytes add up, and bad splits are refused naming the tensor.
// Also DSV4_FAULT_INJECT parsing (parallel/fault_inject.h).
#include <gtest/gtest.h>

#include <vector>

#include "parallel/fault_inject.h"
#include "parallel/shard_plan.h"
#include "runtime/core/error.h"

namespace dsv4::parallel {
namespace {

uint64_t tensor_bytes(const TensorSpec& s) {
  int64_t n = 1;
  for (int64_t d : s.shape) n *= d;
  return dtype_bytes(s.dtype, n);
}

// Marks the bytes of `range` in `cover` (one counter per byte).
void mark(std::vector<int>& cover, const StridedRange& range) {
  for (uint64_t i = 0; i < range.count; ++i)
    for (uint64_t b = 0; b < range.length; ++b) ++cover.at(range.offset + i * range.stride + b);
}

std::vector<TensorSpec> small_model() {
  return {
      {"norm", {64}, DType::kF32, SplitKind::kReplicated},
      {"wq", {256, 64}, DType::kBF16, SplitKind::kRowSplit},
      {"wo", {64, 256}, DType::kF8E4M3, SplitKind::kColumnSplit, -1, 32},
      {"wo_scale", {1, 8}, DType::kF32, SplitKind::kColumnSplit},
      {"embed", {1001, 16}, DType::kBF16, SplitKind::kVocabSplit},
      {"fp4_w", {8, 64}, DType::kFP4E2M1, SplitKind::kColumnSplit, -1, 2},
      {"expert0.w1", {32, 16}, DType::kF8E4M3, SplitKind::kExpert, 0},
      {"expert5.w1", {32, 16}, DType::kF8E4M3, SplitKind::kExpert, 5},
      {"expert7.w2", {16, 32}, DType::kBF16, SplitKind::kExpert, 7},
  };
}

TEST(ParallelShardPlan, EveryByteOncePerGroupForEveryLayout) {
  const MeshModelDims dims{8, 8, 8, 1024, 128};
  const MeshConfig layouts[] = {{1, 1, 1, 1, 1}, {2, 1, 2, 2, 1}, {4, 2, 2, 4, 1}, {4, 1, 4, 2, 1},
                                {8, 2, 4, 8, 1}, {8, 1, 8, 4, 1}, {6, 3, 2, 2, 1}, {4, 1, 2, 4, 2}};
  for (const MeshConfig& layout : layouts) {
    const Mesh mesh = Mesh::create(layout, dims);
    ShardPlan plan(mesh);
    for (auto& spec : small_model()) plan.add(spec);
    uint64_t expected_sum = 0;
    for (const TensorSpec& spec : plan.tensors()) {
      // Copies of each byte: one per TP group for split tensors, one per EP replica for experts.
      const int copies = spec.split == SplitKind::kReplicated ? layout.world_size
                         : spec.split == SplitKind::kExpert   ? layout.world_size / layout.ep
                                                              : layout.world_size / layout.tp;
      expected_sum += tensor_bytes(spec) * copies;
      std::vector<int> cover(tensor_bytes(spec), 0);
      for (int r = 0; r < layout.world_size; ++r) {
        const TensorShard s = plan.shard(spec, r);
        mark(cover, s.range);
        if (s.owned) {
          int64_t shard_numel = 1;
          for (int64_t d : s.shape) shard_numel *= d;
          EXPECT_EQ(s.range.bytes(), dtype_bytes(spec.dtype, shard_numel)) << spec.name << " rank " << r;
        }
      }
      for (size_t b = 0; b < cover.size(); ++b)
        ASSERT_EQ(cover[b], copies) << spec.name << " byte " << b << " in " << mesh.str();
    }
    uint64_t sum = 0;
    for (int r = 0; r < layout.world_size; ++r) sum += plan.bytes_for_rank(r);
    EXPECT_EQ(sum, expected_sum) << mesh.str();
  }
}

TEST(ParallelShardPlan, ShardsOfOneRank) {
  const Mesh mesh = Mesh::create({4, 1, 4, 4, 1}, MeshModelDims{8, 8, 8, 512, 128});
  ShardPlan plan(mesh);
  // Row split: rank 2 holds rows [128, 192) of [256, 64] bf16.
  TensorShard s = plan.shard({"wq", {256, 64}, DType::kBF16, SplitKind::kRowSplit}, 2);
  EXPECT_EQ(s.begin, 128);
  EXPECT_EQ(s.shape, (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(s.range.offset, 128u * 64 * 2);
  EXPECT_EQ(s.range.count, 1u);
  // Column split: rank 1 holds columns [64, 128) of every row of [3, 256] f32.
  s = plan.shard({"wo", {3, 256}, DType::kF32, SplitKind::kColumnSplit}, 1);
  EXPECT_EQ(s.range.offset, 64u * 4);
  EXPECT_EQ(s.range.length, 64u * 4);
  EXPECT_EQ(s.range.stride, 256u * 4);
  EXPECT_EQ(s.range.count, 3u);
  // Vocab split of 10 rows over 4: shards of 3, 3, 3, 1.
  const TensorSpec vocab{"embed", {10, 2}, DType::kF32, SplitKind::kVocabSplit};
  EXPECT_EQ(plan.shard(vocab, 3).shape.front(), 1);
  EXPECT_EQ(plan.shard(vocab, 3).begin, 9);
  // Experts: 8 over ep 4 in blocks of 2; expert 5 lives on rank 2 only.
  EXPECT_EQ(plan.owners({"e5", {4}, DType::kF32, SplitKind::kExpert, 5}), (std::vector<int>{2}));
  EXPECT_EQ(plan.local_experts(3), (std::pair<int, int>{6, 2}));
}

TEST(ParallelShardPlan, ExpertsReplicatedOverEpReplicas) {
  const Mesh mesh = Mesh::create({8, 4, 2, 2, 1}, MeshModelDims{8, 8, 8, 256, 128});
  ShardPlan plan(mesh);
  // ep = 2: expert 5 (ep_rank 1) is held by ranks 1, 3, 5, 7.
  EXPECT_EQ(plan.owners({"e5", {4}, DType::kF32, SplitKind::kExpert, 5}), (std::vector<int>{1, 3, 5, 7}));
}

TEST(ParallelShardPlan, BadSplitsNameTheTensor) {
  const Mesh mesh = Mesh::create({16, 1, 16, 16, 1}, MeshModelDims{128, 16, 384, 0, 128});
  ShardPlan plan(mesh);
  auto message = [&](TensorSpec spec) {
    try {
      plan.add(spec);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(message({"shared.w1", {3072, 7168}, DType::kF8E4M3, SplitKind::kRowSplit, -1, 128})
                .find("tensor shared.w1: tp=16 gives 192 rows per rank, not a multiple of 128"),
            std::string::npos);
  EXPECT_NE(message({"x", {100, 4}, DType::kF32, SplitKind::kRowSplit}).find("tensor x: 100 rows cannot be split"),
            std::string::npos);
  EXPECT_NE(message({"e", {4}, DType::kF32, SplitKind::kExpert, 384}).find("tensor e: expert 384 outside"),
            std::string::npos);
  EXPECT_NE(message({"s", {}, DType::kF32, SplitKind::kColumnSplit}).find("tensor s: a scalar"), std::string::npos);
  EXPECT_TRUE(plan.tensors().empty());
}

TEST(ParallelFaultInject, ParsesTheSwitch) {
  EXPECT_EQ(parse_fault_spec("").rank, -1);
  FaultSpec spec = parse_fault_spec("rank=1,at=all_reduce");
  EXPECT_EQ(spec.rank, 1);
  EXPECT_EQ(spec.point, "all_reduce");
  EXPECT_EQ(spec.occurrence, 1);
  spec = parse_fault_spec("at=moe.combine#3,rank=12");
  EXPECT_EQ(spec.rank, 12);
  EXPECT_EQ(spec.point, "moe.combine");
  EXPECT_EQ(spec.occurrence, 3);
  for (const char* bad : {"rank=1", "at=x", "rank=x,at=y", "rank=1,at=y#0", "rank=1,when=y", "rank1,at=y"}) {
    try {
      parse_fault_spec(bad);
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("DSV4_FAULT_INJECT"), std::string::npos) << e.what();
    }
  }
  maybe_inject_fault("all_reduce", 0);  // the test runs without the variable: never throws
}

}  // namespace
}  // namespace dsv4::parallel
