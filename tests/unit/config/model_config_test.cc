// ModelConfig: the official Flash / Pro / tiny files parse to the values of spec §1.1, the transformers form
// of the same model gives an equal config, the official writer round-trips, and every kind of bad input is
// rejected with the offending key named.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <functional>
#include <sstream>

#include "runtime/config/model_config.h"
#include "runtime/core/error.h"
#include "tests/support/test_paths.h"

namespace dsv4 {
namespace {

using nlohmann::json;

std::filesystem::path models_dir() { return testing::source_dir() / "configs" / "models"; }
std::filesystem::path data_dir() { return testing::source_dir() / "tests" / "unit" / "config" / "data"; }

json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return json::parse(in);
}

struct KindCounts {
  int swa = 0, csa = 0, hca = 0;
};

KindCounts count_kinds(const ModelConfig& c) {
  KindCounts k;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    switch (c.attention_kind(l)) {
      case AttentionKind::kSlidingWindow: ++k.swa; break;
      case AttentionKind::kCompressed4: ++k.csa; break;
      case AttentionKind::kCompressed128: ++k.hca; break;
    }
  }
  return k;
}

// Values shared by Flash and Pro (spec §1.1).
void expect_common_v4_values(const ModelConfig& c) {
  EXPECT_EQ(c.model_type, "deepseek_v4");
  EXPECT_EQ(c.vocab_size, 129280);
  EXPECT_EQ(c.head_dim, 512);
  EXPECT_EQ(c.rope_dim, 64);
  EXPECT_EQ(c.nope_dim(), 448);
  EXPECT_EQ(c.o_lora_rank, 1024);
  EXPECT_EQ(c.num_experts_per_token, 6);
  EXPECT_EQ(c.num_shared_experts, 1);
  EXPECT_EQ(c.num_hash_layers, 3);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.swiglu_limit, 10.0);
  EXPECT_EQ(c.sliding_window, 128);
  EXPECT_EQ(c.index_num_heads, 64);
  EXPECT_EQ(c.index_head_dim, 128);
  EXPECT_EQ(c.hc_mult, 4);
  EXPECT_EQ(c.hc_sinkhorn_iters, 20);
  EXPECT_EQ(c.hc_eps, 1e-6);
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.compress_rope_theta, 160000.0);
  EXPECT_TRUE(c.yarn.enabled);
  EXPECT_EQ(c.yarn.factor, 16.0);
  EXPECT_EQ(c.yarn.original_max_position, 65536);
  EXPECT_EQ(c.yarn.beta_fast, 32.0);
  EXPECT_EQ(c.yarn.beta_slow, 1.0);
  EXPECT_EQ(c.max_position_embeddings, 1048576);
  EXPECT_EQ(c.num_mtp_layers, 1);
  EXPECT_EQ(c.bos_token_id, 0);
  EXPECT_EQ(c.eos_token_id, 1);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.expert_dtype, DType::kFP4E2M1);
  EXPECT_EQ(c.fp8_scale_dtype, DType::kF8E8M0);
  EXPECT_EQ(c.fp8_block, 128);
  EXPECT_EQ(c.fp4_block, 32);
  EXPECT_EQ(c.compress_ratios.back(), 0);  // the MTP layer
  EXPECT_EQ(c.num_layers_with_mtp(), static_cast<int64_t>(c.compress_ratios.size()));
}

TEST(ModelConfig, FlashMatchesSpec) {
  const ModelConfig c = load_model_config(models_dir() / "flash.json");
  expect_common_v4_values(c);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.num_layers, 43);
  EXPECT_EQ(c.num_heads, 64);
  EXPECT_EQ(c.q_lora_rank, 1024);
  EXPECT_EQ(c.o_groups, 8);
  EXPECT_EQ(c.heads_per_group(), 8);
  EXPECT_EQ(c.num_routed_experts, 256);
  EXPECT_EQ(c.moe_intermediate_size, 2048);
  EXPECT_EQ(c.routed_scaling_factor, 1.5);
  EXPECT_EQ(c.index_topk, 512);
  ASSERT_EQ(c.compress_ratios.size(), 44u);
  const KindCounts k = count_kinds(c);
  EXPECT_EQ(k.swa, 2);
  EXPECT_EQ(k.csa, 21);
  EXPECT_EQ(k.hca, 20);
  EXPECT_EQ(c.attention_kind(0), AttentionKind::kSlidingWindow);
  EXPECT_EQ(c.attention_kind(1), AttentionKind::kSlidingWindow);
  EXPECT_EQ(c.attention_kind(2), AttentionKind::kCompressed4);
  EXPECT_EQ(c.attention_kind(3), AttentionKind::kCompressed128);
  EXPECT_EQ(c.attention_kind(42), AttentionKind::kCompressed4);  // the last main layer is CSA, not SWA
  EXPECT_TRUE(c.is_hash_layer(2));
  EXPECT_FALSE(c.is_hash_layer(3));
}

