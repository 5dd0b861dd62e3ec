// End to end through the `dsv4` executable and the library: make-checkpoint writes the official layout,
// inspect validates it, prints tensors, and exits non-zero naming the tensor for each kind of damage.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <cmath>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>

#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/expected_tensors.h"
#include "runtime/checkpoint/quant.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/checkpoint/validate.h"
#include "runtime/checkpoint/writer.h"
#include "runtime/config/model_config.h"
#include "runtime/core/float_formats.h"
#include "tests/support/test_paths.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

std::string run(const std::string& args, int* rc) {
  std::string out;
  *rc = testing::run_command(testing::dsv4_bin().string() + " " + args, &out);
  return out;
}

using testing::read_file;

// tiny.json with a 512-token vocabulary: the same layer kinds, a checkpoint of a few MB.
ModelConfig small_config(const fs::path& dir) {
  nlohmann::json j = nlohmann::json::parse(read_file(testing::source_dir() / "configs/models/tiny.json"));
  j["vocab_size"] = 512;
  std::ofstream(dir / "small.json") << j.dump();
  return load_model_config(dir / "small.json");
}

// Rewrites a single-file checkpoint's model.safetensors after `edit` changed its tensor list.
struct StoredTensor {
  TensorSpec spec;
  std::string bytes;
};
void rewrite(const fs::path& dir, const std::function<void(std::vector<StoredTensor>&)>& edit) {
  std::vector<StoredTensor> tensors;
  {
    SafetensorsFile f = SafetensorsFile::open(dir / "model.safetensors");
    for (const auto& e : f.entries()) {
      auto b = f.bytes(e);
      tensors.push_back({{std::string(e.name), e.dtype, e.shape}, std::string(b.begin(), b.end())});
    }
  }
  edit(tensors);
  std::vector<TensorSpec> specs;
  std::map<std::string, const std::string*> data;
  for (const auto& t : tensors) {
    specs.push_back(t.spec);
    data[t.spec.name] = &t.bytes;
  }
  SafetensorsWriter w(dir / "model.safetensors", specs);
  for (const auto& s : w.order()) w.write(data.at(s.name)->data(), data.at(s.name)->size());
  w.finish();
}

