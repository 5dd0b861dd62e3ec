#include "launcher/launch/simulator_mla.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "launcher/launch/hardware.h"
#include "launcher/launch/sim_device.h"
#include "runtime/core/error.h"

namespace dsv4::launch {

MlaModel parse_mla_model(const std::string& yaml_text, const std::string& origin) {
  const YAML::Node root = load_yaml_mapping(yaml_text, origin);
  MlaModel m;
  const std::map<std::string, int64_t*> ints = {
      {"layers", &m.layers},
      {"dense_layers", &m.dense_layers},
      {"hidden", &m.hidden},
      {"heads", &m.heads},
      {"q_lora_rank", &m.q_lora_rank},
      {"kv_lora_rank", &m.kv_lora_rank},
      {"qk_nope_head_dim", &m.qk_nope_head_dim},
      {"qk_rope_head_dim", &m.qk_rope_head_dim},
      {"v_head_dim", &m.v_head_dim},
      {"dense_intermediate", &m.dense_intermediate},
      {"moe_intermediate", &m.moe_intermediate},
      {"routed_experts", &m.routed_experts},
      {"shared_experts", &m.shared_experts},
      {"experts_per_token", &m.experts_per_token},
      {"vocab", &m.vocab},
  };
  const std::map<std::string, double*> reals = {{"weight_bytes", &m.weight_bytes},
                                                {"kv_cache_bytes", &m.kv_cache_bytes}};
  std::map<std::string, bool> seen;
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    seen[key] = true;
    try {
      if (key == "name") {
        m.name = kv.second.as<std::string>();
      } else if (key == "architecture" || key == "source" || key == "notes") {
        // free text
      } else if (ints.count(key)) {
        *ints.at(key) = kv.second.as<int64_t>();
        DSV4_CHECK_ARG(*ints.at(key) >= 0) << origin << ": " << key << ": must be >= 0";
      } else if (reals.count(key)) {
        *reals.at(key) = kv.second.as<double>();
        DSV4_CHECK_ARG(*reals.at(key) > 0) << origin << ": " << key << ": must be > 0";
      } else {
        DSV4_THROW(kInvalidArgument) << origin << ": " << key << ": unknown key";
      }
    } catch (const YAML::Exception&) {
      DSV4_THROW(kInvalidArgument) << origin << ": " << key << ": expected a number";
    }
  }
  DSV4_CHECK_ARG(!m.name.empty()) << origin << ": name: missing";
  for (const auto& [key, ptr] : ints) DSV4_CHECK_ARG(seen.count(key)) << origin << ": " << key << ": missing";
  for (const auto& [key, ptr] : reals) DSV4_CHECK_ARG(seen.count(key)) << origin << ": " << key << ": missing";
  DSV4_CHECK_ARG(m.layers >= 1 && m.dense_layers <= m.layers) << origin << ": dense_layers must be <= layers";
  DSV4_CHECK_ARG(m.hidden > 0 && m.heads > 0 && m.vocab > 0) << origin << ": hidden, heads and vocab must be > 0";
  DSV4_CHECK_ARG(m.experts_per_token >= 1 && m.experts_per_token <= m.routed_experts)
      << origin << ": experts_per_token must be in [1, routed_experts]";
  return m;
}

MlaModel load_mla_model(const std::filesystem::path& path) {
  std::ifstream in(path);
  DSV4_CHECK_CODE(in.good(), ErrorCode::kIo) << "cannot read MLA model description " << path.string();
  std::stringstream text;
  text << in.rdbuf();
  return parse_mla_model(text.str(), path.filename().string());
}

