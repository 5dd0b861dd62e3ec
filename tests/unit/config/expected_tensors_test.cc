// expected_tensors(): the tensor set of spec §7.2. The counts are checked against the real checkpoints
// (shared/data/deepseek-v4-configs/README.md): a missing or extra tensor kind, or a wrong shape, moves them.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>

#include "runtime/checkpoint/expected_tensors.h"
#include "runtime/config/model_config.h"
#include "tests/support/test_paths.h"

namespace dsv4 {
namespace {

ModelConfig load(const std::string& name) {
  return load_model_config(testing::source_dir() / "configs" / "models" / name);
}

std::map<std::string, ExpectedTensor> by_name(const std::vector<ExpectedTensor>& tensors) {
  std::map<std::string, ExpectedTensor> out;
  for (const ExpectedTensor& t : tensors) {
    EXPECT_TRUE(out.emplace(t.name, t).second) << "duplicate tensor " << t.name;
  }
  return out;
}

void expect_tensor(const std::map<std::string, ExpectedTensor>& m, const std::string& name, DType dtype,
                   Shape shape) {
  auto it = m.find(name);
  ASSERT_NE(it, m.end()) << "missing " << name;
  EXPECT_EQ(it->second.dtype, dtype) << name;
  EXPECT_EQ(it->second.shape, shape) << name << ": " << it->second.shape.str() << " vs " << shape.str();
}

int64_t elements_of_dtype(const std::vector<ExpectedTensor>& tensors, DType dtype) {
  int64_t n = 0;
  for (const ExpectedTensor& t : tensors) {
    if (t.dtype == dtype) n += t.shape.numel();
  }
  return n;
}

TEST(ExpectedTensors, FlashMatchesRealCheckpointCounts) {
  const auto tensors = expected_tensors(load("flash.json"));
  EXPECT_EQ(tensors.size(), 69187u);
  EXPECT_EQ(stored_parameter_count(tensors), 158069433298);
}

TEST(ExpectedTensors, ProMatchesRealCheckpointCounts) {
  const auto tensors = expected_tensors(load("pro.json"));
  EXPECT_EQ(tensors.size(), 145116u);
  EXPECT_EQ(stored_parameter_count(tensors), 861608274846);
  // E8M0 elements (FP8 block scales + FP4 expert scales) as counted by a public inspection of the real Pro
  // checkpoint: an independent check of the scale shapes.
  EXPECT_EQ(elements_of_dtype(tensors, DType::kF8E8M0), 49150268416);
}

TEST(ExpectedTensors, FlashShapesMatchSpecTable) {
  const auto m = by_name(expected_tensors(load("flash.json")));
  expect_tensor(m, "embed.weight", DType::kBF16, {129280, 4096});
  expect_tensor(m, "head.weight", DType::kBF16, {129280, 4096});
  expect_tensor(m, "norm.weight", DType::kBF16, {4096});
  expect_tensor(m, "hc_head_fn", DType::kF32, {4, 16384});
  expect_tensor(m, "hc_head_base", DType::kF32, {4});
  expect_tensor(m, "hc_head_scale", DType::kF32, {1});
  expect_tensor(m, "layers.0.hc_attn_fn", DType::kF32, {24, 16384});
  expect_tensor(m, "layers.0.hc_ffn_base", DType::kF32, {24});
  expect_tensor(m, "layers.0.hc_ffn_scale", DType::kF32, {3});
  expect_tensor(m, "layers.0.attn.wq_a.weight", DType::kF8E4M3, {1024, 4096});
  expect_tensor(m, "layers.0.attn.wq_a.scale", DType::kF8E8M0, {8, 32});
  expect_tensor(m, "layers.0.attn.q_norm.weight", DType::kBF16, {1024});
  expect_tensor(m, "layers.0.attn.wq_b.weight", DType::kF8E4M3, {32768, 1024});
  expect_tensor(m, "layers.0.attn.wq_b.scale", DType::kF8E8M0, {256, 8});
  expect_tensor(m, "layers.0.attn.wkv.scale", DType::kF8E8M0, {4, 32});
  expect_tensor(m, "layers.0.attn.kv_norm.weight", DType::kBF16, {512});
  expect_tensor(m, "layers.0.attn.wo_a.weight", DType::kF8E4M3, {8192, 4096});
  expect_tensor(m, "layers.0.attn.wo_a.scale", DType::kF8E8M0, {64, 32});
  expect_tensor(m, "layers.0.attn.wo_b.weight", DType::kF8E4M3, {4096, 8192});
  expect_tensor(m, "layers.0.attn.wo_b.scale", DType::kF8E8M0, {32, 64});
  expect_tensor(m, "layers.0.attn.attn_sink", DType::kF32, {64});
  expect_tensor(m, "layers.0.ffn.gate.weight", DType::kBF16, {256, 4096});
  expect_tensor(m, "layers.0.ffn.gate.tid2eid", DType::kI64, {129280, 6});
  expect_tensor(m, "layers.3.ffn.gate.bias", DType::kF32, {256});
  expect_tensor(m, "layers.0.ffn.shared_experts.w1.weight", DType::kF8E4M3, {2048, 4096});
  expect_tensor(m, "layers.0.ffn.shared_experts.w1.scale", DType::kF8E8M0, {16, 32});
  expect_tensor(m, "layers.0.ffn.shared_experts.w2.scale", DType::kF8E8M0, {32, 16});
  expect_tensor(m, "layers.0.ffn.experts.255.w1.weight", DType::kI8, {2048, 2048});
  expect_tensor(m, "layers.0.ffn.experts.255.w1.scale", DType::kF8E8M0, {2048, 128});
  expect_tensor(m, "layers.0.ffn.experts.0.w2.weight", DType::kI8, {4096, 1024});
  expect_tensor(m, "layers.0.ffn.experts.0.w2.scale", DType::kF8E8M0, {4096, 64});
  // ratio 4 (layer 2): overlapping compressor and indexer
  expect_tensor(m, "layers.2.attn.compressor.wkv.weight", DType::kBF16, {1024, 4096});
  expect_tensor(m, "layers.2.attn.compressor.wgate.weight", DType::kBF16, {1024, 4096});
  expect_tensor(m, "layers.2.attn.compressor.ape", DType::kF32, {4, 1024});
  expect_tensor(m, "layers.2.attn.compressor.norm.weight", DType::kBF16, {512});
  expect_tensor(m, "layers.2.attn.indexer.wq_b.weight", DType::kF8E4M3, {8192, 1024});
  expect_tensor(m, "layers.2.attn.indexer.wq_b.scale", DType::kF8E8M0, {64, 8});
  expect_tensor(m, "layers.2.attn.indexer.weights_proj.weight", DType::kBF16, {64, 4096});
  expect_tensor(m, "layers.2.attn.indexer.compressor.wkv.weight", DType::kBF16, {256, 4096});
  expect_tensor(m, "layers.2.attn.indexer.compressor.ape", DType::kF32, {4, 256});
  expect_tensor(m, "layers.2.attn.indexer.compressor.norm.weight", DType::kBF16, {128});
  // ratio 128 (layer 3): plain compressor, no indexer
  expect_tensor(m, "layers.3.attn.compressor.wkv.weight", DType::kBF16, {512, 4096});
  expect_tensor(m, "layers.3.attn.compressor.ape", DType::kF32, {128, 512});
  EXPECT_EQ(m.count("layers.3.attn.indexer.wq_b.weight"), 0u);
  // ratio 0 (layer 0): no compressor
  EXPECT_EQ(m.count("layers.0.attn.compressor.wkv.weight"), 0u);
  // MTP
  expect_tensor(m, "mtp.0.e_proj.weight", DType::kF8E4M3, {4096, 4096});
  expect_tensor(m, "mtp.0.e_proj.scale", DType::kF8E8M0, {32, 32});
  expect_tensor(m, "mtp.0.h_proj.scale", DType::kF8E8M0, {32, 32});
  expect_tensor(m, "mtp.0.enorm.weight", DType::kBF16, {4096});
  expect_tensor(m, "mtp.0.hnorm.weight", DType::kBF16, {4096});
  expect_tensor(m, "mtp.0.norm.weight", DType::kBF16, {4096});
  expect_tensor(m, "mtp.0.hc_head_fn", DType::kF32, {4, 16384});
  expect_tensor(m, "mtp.0.attn.wq_a.weight", DType::kF8E4M3, {1024, 4096});
  expect_tensor(m, "mtp.0.ffn.gate.bias", DType::kF32, {256});
  expect_tensor(m, "mtp.0.ffn.experts.255.w3.weight", DType::kI8, {2048, 2048});
  EXPECT_EQ(m.count("mtp.0.attn.compressor.wkv.weight"), 0u);
  EXPECT_EQ(m.count("mtp.0.ffn.gate.tid2eid"), 0u);
  EXPECT_EQ(m.count("mtp.0.embed.weight"), 0u);  // shared with the main model
}

TEST(ExpectedTensors, ProShapesMatchSpecTable) {
  const auto m = by_name(expected_tensors(load("pro.json")));
  expect_tensor(m, "layers.0.attn.wq_a.scale", DType::kF8E8M0, {12, 56});
  expect_tensor(m, "layers.0.attn.wq_b.weight", DType::kF8E4M3, {65536, 1536});
  expect_tensor(m, "layers.0.attn.wq_b.scale", DType::kF8E8M0, {512, 12});
  expect_tensor(m, "layers.0.attn.wo_a.weight", DType::kF8E4M3, {16384, 4096});
  expect_tensor(m, "layers.0.attn.wo_b.scale", DType::kF8E8M0, {56, 128});
  expect_tensor(m, "layers.0.attn.compressor.ape", DType::kF32, {128, 512});  // Pro layer 0 is HCA
  expect_tensor(m, "layers.2.attn.indexer.wq_b.scale", DType::kF8E8M0, {64, 12});
  expect_tensor(m, "layers.60.ffn.experts.383.w1.weight", DType::kI8, {3072, 3584});
  expect_tensor(m, "layers.60.ffn.experts.383.w1.scale", DType::kF8E8M0, {3072, 224});
  expect_tensor(m, "layers.60.ffn.experts.383.w2.scale", DType::kF8E8M0, {7168, 96});
  expect_tensor(m, "layers.0.ffn.shared_experts.w2.scale", DType::kF8E8M0, {56, 24});
  expect_tensor(m, "mtp.0.h_proj.weight", DType::kF8E4M3, {7168, 7168});
  expect_tensor(m, "hc_head_fn", DType::kF32, {4, 28672});
}

// Structural rules, checked on every layer of every shipped V4 config.
TEST(ExpectedTensors, LayerRules) {
  for (const char* name : {"flash.json", "pro.json", "tiny.json"}) {
    SCOPED_TRACE(name);
    const ModelConfig c = load(name);
    const auto tensors = expected_tensors(c);
    std::map<int64_t, std::set<std::string>> per_layer;  // layer -> names without the layer prefix
    std::map<int64_t, int64_t> experts_per_layer;
    for (const ExpectedTensor& t : tensors) {
      if (t.layer < 0) continue;
      const std::string prefix = t.layer < c.num_layers ? "layers." + std::to_string(t.layer) + "."
                                                        : "mtp." + std::to_string(t.layer - c.num_layers) + ".";
      ASSERT_EQ(t.name.rfind(prefix, 0), 0u) << t.name;
      per_layer[t.layer].insert(t.name.substr(prefix.size()));
      if (t.expert >= 0) experts_per_layer[t.layer] = std::max(experts_per_layer[t.layer], t.expert + 1);
    }
    ASSERT_EQ(static_cast<int64_t>(per_layer.size()), c.num_layers_with_mtp());
    for (int64_t l = 0; l < c.num_layers_with_mtp(); ++l) {
      SCOPED_TRACE("layer " + std::to_string(l));
      const auto& names = per_layer[l];
      const int64_t ratio = c.compress_ratio(l);
      EXPECT_EQ(names.count("attn.compressor.wkv.weight"), ratio != 0 ? 1u : 0u);
      EXPECT_EQ(names.count("attn.indexer.wq_b.weight"), ratio == 4 ? 1u : 0u);
      EXPECT_EQ(names.count("attn.indexer.compressor.ape"), ratio == 4 ? 1u : 0u);
      EXPECT_EQ(names.count("ffn.gate.tid2eid"), c.is_hash_layer(l) ? 1u : 0u);
      EXPECT_EQ(names.count("ffn.gate.bias"), c.is_hash_layer(l) ? 0u : 1u);
      EXPECT_EQ(names.count("e_proj.weight"), l >= c.num_layers ? 1u : 0u);
      EXPECT_EQ(experts_per_layer[l], c.num_routed_experts);
    }
  }
}

TEST(ExpectedTensors, RolesPairWeightsWithScales) {
  const auto tensors = expected_tensors(load("tiny.json"));
  const auto m = by_name(tensors);
  for (const ExpectedTensor& t : tensors) {
    if (t.role != TensorRole::kFp8Weight && t.role != TensorRole::kFp4Weight) continue;
    const std::string scale = t.name.substr(0, t.name.size() - 7) + ".scale";
    auto it = m.find(scale);
    ASSERT_NE(it, m.end()) << t.name;
    EXPECT_EQ(it->second.role, t.role == TensorRole::kFp8Weight ? TensorRole::kFp8Scale : TensorRole::kFp4Scale);
    EXPECT_EQ(it->second.shape[0], t.role == TensorRole::kFp8Weight ? (t.shape[0] + 127) / 128 : t.shape[0]);
  }
}

// Base ("FP8 mixed") checkpoints: same names, FP8 experts in 128x128 blocks with F32 scales everywhere.
TEST(ExpectedTensors, BaseVariantHasFp8Experts) {
  ModelConfig c = load("flash.json");
  c.expert_dtype = DType::kF8E4M3;
  c.fp8_scale_dtype = DType::kF32;
  const auto tensors = expected_tensors(c);
  EXPECT_EQ(tensors.size(), 69187u);
  const auto m = by_name(tensors);
  expect_tensor(m, "layers.5.ffn.experts.7.w1.weight", DType::kF8E4M3, {2048, 4096});
  expect_tensor(m, "layers.5.ffn.experts.7.w1.scale", DType::kF32, {16, 32});
  expect_tensor(m, "layers.5.ffn.experts.7.w2.weight", DType::kF8E4M3, {4096, 2048});
  expect_tensor(m, "layers.5.attn.wq_a.scale", DType::kF32, {8, 32});
  EXPECT_EQ(elements_of_dtype(tensors, DType::kF8E8M0), 0);
  EXPECT_EQ(elements_of_dtype(tensors, DType::kI8), 0);
  // Each of the 44 x 256 x 3 expert matrices (2048 x 4096 values) goes from 2048*2048 packed bytes + 2048*128
  // scales to 2048*4096 values + 16*32 scales; nothing else changes size.
  const int64_t matrices = 44 * 256 * 3;
  const int64_t fp4 = 2048 * 2048 + 2048 * 128;
  const int64_t fp8 = 2048 * 4096 + 16 * 32;
  EXPECT_EQ(stored_parameter_count(tensors), 158069433298 + matrices * (fp8 - fp4));
}

// Logical parameters of the main model (MTP left out; FP4 bytes hold two values; scales and tid2eid are not
// parameters): total, and active = everything but the routed experts plus k of them per layer. Spec §1.1
// and the model card: Flash 284.3B total / 13.8B active, Pro 1.573T / 49.8B.
void expect_card_parameter_counts(const char* name, double total_billions, double active_billions) {
  SCOPED_TRACE(name);
  const ModelConfig c = load(name);
  int64_t total = 0;
  int64_t active = 0;
  for (const ExpectedTensor& t : expected_tensors(c)) {
    if (t.layer >= c.num_layers) continue;
    if (t.role == TensorRole::kFp8Scale || t.role == TensorRole::kFp4Scale || t.role == TensorRole::kIndex) continue;
    const int64_t n = t.shape.numel() * (t.role == TensorRole::kFp4Weight ? 2 : 1);
    total += n;
    if (t.expert < c.num_experts_per_token) active += n;  // expert -1: not a routed expert
  }
  EXPECT_NEAR(total / 1e9, total_billions, 0.05);
  EXPECT_NEAR(active / 1e9, active_billions, 0.05);
}

TEST(ExpectedTensors, ParameterCountsMatchModelCard) {
  expect_card_parameter_counts("flash.json", 284.3, 13.8);
  expect_card_parameter_counts("pro.json", 1573.0, 49.8);
}

// configs/models/README.md promises: small-1b is about 1 B parameters (two FP4 values per stored byte, scales
// left out) and has no ragged FP8 scale block.
TEST(ExpectedTensors, SmallOneBillionShape) {
  const auto tensors = expected_tensors(load("small-1b.json"));
  int64_t parameters = 0;
  for (const ExpectedTensor& t : tensors) {
    if (t.role == TensorRole::kFp8Scale || t.role == TensorRole::kFp4Scale) continue;
    parameters += t.shape.numel() * (t.role == TensorRole::kFp4Weight ? 2 : 1);
    if (t.role == TensorRole::kFp8Weight) {
      EXPECT_EQ(t.shape[0] % 128, 0) << t.name;
      EXPECT_EQ(t.shape[1] % 128, 0) << t.name;
    }
  }
  EXPECT_GT(parameters, 900'000'000);
  EXPECT_LT(parameters, 1'200'000'000);
}

TEST(ExpectedTensors, RejectsInvalidConfig) {
  ModelConfig c = load("tiny.json");
  c.o_groups = 3;
  EXPECT_THROW(expected_tensors(c), Error);
}

}  // namespace
}  // namespace dsv4