TEST(CheckpointCli, MakeTinyWithTwoShardsThenInspect) {
  const fs::path dir = testing::scratch_dir("ckpt_cli_tiny");
  int rc;
  std::string out = run("make-checkpoint --config " + (testing::source_dir() / "configs/models/tiny.json").string() +
                            " --seed 3 --shards 2 --out " + dir.string(),
                        &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(fs::exists(dir / "model-00001-of-00002.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "model-00002-of-00002.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "model.safetensors.index.json"));

  out = run("inspect --checkpoint " + dir.string(), &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("validation  OK"), std::string::npos) << out;
  EXPECT_NE(out.find("1 sliding-window, 2 compressed-4 (CSA), 2 compressed-128 (HCA)"), std::string::npos) << out;

  out = run("inspect --json --checkpoint " + dir.string(), &rc);
  ASSERT_EQ(rc, 0) << out;
  const auto j = nlohmann::json::parse(out);
  Checkpoint ckpt = Checkpoint::open(dir);
  const auto expected = expected_tensors(ckpt.config());
  EXPECT_TRUE(j["valid"].get<bool>());
  EXPECT_EQ(j["tensors"].get<size_t>(), expected.size());
  EXPECT_EQ(j["parameters"].get<int64_t>(), stored_parameter_count(expected));
  EXPECT_EQ(j["bytes"].get<uint64_t>(), ckpt.total_bytes());

  // --tensor prints exactly what the library dequantises: a norm (all ones), an FP8 block weight, an FP4 expert.
  out = run("inspect --checkpoint " + dir.string() + " --tensor layers.0.attn_norm.weight", &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(nlohmann::json::parse(out), nlohmann::json(std::vector<float>(256, 1.0f)));
  for (const std::string name : {"layers.1.attn.wq_a.weight", "layers.3.ffn.experts.5.w2.weight"}) {
    out = run("inspect --checkpoint " + dir.string() + " --tensor " + name, &rc);
    ASSERT_EQ(rc, 0) << out;
    const auto printed = nlohmann::json::parse(out);
    const std::string scale_name = name.substr(0, name.size() - 6) + "scale";
    const TensorView scale = ckpt.tensor(scale_name);
    Tensor want = dequantize(ckpt.tensor(name), &scale, 128, 32);
    ASSERT_EQ(printed.size(), static_cast<size_t>(want.shape()[0])) << name;
    ASSERT_EQ(printed[0].size(), static_cast<size_t>(want.shape()[1])) << name;
    for (int64_t r = 0; r < want.shape()[0]; ++r) {
      for (int64_t c = 0; c < want.shape()[1]; ++c) {
        ASSERT_EQ(printed[r][c].get<float>(), want.as<float>()[r * want.shape()[1] + c]) << name << " " << r << "," << c;
      }
    }
  }
  // tid2eid rows hold distinct valid expert ids.
  const TensorView tid = ckpt.tensor("layers.0.ffn.gate.tid2eid");
  for (int64_t r = 0; r < tid.dim(0); ++r) {
    const int64_t* row = tid.as<int64_t>() + r * tid.dim(1);
    ASSERT_TRUE(row[0] >= 0 && row[0] < 8 && row[1] >= 0 && row[1] < 8 && row[0] != row[1]) << "row " << r;
  }
  out = run("inspect --checkpoint " + dir.string() + " --tensor no.such.tensor", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("'no.such.tensor'"), std::string::npos) << out;
  fs::remove_all(dir);
}

TEST(CheckpointCli, SameSeedSameBytes) {
  const fs::path dir = testing::scratch_dir("ckpt_cli_seed");
  const ModelConfig config = small_config(dir);
  make_random_checkpoint(config, 11, dir / "a", 3);
  make_random_checkpoint(config, 11, dir / "b", 3);
  make_random_checkpoint(config, 12, dir / "c", 3);
  for (const char* f : {"model-00001-of-00003.safetensors", "model-00003-of-00003.safetensors",
                        "model.safetensors.index.json", "config.json"}) {
    EXPECT_EQ(read_file(dir / "a" / f), read_file(dir / "b" / f)) << f;
  }
  EXPECT_NE(read_file(dir / "a/model-00002-of-00003.safetensors"), read_file(dir / "c/model-00002-of-00003.safetensors"));
  EXPECT_TRUE(validate_checkpoint(Checkpoint::open(dir / "c")).ok());
  fs::remove_all(dir);
}

// The writer's scales: quantised projections keep std 1/sqrt(fan_in), norms are 1, hc_*_fn small.
TEST(CheckpointCli, RandomWeightsHaveTheDocumentedScales) {
  const fs::path dir = testing::scratch_dir("ckpt_cli_scales");
  make_random_checkpoint(small_config(dir), 21, dir / "ck", 1);
  Checkpoint ckpt = Checkpoint::open(dir / "ck");
  int checked = 0;
  for (const ExpectedTensor& t : expected_tensors(ckpt.config())) {
    const bool fp8 = t.role == TensorRole::kFp8Weight, fp4 = t.role == TensorRole::kFp4Weight;
    if (!fp8 && !fp4 && !t.name.ends_with("norm.weight") && !t.name.ends_with("hc_attn_fn")) continue;
    std::optional<TensorView> scale;
    if (fp8 || fp4) scale = ckpt.tensor(t.name.substr(0, t.name.size() - 6) + "scale");
    const Tensor w = dequantize(ckpt.tensor(t.name), scale ? &*scale : nullptr, 128, 32);
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < w.numel(); ++i) {
      sum += w.as<float>()[i];
      sq += double(w.as<float>()[i]) * w.as<float>()[i];
    }
    const double mean = sum / w.numel(), stddev = std::sqrt(sq / w.numel() - mean * mean);
    if (t.name.ends_with("norm.weight")) {
      EXPECT_EQ(mean, 1.0) << t.name;
      EXPECT_EQ(stddev, 0.0) << t.name;
    } else {
      const double cols = static_cast<double>(w.shape()[1]);
      const double want = t.name.ends_with("hc_attn_fn") ? 0.1 / std::sqrt(cols) : 1.0 / std::sqrt(cols);
      EXPECT_NEAR(stddev / want, 1.0, 0.1) << t.name;  // 1.6k to 33k samples per tensor; quantisation adds a little
      EXPECT_NEAR(mean / want, 0.0, 0.1) << t.name;
    }
    ++checked;
  }
  EXPECT_GT(checked, 150);
  fs::remove_all(dir);
}

// Base checkpoints: FP8 experts and F32 block scales, written and validated the same way.
TEST(CheckpointCli, BaseLayoutWithF32Scales) {
  const fs::path dir = testing::scratch_dir("ckpt_cli_base");
  ModelConfig config = small_config(dir);
  config.expert_dtype = DType::kF8E4M3;
  config.fp8_scale_dtype = DType::kF32;
  make_random_checkpoint(config, 4, dir / "ck", 2);
  Checkpoint ckpt = Checkpoint::open(dir / "ck");
  EXPECT_TRUE(validate_checkpoint(ckpt).ok());
  const TensorView scale = ckpt.tensor("layers.2.ffn.experts.0.w1.scale");
  EXPECT_EQ(scale.dtype, DType::kF32);
  const TensorView w = ckpt.tensor("layers.2.ffn.experts.0.w1.weight");
  EXPECT_EQ(w.dtype, DType::kF8E4M3);
  const Tensor d = dequantize(w, &scale, 128, 32);
  EXPECT_EQ(d.as<float>()[0], e4m3_to_f32(w.as<uint8_t>()[0]) * scale.as<float>()[0]);
  fs::remove_all(dir);
}

class CheckpointDamage : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::scratch_dir("ckpt_damage");
    make_random_checkpoint(small_config(dir_), 5, dir_ / "ck", 1);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // inspect must fail and its output name every needle.
  void expect_inspect_fails(const std::vector<std::string>& needles) {
    int rc;
    const std::string out = run("inspect --checkpoint " + (dir_ / "ck").string(), &rc);
    EXPECT_NE(rc, 0) << out;
    for (const auto& n : needles) EXPECT_NE(out.find(n), std::string::npos) << "'" << n << "' not in: " << out;
  }
  ValidationReport validate() { return validate_checkpoint(Checkpoint::open(dir_ / "ck")); }

  fs::path dir_;
};

