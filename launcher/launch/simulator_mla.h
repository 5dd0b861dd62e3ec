// The simulator's step model for MLA models (DeepSeek-V3 / R1), so that the published V3 serving numbers
// (ANCHORS.md) can check the parts of the model that V3 and V4 share: expert GEMMs, dispatch/combine, dense
// projections, LM head, overlap, expert load. V3's attention is Multi-head Latent Attention, not V4's
// CSA/HCA: it is modelled here on its own terms (docs/SIMULATOR.md, "MLA models"), from a description file
// (configs/simulator/deepseek-v3.yaml), not from a V4 config.json.
#pragma once

#include <filesystem>
#include <string>

#include "launcher/launch/hardware.h"
#include "launcher/launch/simulator.h"

namespace dsv4::launch {

/// The shape of an MLA MoE model (DeepSeek-V3 config.json names in comments).
struct MlaModel {
  std::string name;
  int64_t layers = 0;              // num_hidden_layers
  int64_t dense_layers = 0;        // first_k_dense_replace: leading layers with a dense FFN
  int64_t hidden = 0;              // hidden_size
  int64_t heads = 0;               // num_attention_heads
  int64_t q_lora_rank = 0;         // q_lora_rank
  int64_t kv_lora_rank = 0;        // kv_lora_rank (the cached latent)
  int64_t qk_nope_head_dim = 0;    // qk_nope_head_dim
  int64_t qk_rope_head_dim = 0;    // qk_rope_head_dim (cached with the latent)
  int64_t v_head_dim = 0;          // v_head_dim
  int64_t dense_intermediate = 0;  // intermediate_size (dense FFN layers)
  int64_t moe_intermediate = 0;    // moe_intermediate_size (each routed and shared expert)
  int64_t routed_experts = 0;      // n_routed_experts
  int64_t shared_experts = 0;      // n_shared_experts
  int64_t experts_per_token = 0;   // num_experts_per_tok
  int64_t vocab = 0;               // vocab_size
  double weight_bytes = 1.0;       // bytes per linear weight (V3: FP8 with 128x128 scales)
  double kv_cache_bytes = 2.0;     // bytes per cached latent element (FlashMLA: BF16)
};

/// Parses an MLA description (YAML mapping of the fields above; every field required, unknown keys refused).
MlaModel parse_mla_model(const std::string& yaml_text, const std::string& origin);
MlaModel load_mla_model(const std::filesystem::path& path);

/// One decode step and one prefill step of `model` on `setup` (tp splits heads, the dense and shared FFN
/// columns and the vocabulary; ep spreads routed + `redundant_experts` physical experts; cp must be 1).
/// GPU profiles only: the project's CPU kernels do not implement MLA. Same SimResult as `simulate`.
SimResult simulate_mla(const MlaModel& model, const SimSetup& setup, const HardwareProfile& hw, const Workload& w,
                       int64_t redundant_experts);

}  // namespace dsv4::launch
