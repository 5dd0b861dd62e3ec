// load_shard on the golden checkpoints: for every layout of 1..4 ranks (tp 1/2, ep 1/2/4, dp 1..4) each rank
// reads exactly its planned bytes, the ranks of a TP group (EP group for experts) cover every tensor exactly
// once, each rank reads within 5% of its even share, and every shard tensor equals the matching slice of the
// whole checkpoint bitwise (linear outputs against row bands / column_slice of the whole weights, raw bytes
// for embed, head, sinks and experts). Bad layouts and checkpoints are refused naming the problem.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <vector>

#include "kernels/ops/linear.h"
#include "parallel/mesh.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/expected_tensors.h"
#include "runtime/checkpoint/writer.h"
#include "runtime/core/error.h"
#include "runtime/model/model_parallel.h"
#include "runtime/model/shard_load.h"
#include "tests/support/test_paths.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;
using parallel::SplitKind;

struct Layout {
  int tp, ep, dp;
  int world() const { return tp * dp; }
};

// Every layout of 1..4 ranks the issue asks for (tp in {1, 2}, ep in {1, 2, 4}, dp in {1, 2}), plus dp 3 / 4.
const std::vector<Layout> kLayouts = {{1, 1, 1}, {2, 1, 1}, {1, 2, 2}, {2, 2, 1}, {1, 1, 2}, {1, 1, 3},
                                      {2, 2, 2}, {2, 4, 2}, {1, 4, 4}, {1, 2, 4}};

parallel::Mesh make_mesh(const ModelConfig& config, const Layout& l) {
  parallel::MeshConfig mc;
  mc.world_size = l.world();
  mc.tp = l.tp;
  mc.ep = l.ep;
  mc.dp = l.dp;
  return parallel::Mesh::create(mc, mesh_dims(config));
}

const Checkpoint& golden(const std::string& name) {
  static std::map<std::string, Checkpoint> open;
  auto it = open.find(name);
  if (it == open.end()) {
    it = open.emplace(name, Checkpoint::open(testing::golden_model_dir(name))).first;
  }
  return it->second;
}

// The whole model bound zero-copy to the checkpoint (what Model::from_checkpoint binds).
ModelWeights whole_weights(const Checkpoint& ck) {
  return bind_weights(ck.config(), [&ck](const std::string& n) { return ck.find(n); });
}

