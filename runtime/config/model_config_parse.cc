// Parsing of config.json into ModelConfig, in both forms:
//  * official (the checkpoint's own file): `compress_ratios` (L + MTP entries), `num_hash_layers`,
//    `qk_rope_head_dim`, `rope_scaling` (YaRN for compressed layers);
//  * transformers (configuration_deepseek_v4.py): `layer_types` (L entries) with `compress_rates`,
//    `mlp_layer_types`, `rope_parameters` {"main": ..., "compress": ...}, `partial_rotary_factor`.
// Keys the two forms share are read once. Where a file carries both spellings of one fact they must agree.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "runtime/config/model_config.h"
#include "runtime/config/json_fields.h"
#include "runtime/core/error.h"

namespace dsv4 {
namespace {

using nlohmann::json;

constexpr const char* kSlidingType = "sliding_attention";
constexpr const char* kCsaType = "compressed_sparse_attention";
constexpr const char* kHcaType = "heavily_compressed_attention";

// Reads a YaRN block (`rope_scaling` of the official form, `rope_parameters.compress` or a flat
// `rope_parameters` of the transformers form). `fields` names keys with its own path prefix.
YarnScaling parse_yarn(const JsonFields& fields) {
  YarnScaling yarn;
  std::string type;
  if (fields.has("type")) {
    type = fields.string("type");
  } else if (fields.has("rope_type")) {
    type = fields.string("rope_type");
  } else {
    fields.fail_missing("type");
  }
  if (type == "default") return yarn;  // no scaling
  if (type != "yarn") {
    fields.fail("type", "RoPE scaling \"" + type + "\" is not supported; DeepSeek-V4 uses \"yarn\" or none");
  }
  yarn.enabled = true;
  yarn.factor = fields.number("factor");
  yarn.original_max_position = fields.integer("original_max_position_embeddings");
  // transformers and vLLM default the betas when a file leaves them out; so do we.
  yarn.beta_fast = fields.number_or("beta_fast", 32.0);
  yarn.beta_slow = fields.number_or("beta_slow", 1.0);
  if (yarn.factor < 1.0) fields.fail("factor", "must be >= 1, got " + std::to_string(yarn.factor));
  if (yarn.original_max_position <= 0) {
    fields.fail("original_max_position_embeddings",
                "must be positive, got " + std::to_string(yarn.original_max_position));
  }
  if (yarn.beta_slow <= 0.0) fields.fail("beta_slow", "must be positive, got " + std::to_string(yarn.beta_slow));
  if (yarn.beta_fast <= yarn.beta_slow) {
    fields.fail("beta_fast", "must exceed beta_slow (" + std::to_string(yarn.beta_slow) + "), got " +
                                 std::to_string(yarn.beta_fast));
  }
  // V4 applies no YaRN magnitude factor to cos/sin (spec §1.2): a file asking for one describes another model.
  if (fields.has("attention_factor") && fields.number("attention_factor") != 1.0) {
    fields.fail("attention_factor", "must be 1.0 (DeepSeek-V4 applies no YaRN magnitude factor)");
  }
  return yarn;
}

// A fact given twice (official and transformers spelling) must agree.
void require_same(const JsonFields& fields, const std::string& key, double a, double b, const std::string& other) {
  if (a != b) {
    fields.fail(key, "is " + std::to_string(a) + " but '" + other + "' gives " + std::to_string(b));
  }
}

void parse_quantization(const JsonFields& root, ModelConfig* c) {
  const JsonFields q = root.object("quantization_config");
  const std::string method = q.string("quant_method");
  if (method != "fp8") q.fail("quant_method", "must be \"fp8\", got \"" + method + "\"");
  if (q.has("fmt") && q.string("fmt") != "e4m3") q.fail("fmt", "must be \"e4m3\"");
  const std::vector<int64_t> block = q.integer_array("weight_block_size");
  if (block.size() != 2 || block[0] != 128 || block[1] != 128) {
    q.fail("weight_block_size", "must be [128, 128] (the only FP8 block layout of the V4 checkpoints)");
  }
  c->fp8_block = block[0];
  std::string scale_fmt = q.has("scale_fmt") ? q.string("scale_fmt") : "";
  if (scale_fmt == "ue8m0") {
    c->fp8_scale_dtype = DType::kF8E8M0;
  } else if (scale_fmt.empty() || scale_fmt == "float32" || scale_fmt == "fp32") {
    c->fp8_scale_dtype = DType::kF32;  // Base checkpoints: F32 block scales
  } else {
    q.fail("scale_fmt", "unknown scale format \"" + scale_fmt + "\" (expected \"ue8m0\" or none)");
  }

  // `expert_dtype` sits at top level in the V4 files and inside quantization_config in V4.1 ones
  // (transformers moves it there); read either, and both must agree.
  std::optional<std::string> expert;
  if (root.has("expert_dtype")) expert = root.string("expert_dtype");
  if (q.has("expert_dtype")) {
    const std::string inner = q.string("expert_dtype");
    if (expert && *expert != inner) {
      q.fail("expert_dtype", "is \"" + inner + "\" but top-level 'expert_dtype' is \"" + *expert + "\"");
    }
    expert = inner;
  }
  const std::string value = expert.value_or("fp4");  // instruct checkpoints: FP4 experts
  if (value == "fp4") {
    c->expert_dtype = DType::kFP4E2M1;
  } else if (value == "fp8") {
    c->expert_dtype = DType::kF8E4M3;
  } else {
    (root.has("expert_dtype") ? root : q).fail("expert_dtype", "must be \"fp4\" or \"fp8\", got \"" + value + "\"");
  }
}

// Attention schedule and hash layers of the transformers form.
void parse_transformers_layers(const JsonFields& root, ModelConfig* c) {
  std::map<std::string, int64_t> rates = {{kSlidingType, 0}, {kCsaType, 4}, {kHcaType, 128}};
  if (root.has("compress_rates")) {
    const JsonFields cr = root.object("compress_rates");
    for (const char* type : {kCsaType, kHcaType}) {
      if (cr.has(type)) rates[type] = cr.integer(type);
    }
  }
  if (root.has("compress_rate_csa")) rates[kCsaType] = root.integer("compress_rate_csa");
  if (root.has("compress_rate_hca")) rates[kHcaType] = root.integer("compress_rate_hca");

  const std::vector<std::string> types = root.string_array("layer_types");
  if (static_cast<int64_t>(types.size()) != c->num_layers) {
    root.fail("layer_types", "has " + std::to_string(types.size()) + " entries, expected num_hidden_layers = " +
                                 std::to_string(c->num_layers));
  }
  std::vector<int64_t> ratios;
  for (size_t i = 0; i < types.size(); ++i) {
    auto it = rates.find(types[i]);
    if (it == rates.end()) {
      root.fail("layer_types[" + std::to_string(i) + "]",
                "unknown layer type \"" + types[i] + "\" (expected " + kSlidingType + ", " + kCsaType + " or " +
                    kHcaType + ")");
    }
    ratios.push_back(it->second);
  }
  // The MTP layers are not listed in layer_types: they are sliding-window only.
  ratios.resize(static_cast<size_t>(c->num_layers + c->num_mtp_layers), 0);
  if (root.has("compress_ratios") && root.integer_array("compress_ratios") != ratios) {
    root.fail("compress_ratios", "disagrees with 'layer_types' and 'compress_rates'");
  }
  c->compress_ratios = std::move(ratios);

  if (root.has("mlp_layer_types")) {
    const std::vector<std::string> mlp = root.string_array("mlp_layer_types");
    if (static_cast<int64_t>(mlp.size()) != c->num_layers) {
      root.fail("mlp_layer_types", "has " + std::to_string(mlp.size()) + " entries, expected num_hidden_layers = " +
                                       std::to_string(c->num_layers));
    }
    int64_t hash = 0;
    for (size_t i = 0; i < mlp.size(); ++i) {
      const std::string key = "mlp_layer_types[" + std::to_string(i) + "]";
      if (mlp[i] == "hash_moe") {
        // Hash routing is a bootstrap of the first layers; a hash layer after a routed one has no meaning here.
        if (hash != static_cast<int64_t>(i)) root.fail(key, "\"hash_moe\" must only appear before every \"moe\"");
        ++hash;
      } else if (mlp[i] != "moe") {
        root.fail(key, "unknown MLP layer type \"" + mlp[i] + "\" (expected hash_moe or moe)");
      }
    }
    if (root.has("num_hash_layers")) {
      require_same(root, "num_hash_layers", static_cast<double>(root.integer("num_hash_layers")),
                   static_cast<double>(hash), "mlp_layer_types");
    }
    c->num_hash_layers = hash;
  } else {
    // transformers' default: 3 hash layers, or the legacy top-level num_hash_layers.
    c->num_hash_layers = std::min<int64_t>(root.integer_or("num_hash_layers", 3), c->num_layers);
  }
}

// RoPE: the official `rope_theta` + `compress_rope_theta` + `rope_scaling` + `qk_rope_head_dim`, or the
// transformers `rope_parameters` (nested by rope kind, or flat as in legacy files) + `partial_rotary_factor`.
void parse_rope(const JsonFields& root, ModelConfig* c) {
  std::optional<double> partial;
  if (root.has("partial_rotary_factor")) partial = root.number("partial_rotary_factor");
  if (root.has("rope_parameters") && root.object("rope_parameters").has("main")) {
    const JsonFields rp = root.object("rope_parameters");
    const JsonFields main = rp.object("main");
    const JsonFields compress = rp.object("compress");
    const std::string main_type = main.has("rope_type") ? main.string("rope_type") : "default";
    if (main_type != "default") main.fail("rope_type", "must be \"default\": sliding layers use plain RoPE");
    c->rope_theta = main.number("rope_theta");
    c->compress_rope_theta = compress.number("rope_theta");
    if (root.has("rope_theta")) require_same(root, "rope_theta", root.number("rope_theta"), c->rope_theta,
                                             "rope_parameters.main.rope_theta");
    if (root.has("compress_rope_theta")) {
      require_same(root, "compress_rope_theta", root.number("compress_rope_theta"), c->compress_rope_theta,
                   "rope_parameters.compress.rope_theta");
    }
    c->yarn = compress.has("rope_type") || compress.has("type") ? parse_yarn(compress) : YarnScaling{};
    if (!partial && main.has("partial_rotary_factor")) partial = main.number("partial_rotary_factor");
  } else {
    c->rope_theta = root.number("rope_theta");
    c->compress_rope_theta = root.number("compress_rope_theta");
    if (root.has("rope_parameters")) {
      c->yarn = parse_yarn(root.object("rope_parameters"));
    } else if (root.has("rope_scaling")) {
      c->yarn = parse_yarn(root.object("rope_scaling"));
    }
  }

  if (root.has("qk_rope_head_dim")) {
    c->rope_dim = root.integer("qk_rope_head_dim");
  } else if (partial) {
    const double dims = *partial * static_cast<double>(c->head_dim);
    if (dims != std::floor(dims)) {
      root.fail("partial_rotary_factor", "times head_dim is not a whole number of dims");
    }
    c->rope_dim = static_cast<int64_t>(dims);
  } else {
    root.fail_missing("qk_rope_head_dim");
  }
  if (partial && static_cast<double>(c->rope_dim) != *partial * static_cast<double>(c->head_dim)) {
    root.fail("partial_rotary_factor", "disagrees with 'qk_rope_head_dim'");
  }
}

// Keys whose only valid value is the one V4 uses: a different value means a different model.
void check_fixed_keys(const JsonFields& root) {
  if (root.has("num_key_value_heads") && root.integer("num_key_value_heads") != 1) {
    root.fail("num_key_value_heads", "must be 1 (one shared K = V vector)");
  }
  if (root.has("first_k_dense_replace") && root.integer("first_k_dense_replace") != 0) {
    root.fail("first_k_dense_replace", "must be 0 (every V4 layer is MoE)");
  }
  if (root.has("scoring_func") && root.string("scoring_func") != "sqrtsoftplus") {
    root.fail("scoring_func", "must be \"sqrtsoftplus\"");
  }
  if (root.has("topk_method") && root.string("topk_method") != "noaux_tc") {
    root.fail("topk_method", "must be \"noaux_tc\"");
  }
  if (root.has("hidden_act") && root.string("hidden_act") != "silu") root.fail("hidden_act", "must be \"silu\"");
}

ModelConfig parse_fields(const JsonFields& root) {
  ModelConfig c;
  c.model_type = root.string("model_type");
  c.vocab_size = root.integer("vocab_size");
  c.hidden_size = root.integer("hidden_size");
  c.num_layers = root.integer("num_hidden_layers");
  c.num_heads = root.integer("num_attention_heads");
  c.head_dim = root.integer("head_dim");
  c.q_lora_rank = root.integer("q_lora_rank");
  c.o_groups = root.integer("o_groups");
  c.o_lora_rank = root.integer("o_lora_rank");
  c.num_routed_experts = root.integer("n_routed_experts");
  c.num_experts_per_token = root.integer("num_experts_per_tok");
  c.num_shared_experts = root.integer_or("n_shared_experts", 1);
  c.moe_intermediate_size = root.integer("moe_intermediate_size");
  c.routed_scaling_factor = root.number("routed_scaling_factor");
  c.norm_topk_prob = root.boolean_or("norm_topk_prob", true);
  c.swiglu_limit = root.number("swiglu_limit");
  c.sliding_window = root.integer("sliding_window");
  c.index_num_heads = root.integer("index_n_heads");
  c.index_head_dim = root.integer("index_head_dim");
  c.index_topk = root.integer("index_topk");
  c.hc_mult = root.integer("hc_mult");
  c.hc_sinkhorn_iters = root.integer_or("hc_sinkhorn_iters", 20);
  c.hc_eps = root.number_or("hc_eps", 1e-6);
  c.rms_norm_eps = root.number_or("rms_norm_eps", 1e-6);
  c.max_position_embeddings = root.integer("max_position_embeddings");
  c.num_mtp_layers = root.integer("num_nextn_predict_layers");
  c.bos_token_id = root.integer_or("bos_token_id", 0);
  c.eos_token_id = root.first_integer_or("eos_token_id", 1);
  c.tie_word_embeddings = root.boolean_or("tie_word_embeddings", false);
  check_fixed_keys(root);
  parse_quantization(root, &c);

  if (root.has("layer_types")) {
    parse_transformers_layers(root, &c);
  } else {
    c.compress_ratios = root.integer_array("compress_ratios");
    c.num_hash_layers = root.integer("num_hash_layers");
  }
  parse_rope(root, &c);
  return c;
}

}  // namespace

ModelConfig parse_model_config(const std::string& json_text, const std::string& origin) {
  const json doc = parse_json_document(json_text, origin);
  DSV4_CHECK_ARG(doc.is_object()) << origin << ": a model config must be a JSON object, got " << doc.type_name();
  ModelConfig config = parse_fields(JsonFields(doc, origin, ""));
  try {
    config.validate();
  } catch (const Error& e) {
    throw Error(e.code(), origin + ": " + e.message(), e.file(), e.line());
  }
  return config;
}

}  // namespace dsv4