TEST(ModelConfig, ProMatchesSpec) {
  const ModelConfig c = load_model_config(models_dir() / "pro.json");
  expect_common_v4_values(c);
  EXPECT_EQ(c.hidden_size, 7168);
  EXPECT_EQ(c.num_layers, 61);
  EXPECT_EQ(c.num_heads, 128);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.o_groups, 16);
  EXPECT_EQ(c.num_routed_experts, 384);
  EXPECT_EQ(c.moe_intermediate_size, 3072);
  EXPECT_EQ(c.routed_scaling_factor, 2.5);
  EXPECT_EQ(c.index_topk, 1024);
  ASSERT_EQ(c.compress_ratios.size(), 62u);
  const KindCounts k = count_kinds(c);
  EXPECT_EQ(k.swa, 0);
  EXPECT_EQ(k.csa, 30);
  EXPECT_EQ(k.hca, 31);
  EXPECT_EQ(c.attention_kind(0), AttentionKind::kCompressed128);
  EXPECT_EQ(c.attention_kind(60), AttentionKind::kCompressed4);
}

TEST(ModelConfig, TinyCoversEveryLayerKind) {
  const ModelConfig c = load_model_config(models_dir() / "tiny.json");
  EXPECT_EQ(c.vocab_size, 129280);
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.num_layers, 5);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.num_hash_layers, 2);
  EXPECT_EQ(c.num_mtp_layers, 1);
  const KindCounts k = count_kinds(c);
  EXPECT_GE(k.swa, 1);
  EXPECT_GE(k.csa, 1);
  EXPECT_GE(k.hca, 1);
}

// Every config shipped in configs/models/ must load (the benchmark and long-context variants included).
TEST(ModelConfig, EveryShippedConfigLoads) {
  int loaded = 0;
  for (const auto& entry : std::filesystem::directory_iterator(models_dir())) {
    if (entry.path().extension() != ".json") continue;
    SCOPED_TRACE(entry.path().string());
    EXPECT_NO_THROW(load_model_config(entry.path()));
    ++loaded;
  }
  EXPECT_GE(loaded, 5);
}

// tests/unit/config/data/*_transformers.json were written by transformers' DeepseekV4Config.save_pretrained
// from the official files (see data/README.md): the two forms must give the same typed config.
TEST(ModelConfig, TransformersFormEqualsOfficialForm) {
  for (const char* model : {"flash", "pro"}) {
    SCOPED_TRACE(model);
    const ModelConfig official = load_model_config(models_dir() / (std::string(model) + ".json"));
    const ModelConfig hf = load_model_config(data_dir() / (std::string(model) + "_transformers.json"));
    EXPECT_TRUE(hf == official);
    EXPECT_EQ(hf.compress_ratios, official.compress_ratios);
    EXPECT_EQ(hf.num_hash_layers, official.num_hash_layers);
    EXPECT_EQ(hf.rope_dim, official.rope_dim);
    EXPECT_TRUE(hf.yarn == official.yarn);
  }
}

// A transformers file without the nested rope_parameters and with legacy compress_rate_* keys.
TEST(ModelConfig, TransformersFormLegacyKeys) {
  json j = read_json(data_dir() / "flash_transformers.json");
  json compress = j["rope_parameters"]["compress"];
  j["rope_parameters"] = compress;  // flat form: the YaRN keys only
  j.erase("compress_rates");
  j.erase("qk_rope_head_dim");      // rope_dim from partial_rotary_factor
  j.erase("mlp_layer_types");
  j["num_hash_layers"] = 3;
  const ModelConfig official = load_model_config(models_dir() / "flash.json");
  EXPECT_TRUE(parse_model_config(j.dump()) == official);
}

