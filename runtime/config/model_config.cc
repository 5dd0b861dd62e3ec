// ModelConfig: derived accessors, validation of the typed fields, and the official config.json writer.
// Parsing of the two JSON forms lives in model_config_parse.cc.
#include "runtime/config/model_config.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

#include "runtime/core/error.h"

namespace dsv4 {
namespace {

bool is_power_of_two(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

// Every error names the official config.json key, so a user can find the line to fix.
void require_positive(int64_t value, const char* key) {
  DSV4_CHECK_ARG(value > 0) << "config key '" << key << "' must be positive, got " << value;
}

void require_positive(double value, const char* key) {
  DSV4_CHECK_ARG(value > 0.0) << "config key '" << key << "' must be positive, got " << value;
}

}  // namespace

AttentionKind ModelConfig::attention_kind(int64_t layer) const {
  const int64_t ratio = compress_ratio(layer);
  if (ratio == 0) return AttentionKind::kSlidingWindow;
  if (ratio == 4) return AttentionKind::kCompressed4;
  return AttentionKind::kCompressed128;
}

void ModelConfig::validate() const {
  DSV4_CHECK_ARG(model_type == "deepseek_v4")
      << "config key 'model_type' must be \"deepseek_v4\", got \"" << model_type << "\"";
  require_positive(vocab_size, "vocab_size");
  require_positive(hidden_size, "hidden_size");
  require_positive(num_layers, "num_hidden_layers");
  require_positive(num_heads, "num_attention_heads");
  require_positive(head_dim, "head_dim");
  require_positive(rope_dim, "qk_rope_head_dim");
  require_positive(q_lora_rank, "q_lora_rank");
  require_positive(o_groups, "o_groups");
  require_positive(o_lora_rank, "o_lora_rank");
  require_positive(num_routed_experts, "n_routed_experts");
  require_positive(num_experts_per_token, "num_experts_per_tok");
  require_positive(num_shared_experts, "n_shared_experts");
  require_positive(moe_intermediate_size, "moe_intermediate_size");
  require_positive(sliding_window, "sliding_window");
  require_positive(index_num_heads, "index_n_heads");
  require_positive(index_head_dim, "index_head_dim");
  require_positive(hc_mult, "hc_mult");
  require_positive(hc_sinkhorn_iters, "hc_sinkhorn_iters");
  require_positive(max_position_embeddings, "max_position_embeddings");
  require_positive(routed_scaling_factor, "routed_scaling_factor");
  require_positive(swiglu_limit, "swiglu_limit");
  require_positive(hc_eps, "hc_eps");
  require_positive(rms_norm_eps, "rms_norm_eps");
  require_positive(rope_theta, "rope_theta");
  require_positive(compress_rope_theta, "compress_rope_theta");

  DSV4_CHECK_ARG(num_mtp_layers >= 0) << "config key 'num_nextn_predict_layers' must be >= 0, got " << num_mtp_layers;
  DSV4_CHECK_ARG(num_hash_layers >= 0 && num_hash_layers <= num_layers)
      << "config key 'num_hash_layers' (" << num_hash_layers << ") must lie in [0, num_hidden_layers = " << num_layers
      << "]";
  // RoPE rotates interleaved pairs in the last rope_dim dims of a head; the head must keep a non-rotated part.
  DSV4_CHECK_ARG(rope_dim % 2 == 0) << "config key 'qk_rope_head_dim' must be even (RoPE rotates pairs), got "
                                    << rope_dim;
  DSV4_CHECK_ARG(rope_dim < head_dim) << "config key 'qk_rope_head_dim' (" << rope_dim
                                      << ") must be smaller than 'head_dim' (" << head_dim << ")";
  // The indexer rotates the last rope_dim dims of its heads too, then applies a Walsh-Hadamard transform.
  DSV4_CHECK_ARG(index_head_dim >= rope_dim) << "config key 'index_head_dim' (" << index_head_dim
                                             << ") must be at least 'qk_rope_head_dim' (" << rope_dim << ")";
  DSV4_CHECK_ARG(is_power_of_two(index_head_dim))
      << "config key 'index_head_dim' must be a power of two (Hadamard transform), got " << index_head_dim;
  DSV4_CHECK_ARG(num_heads % o_groups == 0) << "config key 'num_attention_heads' (" << num_heads
                                            << ") must be a multiple of 'o_groups' (" << o_groups << ")";
  DSV4_CHECK_ARG(num_experts_per_token <= num_routed_experts)
      << "config key 'num_experts_per_tok' (" << num_experts_per_token << ") exceeds 'n_routed_experts' ("
      << num_routed_experts << ")";
  DSV4_CHECK_ARG(bos_token_id >= 0 && bos_token_id < vocab_size)
      << "config key 'bos_token_id' (" << bos_token_id << ") is outside the vocabulary [0, " << vocab_size << ")";
  DSV4_CHECK_ARG(eos_token_id >= 0 && eos_token_id < vocab_size)
      << "config key 'eos_token_id' (" << eos_token_id << ") is outside the vocabulary [0, " << vocab_size << ")";
  DSV4_CHECK_ARG(!tie_word_embeddings)
      << "config key 'tie_word_embeddings' must be false: DeepSeek-V4 ships a separate head.weight";

  DSV4_CHECK_ARG(static_cast<int64_t>(compress_ratios.size()) == num_layers + num_mtp_layers)
      << "config key 'compress_ratios' has " << compress_ratios.size()
      << " entries, expected num_hidden_layers + num_nextn_predict_layers = " << num_layers + num_mtp_layers;
  bool has_csa = false;
  for (size_t i = 0; i < compress_ratios.size(); ++i) {
    const int64_t ratio = compress_ratios[i];
    // The compressor math (overlapping 2x windows for 4, plain pooling otherwise) and the production KV
    // layout are only defined for the ratios the released models use.
    DSV4_CHECK_ARG(ratio == 0 || ratio == 4 || ratio == 128)
        << "config key 'compress_ratios[" << i << "]' is " << ratio << "; supported ratios are 0, 4 and 128";
    if (static_cast<int64_t>(i) >= num_layers) {
      DSV4_CHECK_ARG(ratio == 0) << "config key 'compress_ratios[" << i << "]' belongs to MTP layer "
                                 << static_cast<int64_t>(i) - num_layers << " and must be 0, got " << ratio;
    }
    has_csa = has_csa || ratio == 4;
  }
  DSV4_CHECK_ARG(index_topk > 0 || !has_csa)
      << "config key 'index_topk' must be positive when a layer has compress ratio 4, got " << index_topk;
  DSV4_CHECK_ARG(index_topk >= 0) << "config key 'index_topk' must be >= 0, got " << index_topk;

  if (yarn.enabled) {
    DSV4_CHECK_ARG(yarn.factor >= 1.0) << "config key 'rope_scaling.factor' must be >= 1, got " << yarn.factor;
    DSV4_CHECK_ARG(yarn.original_max_position > 0)
        << "config key 'rope_scaling.original_max_position_embeddings' must be positive, got "
        << yarn.original_max_position;
    DSV4_CHECK_ARG(yarn.beta_slow > 0.0) << "config key 'rope_scaling.beta_slow' must be positive, got "
                                         << yarn.beta_slow;
    DSV4_CHECK_ARG(yarn.beta_fast > yarn.beta_slow) << "config key 'rope_scaling.beta_fast' (" << yarn.beta_fast
                                                    << ") must exceed 'rope_scaling.beta_slow' (" << yarn.beta_slow
                                                    << ")";
  }

  DSV4_CHECK_ARG(fp8_block == 128) << "config key 'quantization_config.weight_block_size' must be [128, 128], got "
                                   << fp8_block;
  DSV4_CHECK_ARG(fp8_scale_dtype == DType::kF8E8M0 || fp8_scale_dtype == DType::kF32)
      << "config key 'quantization_config.scale_fmt' gives scale dtype " << dtype_name(fp8_scale_dtype)
      << "; only ue8m0 (F8_E8M0) and F32 scales exist";
  DSV4_CHECK_ARG(expert_dtype == DType::kFP4E2M1 || expert_dtype == DType::kF8E4M3)
      << "config key 'expert_dtype' gives " << dtype_name(expert_dtype) << "; only fp4 and fp8 experts exist";
  if (expert_dtype == DType::kFP4E2M1) {
    DSV4_CHECK_ARG(fp4_block == 32) << "FP4 experts use one E8M0 scale per 32 inputs, got block " << fp4_block;
    // Both expert input widths are packed two per byte with one scale per 32 inputs: no ragged block.
    DSV4_CHECK_ARG(hidden_size % fp4_block == 0)
        << "config key 'hidden_size' (" << hidden_size << ") must be a multiple of " << fp4_block
        << " with FP4 experts";
    DSV4_CHECK_ARG(moe_intermediate_size % fp4_block == 0)
        << "config key 'moe_intermediate_size' (" << moe_intermediate_size << ") must be a multiple of "
        << fp4_block << " with FP4 experts";
  }
}

std::string model_config_to_json(const ModelConfig& c) {
  using nlohmann::json;
  json j;
  // Constant keys of the official file, kept so the output reads like the shipped config.json.
  j["architectures"] = json::array({"DeepseekV4ForCausalLM"});
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["hidden_act"] = "silu";
  j["initializer_range"] = 0.02;
  j["num_key_value_heads"] = 1;
  j["scoring_func"] = "sqrtsoftplus";
  j["topk_method"] = "noaux_tc";
  j["torch_dtype"] = "bfloat16";
  j["use_cache"] = true;

  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["head_dim"] = c.head_dim;
  j["qk_rope_head_dim"] = c.rope_dim;
  j["q_lora_rank"] = c.q_lora_rank;
  j["o_groups"] = c.o_groups;
  j["o_lora_rank"] = c.o_lora_rank;
  j["n_routed_experts"] = c.num_routed_experts;
  j["num_experts_per_tok"] = c.num_experts_per_token;
  j["n_shared_experts"] = c.num_shared_experts;
  j["moe_intermediate_size"] = c.moe_intermediate_size;
  j["num_hash_layers"] = c.num_hash_layers;
  j["routed_scaling_factor"] = c.routed_scaling_factor;
  j["norm_topk_prob"] = c.norm_topk_prob;
  j["swiglu_limit"] = c.swiglu_limit;
  j["sliding_window"] = c.sliding_window;
  j["index_n_heads"] = c.index_num_heads;
  j["index_head_dim"] = c.index_head_dim;
  j["index_topk"] = c.index_topk;
  j["hc_mult"] = c.hc_mult;
  j["hc_sinkhorn_iters"] = c.hc_sinkhorn_iters;
  j["hc_eps"] = c.hc_eps;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["compress_rope_theta"] = c.compress_rope_theta;
  if (c.yarn.enabled) {
    j["rope_scaling"] = {{"type", "yarn"},
                         {"factor", c.yarn.factor},
                         {"original_max_position_embeddings", c.yarn.original_max_position},
                         {"beta_fast", c.yarn.beta_fast},
                         {"beta_slow", c.yarn.beta_slow}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["num_nextn_predict_layers"] = c.num_mtp_layers;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["compress_ratios"] = c.compress_ratios;
  // vLLM and the Base checkpoints key the expert format off this top-level key.
  j["expert_dtype"] = c.expert_dtype == DType::kF8E4M3 ? "fp8" : "fp4";

  json q = {{"activation_scheme", "dynamic"},
            {"fmt", "e4m3"},
            {"quant_method", "fp8"},
            {"weight_block_size", json::array({c.fp8_block, c.fp8_block})}};
  // Base checkpoints carry F32 block scales and no scale_fmt.
  if (c.fp8_scale_dtype == DType::kF8E8M0) q["scale_fmt"] = "ue8m0";
  j["quantization_config"] = q;
  return j.dump(2) + "\n";
}

ModelConfig load_model_config(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  DSV4_CHECK_CODE(in.good(), ErrorCode::kNotFound) << "cannot open model config " << path.string();
  std::ostringstream text;
  text << in.rdbuf();
  DSV4_CHECK_CODE(!in.bad(), ErrorCode::kIo) << "cannot read model config " << path.string();
  return parse_model_config(text.str(), path.string());
}

}  // namespace dsv4