std::vector<float> randn(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// y = x W[row0 : row0 + rows]^T for m random rows x.
std::vector<float> apply(const kernels::WeightRef& w, int64_t row0, int64_t rows, uint32_t seed) {
  const int64_t m = 3;
  const std::vector<float> x = randn(m * w.in, seed);
  std::vector<float> y(m * rows);
  kernels::cpu::linear({x.data(), m, w.in, w, row0, rows, y.data(), rows, false});
  return y;
}

// The shard's weight equals rows [row0, row0 + shard.out) of the whole weight (same inputs, bitwise).
void expect_row_band(const kernels::WeightRef& shard, const kernels::WeightRef& whole, int64_t row0,
                     const std::string& what) {
  ASSERT_EQ(shard.in, whole.in) << what;
  EXPECT_EQ(apply(shard, 0, shard.out, 11), apply(whole, row0, shard.out, 11)) << what;
}

// The shard's weight equals columns [col0, col0 + shard.in) of the whole weight.
void expect_column_band(const kernels::WeightRef& shard, const kernels::WeightRef& whole, int64_t col0,
                        const std::string& what) {
  ASSERT_EQ(shard.out, whole.out) << what;
  const kernels::WeightRef view = kernels::column_slice(whole, col0, shard.in);
  EXPECT_EQ(apply(shard, 0, shard.out, 12), apply(view, 0, view.out, 12)) << what;
}

void expect_bytes(const void* shard, const void* whole, size_t bytes, const std::string& what) {
  EXPECT_EQ(std::memcmp(shard, whole, bytes), 0) << what;
}

size_t weight_bytes(const kernels::WeightRef& w) { return dtype_bytes(w.dtype, w.out * w.in); }

void expect_layer(const LayerWeights& s, const LayerWeights& w, const ModelShard& sh, const ModelConfig& c,
                  const std::string& p) {
  const int64_t d = c.head_dim, Ro = c.o_lora_rank;
  expect_row_band(s.attn.wq_b, w.attn.wq_b, sh.head_begin * d, p + "wq_b");
  expect_row_band(s.attn.wo_a, w.attn.wo_a, sh.group_begin * Ro, p + "wo_a");
  expect_column_band(s.attn.wo_b, w.attn.wo_b, sh.group_begin * Ro, p + "wo_b");
  ASSERT_EQ(s.attn.sink.size, sh.num_heads);
  expect_bytes(s.attn.sink.data(), w.attn.sink.data() + sh.head_begin, sh.num_heads * sizeof(float), p + "sink");
  expect_row_band(s.attn.wq_a, w.attn.wq_a, 0, p + "wq_a (replicated)");
  expect_row_band(s.moe.gate, w.moe.gate, 0, p + "gate (replicated)");
  expect_row_band(s.moe.shared.w1, w.moe.shared.w1, sh.shared_begin, p + "shared w1");
  expect_row_band(s.moe.shared.w3, w.moe.shared.w3, sh.shared_begin, p + "shared w3");
  expect_column_band(s.moe.shared.w2, w.moe.shared.w2, sh.shared_begin, p + "shared w2");
  ASSERT_EQ(static_cast<int64_t>(s.moe.experts.size()), sh.num_experts) << p;
  for (int64_t i = 0; i < sh.num_experts; ++i) {
    const ExpertWeights& a = s.moe.experts[i];
    const ExpertWeights& b = w.moe.experts[sh.first_expert + i];
    const std::string e = p + "expert " + std::to_string(sh.first_expert + i);
    expect_bytes(a.w1.data, b.w1.data, weight_bytes(b.w1), e + " w1");
    expect_bytes(a.w2.data, b.w2.data, weight_bytes(b.w2), e + " w2");
    expect_bytes(a.w3.data, b.w3.data, weight_bytes(b.w3), e + " w3");
    expect_row_band(a.w2, b.w2, 0, e + " w2 (with scales)");
  }
}

class ShardLoad : public ::testing::TestWithParam<std::string> {};

TEST_P(ShardLoad, EveryRankReadsExactlyItsPlannedBytesAndTheGroupsCoverEveryTensorOnce) {
  const Checkpoint& ck = golden(GetParam());
  const ModelConfig& c = ck.config();
  for (const Layout& l : kLayouts) {
    const parallel::Mesh mesh = make_mesh(c, l);
    const parallel::ShardPlan plan = model_shard_plan(c, mesh);
    ASSERT_EQ(plan.total_bytes(), ck.total_bytes()) << mesh.str();
    for (int r = 0; r < mesh.world_size(); ++r) {
      ShardLoadReport rep;
      load_shard(ck, model_shard_for_rank(c, mesh, r), &rep);
      const double share = even_share_bytes(plan);
      EXPECT_EQ(rep.bytes_read, rep.bytes_planned) << mesh.str() << " rank " << r;
      EXPECT_EQ(rep.bytes_planned, plan.bytes_for_rank(r)) << mesh.str() << " rank " << r;
      // Even share (checkpoint bytes / owners): sum over all tensors of bytes / k, k = tp for TP- and
      // vocab-split tensors, ep for routed experts, 1 for replicated ones. Every layout here is balanced
      // (heads, groups, FFN, experts and the 512-row vocabulary divide evenly): the target is 5%.
      EXPECT_NEAR(rep.bytes_read / share, 1.0, 0.05) << mesh.str() << " rank " << r;
      std::printf("%-28s rank %d: read %9llu planned %9llu even share %11.0f ratio %.4f (%llu tensors)\n",
                  mesh.str().c_str(), r, static_cast<unsigned long long>(rep.bytes_read),
                  static_cast<unsigned long long>(rep.bytes_planned), share, rep.bytes_read / share,
                  static_cast<unsigned long long>(rep.tensors_read));
    }
    // Coverage: within each TP group (EP group for routed experts) the owners' slices tile every tensor
    // exactly once: disjoint, contiguous and summing to the tensor's bytes.
    for (const parallel::TensorSpec& spec : plan.tensors()) {
      const uint64_t bytes = dtype_bytes(spec.dtype, Shape(spec.shape.begin(), spec.shape.end()).numel());
      for (int r = 0; r < mesh.world_size(); ++r) {
        const bool expert = spec.split == SplitKind::kExpert;
        const std::vector<int> group = expert ? mesh.ep_group(r) : mesh.tp_group(r);
        if (group.front() != r) continue;  // each group once
        uint64_t sum = 0;
        int64_t next = 0;
        for (int member : group) {
          const parallel::TensorShard s = plan.shard(spec, member);
          sum += s.range.bytes();
          if (spec.split == SplitKind::kReplicated) continue;
          if (!s.owned) continue;
          EXPECT_EQ(s.begin, next) << spec.name << " in " << mesh.str() << ": slices not contiguous";
          const int64_t axis = spec.split == SplitKind::kColumnSplit ? spec.shape.size() - 1 : 0;
          next = s.begin + (expert ? 0 : s.shape[axis]);
        }
        const uint64_t copies = spec.split == SplitKind::kReplicated ? group.size() : 1;
        EXPECT_EQ(sum, bytes * copies) << spec.name << " in " << mesh.str() << ", group of rank " << r;
      }
    }
  }
}

TEST_P(ShardLoad, EveryShardTensorEqualsItsSliceOfTheWholeCheckpoint) {
  const Checkpoint& ck = golden(GetParam());
  const ModelConfig& c = ck.config();
  const ModelWeights whole = whole_weights(ck);
  const int64_t D = c.hidden_size;
  for (const Layout& l : kLayouts) {
    if (l.dp > 1 && l.ep == 1) continue;  // dp only repeats the tp slices; the ep > 1 layouts cover dp
    const parallel::Mesh mesh = make_mesh(c, l);
    for (int r = 0; r < mesh.world_size(); ++r) {
      const ModelShard sh = model_shard_for_rank(c, mesh, r);
      const ModelWeights w = load_shard(ck, sh);
      const std::string at = mesh.str() + " rank " + std::to_string(r) + ": ";
      ASSERT_EQ(w.shard.vocab_begin, sh.vocab_begin);
      ASSERT_EQ(w.shard.first_expert, sh.first_expert);
      ASSERT_EQ(w.embed.shape, Shape({sh.vocab_rows(), D})) << at;
      const size_t row_bytes = dtype_bytes(w.embed.dtype, D);
      expect_bytes(w.embed.data, static_cast<const uint8_t*>(whole.embed.data) + sh.vocab_begin * row_bytes,
                   sh.vocab_rows() * row_bytes, at + "embed");
      ASSERT_EQ(w.head.out, sh.vocab_rows()) << at;
      expect_bytes(w.head.data, static_cast<const uint8_t*>(whole.head.data) + sh.vocab_begin * row_bytes,
                   sh.vocab_rows() * row_bytes, at + "head");
      expect_bytes(w.hc_head.fn.data(), whole.hc_head.fn.data(), whole.hc_head.fn.size * sizeof(float), at + "hc");
      ASSERT_EQ(w.layers.size(), whole.layers.size());
      for (size_t i = 0; i < w.layers.size(); ++i) {
        expect_layer(w.layers[i], whole.layers[i], sh, c, at + "layer " + std::to_string(i) + " ");
      }
      ASSERT_EQ(w.mtp.size(), whole.mtp.size());
      for (size_t i = 0; i < w.mtp.size(); ++i) {
        expect_row_band(w.mtp[i].e_proj, whole.mtp[i].e_proj, 0, at + "mtp e_proj");
        expect_layer(w.mtp[i].block, whole.mtp[i].block, sh, c, at + "mtp " + std::to_string(i) + " ");
      }
      // Nothing points into the checkpoint's mapping: the shard owns its bytes.
      EXPECT_TRUE(w.storage);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, ShardLoad, ::testing::Values("golden-a", "golden-b"));

TEST(ShardLoadOwnership, TheWeightsOutliveTheCheckpoint) {
  const ModelConfig& c = golden("golden-b").config();
  const parallel::Mesh mesh = make_mesh(c, {2, 2, 1});
  std::optional<Checkpoint> ck = Checkpoint::open(testing::golden_model_dir("golden-b"));
  const ModelWeights w = load_shard(*ck, model_shard_for_rank(c, mesh, 1));
  ck.reset();  // unmaps the files
  const ModelWeights whole = whole_weights(golden("golden-b"));
  expect_column_band(w.layers[1].attn.wo_b, whole.layers[1].attn.wo_b, w.shard.group_begin * c.o_lora_rank,
                     "wo_b after closing");
}

TEST(ShardLoadErrors, ALayoutTheConfigCannotSatisfyIsRefusedNamingTheConstraint) {
  const Checkpoint& ck = golden("golden-b");  // 8 heads, 4 groups, 256-wide shared expert, 16 experts
  const ModelConfig& c = ck.config();
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  // tp = 4: 64 shared-expert columns per rank break the 128-blocked FP8 scales.
  EXPECT_NE(message([&] { make_mesh(c, {4, 1, 1}); }).find("not a multiple of the FP8 scale block 128"),
            std::string::npos);
  // A shard made by hand for such a layout reaches load_shard, which refuses it with the same constraint.
  ModelShard bad = ModelShard::whole(c);
  bad.tp_size = 3;
  bad.num_heads = 2;
  const std::string m = message([&] { load_shard(ck, bad); });
  EXPECT_NE(m.find("tp=3 does not divide the 8 attention heads"), std::string::npos) << m;
  // A shard that is not the one its position gets.
  const parallel::Mesh mesh = make_mesh(c, {2, 1, 1});
  ModelShard shifted = model_shard_for_rank(c, mesh, 1);
  shifted.head_begin = 0;
  EXPECT_NE(message([&] { load_shard(ck, shifted); }).find("does not match"), std::string::npos);
  // Vocabulary shards of ceil(V / tp) rows must leave every tp rank some rows.
  ModelConfig tiny_vocab = c;
  tiny_vocab.vocab_size = 5;  // ceil(5 / 4) = 2 rows per rank: ranks 0-2 hold 5 rows, rank 3 none
  tiny_vocab.moe_intermediate_size = 512;  // so that tp = 4 is otherwise valid
  parallel::MeshConfig mc;
  mc.world_size = mc.tp = 4;
  const parallel::Mesh four = parallel::Mesh::create(mc, mesh_dims(tiny_vocab));
  EXPECT_NE(message([&] { model_shard_for_rank(tiny_vocab, four, 3); }).find("without rows"), std::string::npos);
}

TEST(ShardLoadErrors, ACheckpointMissingATensorNamesIt) {
  // golden-b's config with every tensor but one, written as a sparse single-file checkpoint (validation
  // happens before any byte is read, so the values do not matter).
  const ModelConfig& c = golden("golden-b").config();
  const fs::path dir = testing::scratch_dir("shard_load_missing");
  fs::copy_file(golden("golden-b").dir() / "config.json", dir / "config.json");
  const std::string missing = "layers.1.ffn.shared_experts.w2.scale";
  std::vector<TensorSpec> specs;
  for (const ExpectedTensor& t : expected_tensors(c)) {
    if (t.name != missing) specs.push_back(TensorSpec{t.name, t.dtype, t.shape});
  }
  {
    SafetensorsWriter writer(dir / "model.safetensors", specs);
    for (const TensorSpec& s : writer.order()) writer.skip(s.nbytes());
    writer.finish();
  }
  const Checkpoint ck = Checkpoint::open(dir);
  const parallel::Mesh mesh = make_mesh(c, {2, 2, 1});
  try {
    load_shard(ck, model_shard_for_rank(c, mesh, 0));
    ADD_FAILURE() << "a checkpoint without " << missing << " was loaded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidCheckpoint);
    EXPECT_NE(std::string(e.what()).find("missing " + missing), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dsv4