namespace {

using sim_detail::Device;

// One step of one rank of an MLA model. `tokens`: the replica's tokens; `sequences`: its sequences; `ctx`: KV
// rows each query sees (average); `logit_tokens`: tokens needing logits.
StepResult mla_step(const MlaModel& m, const SimSetup& s, const HardwareProfile& hw, int64_t redundant, double tokens,
                    double sequences, double ctx, double logit_tokens, bool decode) {
  const ParallelLayout& l = s.layout;
  const Device dev(hw, s.gpus_per_node);
  const double t = tokens, tp = static_cast<double>(l.tp);
  const double D = static_cast<double>(m.hidden);
  const double hl = static_cast<double>(m.heads) / tp;  // this rank's heads
  const double qr = static_cast<double>(m.q_lora_rank), kvr = static_cast<double>(m.kv_lora_rank);
  const double nope = static_cast<double>(m.qk_nope_head_dim), rope = static_cast<double>(m.qk_rope_head_dim);
  const double vd = static_cast<double>(m.v_head_dim);
  const double ffd = static_cast<double>(m.dense_intermediate), ff = static_cast<double>(m.moe_intermediate);
  const double shared = static_cast<double>(m.shared_experts);
  const bool intra_tp = l.tp <= s.gpus_per_node;
  const double tp_bw = hw.get(intra_tp ? "intra_bandwidth" : "inter_bandwidth");
  const double tp_lat = hw.get(intra_tp ? "intra_latency" : "inter_latency");
  StepResult out;
  out.tokens = t;
  auto add = [&out](Part p, double sec) { out.seconds[p] += sec; };
  // FP8 projections; on a GPU the bytes per weight come from the description.
  auto proj = [&](double rows, double n, double k) {
    return gemm_time(rows, n, k, m.weight_bytes, hw.get("fp8_flops"), dev.bandwidth).seconds;
  };

  const double layers = static_cast<double>(m.layers);
  const double moe_layers = static_cast<double>(m.layers - m.dense_layers);
  // Attention, identical in every layer.
  double attn_dense = proj(t, qr, D) + proj(t, hl * (nope + rope), qr) + proj(t, kvr + rope, D) + proj(t, D, hl * vd);
  double attn_core = 0;
  if (decode) {
    // Absorbed MLA (FlashMLA): q_nope is mapped into the latent space (per head [nope -> kv_lora]), every head
    // attends over the shared cached latent + rope rows (scores over kv_lora + rope, values over kv_lora), and
    // the output is mapped back to v_head_dim per head. The absorbed per-head matrices are BF16 (as SGLang keeps
    // w_kc / w_vc).
    attn_dense += hl * (gemm_time(t, kvr, nope, 2.0, hw.get("bf16_flops"), dev.bandwidth).seconds +
                        gemm_time(t, vd, kvr, 2.0, hw.get("bf16_flops"), dev.bandwidth).seconds);
    const double flops = t * hl * ctx * 2.0 * ((kvr + rope) + kvr);
    const double bytes = sequences * ctx * (kvr + rope) * m.kv_cache_bytes;
    attn_core = std::max(flops / hw.get("bf16_flops"), bytes / dev.bandwidth);
  } else {
    // Prefill expands the latent per head (kv_b) and runs ordinary causal attention over nope + rope / v.
    attn_dense += proj(t, hl * (nope + vd), kvr);
    const double flops = t * hl * ctx * 2.0 * (nope + rope + vd);
    const double bytes = std::max(1.0, t / 128.0) * ctx * hl * (nope + rope + vd) * 2.0;
    attn_core = std::max(flops / hw.get("bf16_flops"), bytes / dev.bandwidth);
  }
  add(kDenseGemm, layers * attn_dense);
  add(kAttention, layers * attn_core);

  // FFN: dense layers (columns split over TP), MoE layers: router (bf16), shared expert (TP), routed experts.
  add(kDenseGemm, static_cast<double>(m.dense_layers) * (proj(t, 2 * ffd / tp, D) + proj(t, D, ffd / tp)));
  add(kDenseGemm,
      moe_layers *
          (gemm_time(t, static_cast<double>(m.routed_experts), D, 2.0, hw.get("bf16_flops"), dev.bandwidth).seconds +
           (shared > 0 ? proj(t, 2 * shared * ff / tp, D) + proj(t, D, shared * ff / tp) : 0.0)));
  const double k = static_cast<double>(m.experts_per_token);
  const double physical = static_cast<double>(m.routed_experts + redundant);
  const double per_rank_tokens = t / tp;
  const double group_tokens = per_rank_tokens * static_cast<double>(l.ep);
  const double max_copies = expected_max_load(group_tokens * k, l.ep, s.expert_skew);
  out.max_copies_per_rank = max_copies;
  // Redundant copies spread the same load over more physical experts: a token's copy lands on one replica of
  // its expert, so each physical expert is hit with probability 1 - (1 - k / physical)^tokens.
  const double local = physical / static_cast<double>(l.ep);
  const double p_hit = 1.0 - std::pow(1.0 - k / physical, group_tokens);
  add(kExperts, moe_layers * dev.experts(local * p_hit, max_copies, D, ff, m.weight_bytes));
  const double dispatch_bytes = D + D / 128.0 * 4.0, combine_bytes = D * 2.0;
  add(kDispatchCombine, moe_layers * (all_to_all_time(max_copies, dispatch_bytes, l.ep, s.gpus_per_node, hw) +
                                      all_to_all_time(max_copies, combine_bytes, l.ep, s.gpus_per_node, hw)));
  // TP: all-reduce after o_proj and after the FFN of every layer, all-gather of the combined MoE output.
  const double act = t * D * 2.0;
  add(kTpCollectives, layers * 2 * allreduce_time(act, l.tp, tp_bw, tp_lat) +
                          moe_layers * allgather_time(act, l.tp, tp_bw, tp_lat) +
                          allreduce_time(act, l.tp, tp_bw, tp_lat));
  // LM head (BF16, vocab split over TP) and sampling; norms and residual adds (bf16 hidden, ~3 passes per
  // sub-layer); the fixed step overhead.
  const double vshard = std::ceil(static_cast<double>(m.vocab) / tp);
  add(kDenseGemm, gemm_time(logit_tokens, vshard, D, 2.0, hw.get("bf16_flops"), dev.bandwidth).seconds);
  add(kSampling,
      3.0 * logit_tokens * vshard * 4.0 / dev.bandwidth + allgather_time(logit_tokens * 64 * 8.0, l.tp, tp_bw, tp_lat));
  add(kOther, layers * 2 * 3 * t * D * 2.0 / dev.bandwidth + hw.get("step_overhead"));

  out.finish_serial();  // simulate_mla() then applies the overlap
  return out;
}

}  // namespace

