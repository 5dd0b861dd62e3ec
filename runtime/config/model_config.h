// The typed, validated configuration of a DeepSeek-V4 family model (Flash, Pro, tiny test models).
//
// Parsed from the official checkpoint config.json (keys `compress_ratios`, `num_hash_layers`, `rope_scaling`...)
// or from the transformers form (`layer_types`, `compress_rates`, `mlp_layer_types`, `rope_parameters`).
// Every field below is validated on load; an invalid or inconsistent config is rejected with the key named.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/core/dtype.h"

namespace dsv4 {

/// Attention kind of one layer, from its compress ratio (spec §1.1).
enum class AttentionKind {
  kSlidingWindow,  // ratio 0: raw window only (SWA)
  kCompressed4,    // ratio 4: CSA, overlapping compressor + lightning indexer
  kCompressed128,  // ratio 128: HCA, every compressed row visible (validate() admits only 0, 4, 128)
};

struct YarnScaling {
  bool enabled = false;
  double factor = 1.0;
  int64_t original_max_position = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;

  bool operator==(const YarnScaling&) const = default;
};

struct ModelConfig {
  std::string model_type = "deepseek_v4";
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;                 // D
  int64_t num_layers = 0;                  // L (main layers, MTP excluded)
  int64_t num_heads = 0;                   // H
  int64_t head_dim = 0;                    // d (512): shared K = V width
  int64_t rope_dim = 0;                    // r (64): the last r dims of every head are rotated
  int64_t q_lora_rank = 0;
  int64_t o_groups = 0;                    // G
  int64_t o_lora_rank = 0;
  int64_t num_routed_experts = 0;          // E
  int64_t num_experts_per_token = 0;       // k
  int64_t num_shared_experts = 1;
  int64_t moe_intermediate_size = 0;       // F (routed and shared)
  int64_t num_hash_layers = 0;             // layers [0, num_hash_layers) route by tid2eid
  double routed_scaling_factor = 1.0;
  bool norm_topk_prob = true;
  double swiglu_limit = 10.0;
  int64_t sliding_window = 128;            // raw rows a query sees, itself included
  int64_t index_num_heads = 0;
  int64_t index_head_dim = 0;
  int64_t index_topk = 0;
  int64_t hc_mult = 4;
  int64_t hc_sinkhorn_iters = 20;
  double hc_eps = 1e-6;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;             // main RoPE (ratio-0 layers, MTP)
  double compress_rope_theta = 160000.0;   // compressed layers, with YaRN
  YarnScaling yarn;                        // applies to compressed layers only
  int64_t max_position_embeddings = 0;
  int64_t num_mtp_layers = 0;              // num_nextn_predict_layers
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 1;
  bool tie_word_embeddings = false;

  /// One entry per main layer, then one per MTP layer (always 0): L + num_mtp_layers entries.
  std::vector<int64_t> compress_ratios;

  /// Routed-expert weight format: FP4 (e2m1 packed, E8M0 per 32) in instruct checkpoints, FP8 in Base ones.
  DType expert_dtype = DType::kFP4E2M1;
  /// Scale dtype of FP8 block weights: E8M0 (instruct) or F32 (Base).
  DType fp8_scale_dtype = DType::kF8E8M0;
  int64_t fp8_block = 128;                 // weight_block_size (square)
  int64_t fp4_block = 32;                  // inputs per E8M0 scale of FP4 experts

  // ---- derived ------------------------------------------------------------------------------------
  int64_t compress_ratio(int64_t layer) const { return compress_ratios.at(static_cast<size_t>(layer)); }
  AttentionKind attention_kind(int64_t layer) const;
  bool is_hash_layer(int64_t layer) const { return layer < num_hash_layers; }
  int64_t nope_dim() const { return head_dim - rope_dim; }
  int64_t heads_per_group() const { return num_heads / o_groups; }
  /// Total (L + MTP) layers with parameters.
  int64_t num_layers_with_mtp() const { return num_layers + num_mtp_layers; }

  /// Throws Error(kInvalidArgument) naming the offending key on any inconsistency.
  void validate() const;

  /// Field-by-field equality (used to check that both config.json forms describe the same model).
  bool operator==(const ModelConfig&) const = default;
};

/// Parses a config.json (official or transformers form) and validates it. Errors name the file and key.
ModelConfig load_model_config(const std::filesystem::path& path);
ModelConfig parse_model_config(const std::string& json_text, const std::string& origin = "config.json");

/// Writes the official config.json form (what make-checkpoint ships).
std::string model_config_to_json(const ModelConfig& config);

}  // namespace dsv4