TEST(ModelConfig, RoundTripThroughOfficialJson) {
  for (const char* name : {"flash.json", "pro.json", "tiny.json"}) {
    SCOPED_TRACE(name);
    const ModelConfig c = load_model_config(models_dir() / name);
    const std::string text = model_config_to_json(c);
    EXPECT_TRUE(parse_model_config(text, "round-trip") == c);
    // The writer emits the official key spelling: every key of the shipped file comes back with its value.
    const json original = read_json(models_dir() / name);
    const json written = json::parse(text);
    for (const auto& [key, value] : original.items()) {
      if (key == "transformers_version") continue;
      ASSERT_TRUE(written.contains(key)) << key;
      if (value.is_number()) {
        EXPECT_EQ(written[key].get<double>(), value.get<double>()) << key;
      } else if (key == "rope_scaling" || key == "quantization_config") {
        for (const auto& [sub, v] : value.items()) EXPECT_EQ(written[key][sub], v) << key << "." << sub;
      } else {
        EXPECT_EQ(written[key], value) << key;
      }
    }
  }
}

TEST(ModelConfig, BaseCheckpointExpertsAndScales) {
  json j = read_json(models_dir() / "flash.json");
  j["expert_dtype"] = "fp8";
  j["quantization_config"].erase("scale_fmt");
  const ModelConfig c = parse_model_config(j.dump());
  EXPECT_EQ(c.expert_dtype, DType::kF8E4M3);
  EXPECT_EQ(c.fp8_scale_dtype, DType::kF32);
  EXPECT_TRUE(parse_model_config(model_config_to_json(c)) == c);

  // V4.1 style: expert_dtype inside quantization_config.
  json inner = read_json(models_dir() / "flash.json");
  inner["quantization_config"]["expert_dtype"] = "fp8";
  EXPECT_EQ(parse_model_config(inner.dump()).expert_dtype, DType::kF8E4M3);
  // Explicit fp4 is the instruct default.
  json fp4 = read_json(models_dir() / "flash.json");
  fp4["expert_dtype"] = "fp4";
  EXPECT_EQ(parse_model_config(fp4.dump()).expert_dtype, DType::kFP4E2M1);
}

// ---- rejections: each names the key ------------------------------------------------------------------

void expect_rejected(const std::function<void(json&)>& edit, const std::string& key,
                     const char* base = "flash.json") {
  json j = read_json(models_dir() / base);
  edit(j);
  try {
    parse_model_config(j.dump(), "edited.json");
    ADD_FAILURE() << "accepted a config that should fail on '" << key << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(e.message().find("'" + key), std::string::npos) << "message does not name '" << key
                                                              << "': " << e.message();
    EXPECT_NE(e.message().find("edited.json"), std::string::npos) << e.message();
  }
}

void expect_rejected_hf(const std::function<void(json&)>& edit, const std::string& key) {
  json j = read_json(data_dir() / "flash_transformers.json");
  edit(j);
  try {
    parse_model_config(j.dump(), "edited.json");
    ADD_FAILURE() << "accepted a config that should fail on '" << key << "'";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("'" + key), std::string::npos) << e.message();
  }
}

TEST(ModelConfigReject, MissingKey) {
  for (const char* key : {"hidden_size", "compress_ratios", "num_hash_layers", "qk_rope_head_dim", "index_topk",
                          "quantization_config", "num_nextn_predict_layers", "model_type"}) {
    SCOPED_TRACE(key);
    expect_rejected([&](json& j) { j.erase(key); }, key);
  }
  expect_rejected([](json& j) { j["hidden_size"] = nullptr; }, "hidden_size");
}

TEST(ModelConfigReject, WrongType) {
  expect_rejected([](json& j) { j["hidden_size"] = "4096"; }, "hidden_size");
  expect_rejected([](json& j) { j["hidden_size"] = 4096.5; }, "hidden_size");
  expect_rejected([](json& j) { j["num_hidden_layers"] = true; }, "num_hidden_layers");
  expect_rejected([](json& j) { j["routed_scaling_factor"] = "1.5"; }, "routed_scaling_factor");
  expect_rejected([](json& j) { j["norm_topk_prob"] = 1; }, "norm_topk_prob");
  expect_rejected([](json& j) { j["compress_ratios"] = 4; }, "compress_ratios");
  expect_rejected([](json& j) { j["compress_ratios"][5] = "128"; }, "compress_ratios[5]");
  expect_rejected([](json& j) { j["rope_scaling"] = "yarn"; }, "rope_scaling");
  expect_rejected([](json& j) { j["hidden_size"] = 18446744073709551615ull; }, "hidden_size");
}