TEST_F(CheckpointDamage, NanScaleIsFoundByInspect) {
  const std::string name = "layers.2.ffn.experts.1.w3.scale";
  uint64_t at;
  {
    SafetensorsFile f = SafetensorsFile::open(dir_ / "ck/model.safetensors");
    at = f.data_offset() + f.find(name)->begin + 7;
  }
  std::fstream io(dir_ / "ck/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
  io.seekp(static_cast<std::streamoff>(at));
  io.put(static_cast<char>(0xFF));  // E8M0 NaN
  io.close();
  const auto report = validate();
  ASSERT_EQ(report.issues.size(), 1u);
  EXPECT_EQ(report.issues[0].kind, CheckpointIssue::Kind::kNonFiniteScale);
  EXPECT_EQ(report.issues[0].tensor, name);
  EXPECT_NE(report.issues[0].detail.find("element 7"), std::string::npos);
  expect_inspect_fails({"non-finite scale", name});
  // --skip-scale-scan does not read scales.
  int rc;
  run("inspect --skip-scale-scan --checkpoint " + (dir_ / "ck").string(), &rc);
  EXPECT_EQ(rc, 0);
}

TEST_F(CheckpointDamage, MissingUnexpectedWrongShapeAndDtype) {
  rewrite(dir_ / "ck", [](std::vector<StoredTensor>& t) {
    std::erase_if(t, [](const StoredTensor& s) { return s.spec.name == "layers.4.attn.wkv.weight"; });
    for (auto& s : t) {
      if (s.spec.name == "layers.0.attn.attn_sink") {  // F32 [4] -> BF16 [4]
        s.spec.dtype = DType::kBF16;
        s.bytes.resize(8);
      }
      if (s.spec.name == "norm.weight") s.spec.shape = Shape({16, 16});  // [256] -> [16, 16]
    }
    t.push_back({{"layers.9.bogus", DType::kF32, {2}}, std::string(8, '\0')});
  });
  const auto report = validate();
  using K = CheckpointIssue::Kind;
  EXPECT_EQ(report.issues.size(), 4u);
  EXPECT_EQ(report.count(K::kMissing), 1);
  EXPECT_EQ(report.count(K::kUnexpected), 1);
  EXPECT_EQ(report.count(K::kWrongShape), 1);
  EXPECT_EQ(report.count(K::kWrongDtype), 1);
  expect_inspect_fails({"missing: layers.4.attn.wkv.weight", "unexpected: layers.9.bogus",
                        "wrong dtype: layers.0.attn.attn_sink (BF16, expected F32)",
                        "wrong shape: norm.weight ([16, 16], expected [256])", "1 missing, 1 unexpected"});
}

TEST_F(CheckpointDamage, TruncatedShardIsNamed) {
  const fs::path shard = dir_ / "ck/model.safetensors";
  fs::resize_file(shard, fs::file_size(shard) - 100);
  expect_inspect_fails({shard.string(), "run past the data area"});
}

}  // namespace
}  // namespace dsv4