SimResult simulate_mla(const MlaModel& m, const SimSetup& s, const HardwareProfile& hw, const Workload& w,
                       int64_t redundant) {
  const ParallelLayout& l = s.layout;
  DSV4_CHECK_ARG(hw.device == "gpu") << "MLA models are simulated on GPU profiles only (the CPU kernels have no MLA)";
  DSV4_CHECK_ARG(l.cp == 1) << "MLA models: context parallelism is not modelled (cp must be 1)";
  DSV4_CHECK_ARG(l.world() == s.nodes * s.gpus_per_node)
      << "layout has " << l.world() << " ranks but nodes x gpus_per_node = " << s.nodes << " x " << s.gpus_per_node;
  DSV4_CHECK_ARG(m.heads % l.tp == 0) << m.name << ": tp=" << l.tp << " does not divide " << m.heads << " heads";
  DSV4_CHECK_ARG(redundant >= 0) << "--redundant-experts must be >= 0";
  DSV4_CHECK_ARG(l.ep >= 1 && l.world() % l.ep == 0 && (m.routed_experts + redundant) % l.ep == 0)
      << m.name << ": ep=" << l.ep << " must divide the world (" << l.world() << ") and the "
      << m.routed_experts + redundant << " physical experts (routed + --redundant-experts)";
  DSV4_CHECK_ARG(w.batch >= l.dp) << "--batch " << w.batch << " leaves some of the dp=" << l.dp << " replicas idle";
  SimResult res;
  const double seqs = static_cast<double>(w.batch) / static_cast<double>(l.dp);
  const double gpus = static_cast<double>(l.world());
  const double ctx = static_cast<double>(w.context), pctx = static_cast<double>(w.prompt) / 2.0;
  const double overhead = hw.get("step_overhead");
  res.decode = mla_step(m, s, hw, redundant, seqs, seqs, ctx, seqs, true);
  if (s.overlap && seqs >= 2.0) {
    sim_detail::apply_overlap(res.decode, mla_step(m, s, hw, redundant, seqs / 2, seqs / 2, ctx, seqs / 2, true),
                              overhead);
  }
  const double prefill_tokens = std::min(seqs * static_cast<double>(w.prompt), static_cast<double>(s.prefill_chunk));
  const double prefill_seqs = std::max(1.0, prefill_tokens / static_cast<double>(w.prompt));
  res.prefill = mla_step(m, s, hw, redundant, prefill_tokens, prefill_seqs, pctx, prefill_seqs, false);
  if (s.overlap && prefill_tokens >= 2.0) {
    sim_detail::apply_overlap(res.prefill,
                              mla_step(m, s, hw, redundant, prefill_tokens / 2, std::max(1.0, prefill_seqs / 2), pctx,
                                       prefill_seqs / 2, false),
                              overhead);
  }
  res.decode_tokens_per_s_per_gpu = seqs * static_cast<double>(l.dp) / (res.decode.total * gpus);
  res.prefill_tokens_per_s_per_gpu = prefill_tokens * static_cast<double>(l.dp) / (res.prefill.total * gpus);
  const double prefill_steps = std::ceil(seqs * static_cast<double>(w.prompt) / prefill_tokens);
  res.request_seconds = prefill_steps * res.prefill.total + static_cast<double>(w.output) * res.decode.total;

  // Memory: attention + dense/shared FFN + router + embedding/head per replica (split over TP), the local
  // physical experts, the latent cache of this replica's sequences, and activations of the larger step.
  const double D = static_cast<double>(m.hidden), H = static_cast<double>(m.heads), tp = static_cast<double>(l.tp);
  const double attn = D * m.q_lora_rank + m.q_lora_rank * H / tp * (m.qk_nope_head_dim + m.qk_rope_head_dim) +
                      D * (m.kv_lora_rank + m.qk_rope_head_dim) +
                      m.kv_lora_rank * H / tp * (m.qk_nope_head_dim + m.v_head_dim) + H / tp * m.v_head_dim * D;
  const double ffn_dense = 3.0 * D * m.dense_intermediate / tp,
               shared = 3.0 * D * m.moe_intermediate * m.shared_experts / tp;
  const double moe_layers = static_cast<double>(m.layers - m.dense_layers);
  const double experts = static_cast<double>(m.routed_experts + redundant) / static_cast<double>(l.ep) * 3.0 * D *
                         static_cast<double>(m.moe_intermediate) * moe_layers;
  res.memory.weights = (m.layers * attn + m.dense_layers * ffn_dense + moe_layers * shared + experts) * m.weight_bytes +
                       moe_layers * D * m.routed_experts * 4.0 + 2.0 * D * std::ceil(m.vocab / tp) * 2.0;
  res.memory.state =
      seqs * static_cast<double>(w.context) * m.layers * (m.kv_lora_rank + m.qk_rope_head_dim) * m.kv_cache_bytes;
  const double step_tokens = std::max(seqs, prefill_tokens);
  res.memory.workspace = step_tokens * D * 2.0 * 8.0 +
                         2.0 * std::max(res.decode.max_copies_per_rank, res.prefill.max_copies_per_rank) *
                             (D + 2.0 * m.moe_intermediate) * 2.0 +
                         std::max(seqs, prefill_seqs) * std::ceil(m.vocab / tp) * 4.0;
  res.memory.capacity = hw.get("memory_bytes");
  res.fits = res.memory.total() <= res.memory.capacity;
  return res;
}

}  // namespace dsv4::launch