TEST(ModelConfigReject, NonPositiveSizes) {
  for (const char* key : {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "head_dim",
                          "q_lora_rank", "o_groups", "o_lora_rank", "n_routed_experts", "num_experts_per_tok",
                          "moe_intermediate_size", "sliding_window", "index_n_heads", "index_head_dim", "hc_mult",
                          "max_position_embeddings", "routed_scaling_factor", "rms_norm_eps"}) {
    SCOPED_TRACE(key);
    expect_rejected([&](json& j) { j[key] = 0; }, key);
  }
  expect_rejected([](json& j) { j["hidden_size"] = -4096; }, "hidden_size");
}

TEST(ModelConfigReject, CompressRatiosLength) {
  expect_rejected([](json& j) { j["compress_ratios"].erase(j["compress_ratios"].size() - 1); }, "compress_ratios");
  expect_rejected([](json& j) { j["num_nextn_predict_layers"] = 2; }, "compress_ratios");
}

TEST(ModelConfigReject, UnsupportedRatio) {
  expect_rejected([](json& j) { j["compress_ratios"][3] = 64; }, "compress_ratios[3]");
  expect_rejected([](json& j) { j["compress_ratios"][2] = -4; }, "compress_ratios[2]");
}

TEST(ModelConfigReject, MtpEntryNotZero) {
  expect_rejected([](json& j) { j["compress_ratios"][43] = 4; }, "compress_ratios[43]");
}

TEST(ModelConfigReject, HeadsNotDivisibleByGroups) {
  expect_rejected([](json& j) { j["o_groups"] = 7; }, "num_attention_heads");
}

TEST(ModelConfigReject, RopeDim) {
  expect_rejected([](json& j) { j["qk_rope_head_dim"] = 512; }, "qk_rope_head_dim");
  expect_rejected([](json& j) { j["qk_rope_head_dim"] = 63; }, "qk_rope_head_dim");
  expect_rejected([](json& j) { j["qk_rope_head_dim"] = 256; }, "index_head_dim");
}

TEST(ModelConfigReject, MoreActiveExpertsThanExperts) {
  expect_rejected([](json& j) { j["num_experts_per_tok"] = 257; }, "num_experts_per_tok");
}

TEST(ModelConfigReject, HashLayersBeyondLayers) {
  expect_rejected([](json& j) { j["num_hash_layers"] = 44; }, "num_hash_layers");
  expect_rejected([](json& j) { j["num_hash_layers"] = -1; }, "num_hash_layers");
}

TEST(ModelConfigReject, IndexTopkWithCsaLayers) {
  expect_rejected([](json& j) { j["index_topk"] = 0; }, "index_topk");
  // Without ratio-4 layers the indexer does not exist and index_topk = 0 is fine.
  json j = read_json(models_dir() / "flash.json");
  for (auto& r : j["compress_ratios"]) {
    if (r == 4) r = 128;
  }
  j["index_topk"] = 0;
  EXPECT_NO_THROW(parse_model_config(j.dump()));
}

TEST(ModelConfigReject, Fp8BlockSize) {
  expect_rejected([](json& j) { j["quantization_config"]["weight_block_size"] = {64, 64}; },
                  "quantization_config.weight_block_size");
  expect_rejected([](json& j) { j["quantization_config"]["weight_block_size"] = {128}; },
                  "quantization_config.weight_block_size");
  expect_rejected([](json& j) { j["quantization_config"]["quant_method"] = "gptq"; },
                  "quantization_config.quant_method");
  expect_rejected([](json& j) { j["quantization_config"]["scale_fmt"] = "e5m2"; }, "quantization_config.scale_fmt");
}

TEST(ModelConfigReject, ExpertDtype) {
  expect_rejected([](json& j) { j["expert_dtype"] = "int4"; }, "expert_dtype");
  expect_rejected(
      [](json& j) {
        j["expert_dtype"] = "fp4";
        j["quantization_config"]["expert_dtype"] = "fp8";
      },
      "quantization_config.expert_dtype");
  expect_rejected([](json& j) { j["moe_intermediate_size"] = 2050; }, "moe_intermediate_size");
}

TEST(ModelConfigReject, YarnMalformed) {
  expect_rejected([](json& j) { j["rope_scaling"]["type"] = "linear"; }, "rope_scaling.type");
  expect_rejected([](json& j) { j["rope_scaling"].erase("type"); }, "rope_scaling.type");
  expect_rejected([](json& j) { j["rope_scaling"].erase("factor"); }, "rope_scaling.factor");
  expect_rejected([](json& j) { j["rope_scaling"]["factor"] = 0.5; }, "rope_scaling.factor");
  expect_rejected([](json& j) { j["rope_scaling"]["factor"] = "16"; }, "rope_scaling.factor");
  expect_rejected([](json& j) { j["rope_scaling"].erase("original_max_position_embeddings"); },
                  "rope_scaling.original_max_position_embeddings");
  expect_rejected([](json& j) { j["rope_scaling"]["original_max_position_embeddings"] = 0; },
                  "rope_scaling.original_max_position_embeddings");
  expect_rejected([](json& j) { j["rope_scaling"]["beta_fast"] = 0.5; }, "rope_scaling.beta_fast");
  expect_rejected([](json& j) { j["rope_scaling"]["beta_slow"] = -1; }, "rope_scaling.beta_slow");
  expect_rejected([](json& j) { j["rope_scaling"]["attention_factor"] = 1.2773; }, "rope_scaling.attention_factor");
}

TEST(ModelConfigReject, FixedKeys) {
  expect_rejected([](json& j) { j["num_key_value_heads"] = 8; }, "num_key_value_heads");
  expect_rejected([](json& j) { j["scoring_func"] = "softmax"; }, "scoring_func");
  expect_rejected([](json& j) { j["model_type"] = "deepseek_v3"; }, "model_type");
  expect_rejected([](json& j) { j["tie_word_embeddings"] = true; }, "tie_word_embeddings");
  expect_rejected([](json& j) { j["eos_token_id"] = 129280; }, "eos_token_id");
}

TEST(ModelConfigReject, TransformersForm) {
  expect_rejected_hf([](json& j) { j["layer_types"].erase(0); }, "layer_types");
  expect_rejected_hf([](json& j) { j["layer_types"][4] = "full_attention"; }, "layer_types[4]");
  expect_rejected_hf([](json& j) { j["mlp_layer_types"][5] = "hash_moe"; }, "mlp_layer_types[5]");
  expect_rejected_hf([](json& j) { j["mlp_layer_types"][1] = "dense"; }, "mlp_layer_types[1]");
  expect_rejected_hf([](json& j) { j["compress_rates"]["compressed_sparse_attention"] = 8; }, "compress_ratios[2]");
  expect_rejected_hf([](json& j) { j["rope_parameters"]["compress"]["attention_factor"] = 1.2773; },
                     "rope_parameters.compress.attention_factor");
  expect_rejected_hf([](json& j) { j["rope_parameters"]["compress"].erase("factor"); },
                     "rope_parameters.compress.factor");
  expect_rejected_hf([](json& j) { j["rope_parameters"]["main"]["rope_type"] = "yarn"; },
                     "rope_parameters.main.rope_type");
  expect_rejected_hf([](json& j) { j["rope_theta"] = 20000; }, "rope_theta");
  expect_rejected_hf([](json& j) { j["partial_rotary_factor"] = 0.25; }, "partial_rotary_factor");
}

TEST(ModelConfigReject, MalformedJsonNamesLineAndColumn) {
  const std::string text = "{\n  \"vocab_size\": 129280,\n  \"hidden_size\": 40 96\n}\n";
  try {
    parse_model_config(text, "broken.json");
    FAIL() << "accepted malformed JSON";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(e.message().find("broken.json:3:"), std::string::npos) << e.message();
  }
  EXPECT_THROW(parse_model_config("[1, 2]", "array.json"), Error);
  EXPECT_THROW(parse_model_config("", "empty.json"), Error);
}

TEST(ModelConfigReject, MissingFile) {
  try {
    load_model_config(models_dir() / "no-such-model.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
    EXPECT_NE(e.message().find("no-such-model.json"), std::string::npos);
  }
}

}  // namespace
}  // namespace dsv4
