#include "launcher/launch/simulator.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "launcher/launch/memory_plan.h"
#include "launcher/launch/sim_device.h"
#include "runtime/core/error.h"

namespace dsv4::launch {

// ---- primitives -------------------------------------------------------------------------------------

Roofline gemm_time(double m, double n, double k, double weight_bytes, double flops_rate, double bandwidth) {
  Roofline r;
  r.flops = 2.0 * m * n * k;
  r.bytes = n * k * weight_bytes + m * k * 2.0 + m * n * 2.0;
  const double compute = r.flops / flops_rate;
  const double memory = r.bytes / bandwidth;
  r.compute_bound = compute >= memory;
  r.seconds = std::max(compute, memory);
  return r;
}

double allreduce_time(double bytes, int64_t ranks, double bandwidth, double latency) {
  if (ranks <= 1) return 0.0;
  const double n = static_cast<double>(ranks);
  return 2.0 * (n - 1.0) / n * bytes / bandwidth + 2.0 * std::ceil(std::log2(n)) * latency;
}

double allgather_time(double bytes, int64_t ranks, double bandwidth, double latency) {
  if (ranks <= 1) return 0.0;
  const double n = static_cast<double>(ranks);
  return (n - 1.0) / n * bytes / bandwidth + std::ceil(std::log2(n)) * latency;
}

double normal_quantile(double p) {
  DSV4_CHECK(p > 0.0 && p < 1.0) << "normal_quantile needs 0 < p < 1, got " << p;
  // Peter Acklam's algorithm: rational approximations in the central region and the two tails.
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,  -2.759285104469687e+02,
                             1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01, -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  const double low = 0.02425;
  if (p < low) {
    const double q = std::sqrt(-2.0 * std::log(p));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
           ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
  }
  if (p > 1.0 - low) return -normal_quantile(1.0 - p);
  const double q = p - 0.5;
  const double r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
         (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0);
}

double expected_max_load(double assignments, int64_t ranks, double skew) {
  DSV4_CHECK_ARG(skew >= 1.0) << "expert skew must be >= 1, got " << skew;
  if (ranks <= 1) return assignments;
  const double n = static_cast<double>(ranks);
  const double mean = assignments / n;
  const double sigma = std::sqrt(assignments * (1.0 / n) * (1.0 - 1.0 / n));
  const double z = normal_quantile((n - 0.375) / (n + 0.25));
  return std::min(assignments, skew * mean + sigma * z);
}

double all_to_all_time(double max_copies, double bytes_per_copy, int64_t ep, int64_t gpus_per_node,
                       const HardwareProfile& hw) {
  if (ep <= 1) return 0.0;
  const double n = static_cast<double>(ep);
  const double local = static_cast<double>(std::min(ep, std::max<int64_t>(gpus_per_node, 1)));
  const double bytes = max_copies * bytes_per_copy;
  const double intra = bytes * (local - 1.0) / n / hw.get("a2a_intra_bandwidth");
  const double inter = local < n ? bytes * (n - local) / n / hw.get("a2a_inter_bandwidth") : 0.0;
  return std::max(intra, inter) + hw.get("a2a_latency");
}

double cpu_linear_time(double m, double n, double k, double pass_rate, double token_flops) {
  if (m <= 0) return 0.0;
  return n * k * (std::ceil(m / 8.0) / pass_rate + 2.0 * m / token_flops);
}

const char* part_name(Part part) {
  switch (part) {
    case kDenseGemm: return "dense_gemm";
    case kAttention: return "attention";
    case kIndexer: return "compressor_indexer";
    case kExperts: return "moe_experts";
    case kDispatchCombine: return "dispatch_combine";
    case kTpCollectives: return "tp_collectives";
    case kSampling: return "sampling";
    case kOther: return "other";
    case kNumParts: break;
  }
  return "?";
}

// ---- the step model ----------------------------------------------------------------------------------
void StepResult::finish_serial() {
  compute = 0;
  communication = 0;
  for (int p = 0; p < kNumParts; ++p) {
    if (p == kDispatchCombine || p == kTpCollectives) {
      communication += seconds[p];
    } else {
      compute += seconds[p];
    }
    if (seconds[p] > seconds[bottleneck]) bottleneck = static_cast<Part>(p);
  }
  total = compute + communication;
}

namespace {

using sim_detail::Device;

// One step of one rank. `tokens`: tokens of its replica in the step; `sequences`: the replica's sequences;
// `ctx`: KV rows each query sees (average); `logit_tokens`: tokens that need logits.
StepResult step(const ModelConfig& m, const SimSetup& s, const HardwareProfile& hw, double tokens, double sequences,
                double ctx, double logit_tokens, bool decode) {
  const ParallelLayout& l = s.layout;
  const Device dev(hw, s.gpus_per_node);
  const double t = tokens;
  const double tp = static_cast<double>(l.tp), cp = static_cast<double>(l.cp);
  const double dmodel = static_cast<double>(m.hidden_size), hd = static_cast<double>(m.head_dim);
  const double heads = static_cast<double>(m.num_heads) / tp;
  const double groups = static_cast<double>(m.o_groups) / tp;
  const double ff = static_cast<double>(m.moe_intermediate_size);
  const double qr = static_cast<double>(m.q_lora_rank), orank = static_cast<double>(m.o_lora_rank);
  const double window = static_cast<double>(m.sliding_window);
  const SequenceState st = sequence_state(m);
  StepResult out;
  out.tokens = t;
  auto add = [&out](Part p, double sec) { out.seconds[p] += sec; };
  const bool intra_tp = l.tp <= s.gpus_per_node;
  const double tp_bw = hw.get(intra_tp ? "intra_bandwidth" : "inter_bandwidth");
  const double tp_lat = hw.get(intra_tp ? "intra_latency" : "inter_latency");
  using F = WeightFormat;

  for (int64_t layer = 0; layer < m.num_layers; ++layer) {
    const AttentionKind kind = m.attention_kind(layer);
    const double ratio = static_cast<double>(m.compress_ratio(layer));
    // Dense projections (FP8 weights): wq_a and wkv replicated, wq_b / wo_a / wo_b by heads and groups.
    add(kDenseGemm, dev.gemm(t, qr, dmodel, F::kFp8));
    add(kDenseGemm, dev.gemm(t, hd, dmodel, F::kFp8));
    add(kDenseGemm, dev.gemm(t, heads * hd, qr, F::kFp8));
    add(kDenseGemm, dev.gemm(t, groups * orank, static_cast<double>(m.num_heads) * hd / m.o_groups, F::kFp8));
    add(kDenseGemm, dev.gemm(t, dmodel, groups * orank, F::kFp8));
    // Shared expert split by FFN columns, router gate (bf16, replicated), HC mixing of both sub-layers (fp32).
    const double shared = static_cast<double>(m.num_shared_experts);
    if (shared > 0) {
      add(kDenseGemm, dev.gemm(t, 2 * shared * ff / tp, dmodel, F::kFp8));
      add(kDenseGemm, dev.gemm(t, dmodel, shared * ff / tp, F::kFp8));
    }
    add(kDenseGemm, dev.gemm(t, static_cast<double>(m.num_routed_experts), dmodel, F::kBf16));
    const double hc = static_cast<double>(m.hc_mult);
    add(kDenseGemm, 2 * dev.gemm(t, (2 + hc) * hc, hc * dmodel, F::kF32));

    // Attention rows per query: the raw window plus, by kind, the indexer's top-k or every HCA row.
    // Compressed rows are split over the CP ranks of a sequence.
    const double win_rows = std::min(ctx, window);
    double comp_rows = 0;
    if (kind == AttentionKind::kCompressed4) comp_rows = std::min(static_cast<double>(m.index_topk), ctx / ratio) / cp;
    if (kind == AttentionKind::kCompressed128) comp_rows = ctx / ratio / cp;
    const double rows = win_rows + comp_rows;
    const double attn_flops = t * heads * rows * 4.0 * hd;
    // Decode: each sequence reads its rows once (one KV head shared by all heads). Prefill: each 128-query
    // tile re-reads the rows it needs.
    const double reads = decode ? sequences : std::max(1.0, t / 128.0);
    const double attn_bytes = reads * rows * static_cast<double>(st.main_row_bytes) + t * heads * hd * 2 * 2;
    add(kAttention, std::max(attn_flops / dev.attention_flops, attn_bytes / dev.bandwidth));

    // Compressors (bf16 wkv + wgate) and the CSA lightning indexer (replicated on every TP rank).
    if (kind != AttentionKind::kSlidingWindow) {
      const double width = kind == AttentionKind::kCompressed4 ? 2 * hd : hd;
      add(kIndexer, dev.gemm(t, 2 * width, dmodel, F::kBf16));
    }
    if (kind == AttentionKind::kCompressed4) {
      const double ih = static_cast<double>(m.index_num_heads), id = static_cast<double>(m.index_head_dim);
      add(kIndexer, dev.gemm(t, ih * id, qr, F::kFp8));
      add(kIndexer, dev.gemm(t, ih, dmodel, F::kBf16));
      add(kIndexer, dev.gemm(t, 2 * 2 * id, dmodel, F::kBf16));
      const double idx_rows = ctx / ratio / cp;
      const double flops = t * ih * idx_rows * 2.0 * id;
      const double bytes =
          (decode ? sequences : std::max(1.0, t / 128.0)) * idx_rows * static_cast<double>(st.indexer_row_bytes) +
          t * idx_rows * 4.0 * 2.0;  // scores written and read by the top-k
      add(kIndexer, std::max(flops / dev.indexer_flops, bytes / dev.bandwidth));
    }

    // TP: all-reduce after wo_b and after the shared expert; all-gather of the combined MoE output (each TP
    // rank dispatches 1/tp of the replica's tokens). CP: merge of partial attention outputs.
    const double act = t * dmodel * dev.activation_bytes;
    add(kTpCollectives, 2 * allreduce_time(act, l.tp, tp_bw, tp_lat) + allgather_time(act, l.tp, tp_bw, tp_lat));
    if (l.cp > 1) {
      const bool intra_cp = l.tp * l.cp <= s.gpus_per_node;
      add(kTpCollectives,
          allgather_time(t * heads * (hd + 2) * 4.0, l.cp, hw.get(intra_cp ? "intra_bandwidth" : "inter_bandwidth"),
                         hw.get(intra_cp ? "intra_latency" : "inter_latency")));
    }
    // Norms, HC streams and elementwise work: per sub-layer the fp32 residual streams (hc_mult x D) are read
    // once by the pre-mix and read and written once by the post-mix: 3 passes, 2 sub-layers.
    add(kOther, 2 * 3 * t * hc * dmodel * 4.0 / dev.bandwidth);
  }

  // Routed experts: the busiest EP rank's token copies (routing noise + skew) and the weights of every local
  // expert hit at least once (FP4 + one E8M0 per 32).
  const double per_rank_tokens = t / (tp * cp);  // tokens each rank dispatches
  const double group_tokens = per_rank_tokens * static_cast<double>(l.ep);
  const double k = static_cast<double>(m.num_experts_per_token);
  const double experts = static_cast<double>(m.num_routed_experts);
  const double max_copies = expected_max_load(group_tokens * k, l.ep, s.expert_skew);
  out.max_copies_per_rank = max_copies;
  const double local_experts = experts / static_cast<double>(l.ep);
  const double p_hit = 1.0 - std::pow(1.0 - k / experts, group_tokens);
  const double layers = static_cast<double>(m.num_layers);
  add(kExperts, layers * dev.experts(local_experts * p_hit, max_copies, dmodel, ff));
  // Dispatch: GPU FP8 + fp32 scale per 128, CPU the f32 rows; combine: GPU bf16, CPU f32.
  const double dispatch_bytes = dev.cpu ? dmodel * 4.0 : dmodel + dmodel / 128.0 * 4.0;
  const double combine_bytes = dmodel * dev.activation_bytes;
  add(kDispatchCombine, layers * (all_to_all_time(max_copies, dispatch_bytes, l.ep, s.gpus_per_node, hw) +
                                  all_to_all_time(max_copies, combine_bytes, l.ep, s.gpus_per_node, hw)));

  // Once per step: vocabulary-sharded embedding (all-reduce), LM head for the tokens that need logits,
  // sampling over this rank's shard (three passes over fp32 logits) and the gather of per-shard candidates.
  const double vshard = std::ceil(static_cast<double>(m.vocab_size) / tp);
  add(kTpCollectives, allreduce_time(t * dmodel * dev.activation_bytes, l.tp, tp_bw, tp_lat));
  add(kDenseGemm, dev.gemm(logit_tokens, vshard, dmodel, F::kBf16));
  add(kSampling,
      3.0 * logit_tokens * vshard * 4.0 / dev.bandwidth + allgather_time(logit_tokens * 64 * 8.0, l.tp, tp_bw, tp_lat));
  add(kOther, hw.get("step_overhead"));

  out.finish_serial();  // simulate() then applies the overlap
  return out;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

}  // namespace

SimResult simulate(const ModelConfig& m, const SimSetup& s, const HardwareProfile& hw, const Workload& w) {
  const ParallelLayout& l = s.layout;
  check_layout(m, l);
  DSV4_CHECK_ARG(l.world() == s.nodes * s.gpus_per_node)
      << "layout " << to_string(l) << " has " << l.world() << " ranks but nodes x gpus_per_node = " << s.nodes << " x "
      << s.gpus_per_node;
  DSV4_CHECK_ARG(w.batch >= l.dp) << "--batch " << w.batch << " leaves some of the dp=" << l.dp << " replicas idle";
  DSV4_CHECK_ARG(w.context >= 1 && w.prompt >= 1 && w.output >= 1) << "context, prompt and output must be >= 1";
  DSV4_CHECK_ARG(s.prefill_chunk >= 1) << "--prefill-chunk must be >= 1";
  SimResult res;
  const double seqs = static_cast<double>(w.batch) / static_cast<double>(l.dp);
  const double gpus = static_cast<double>(l.world());
  const double prefill_tokens = std::min(seqs * static_cast<double>(w.prompt), static_cast<double>(s.prefill_chunk));
  const double prefill_seqs = std::max(1.0, prefill_tokens / static_cast<double>(w.prompt));
  // Two-micro-batch overlap needs at least two tokens to split; a single decode stream runs serially. The CPU
  // engine has no overlap: a rank computes, then exchanges.
  const bool can_overlap = s.overlap && hw.device != "cpu";
  const double overhead = hw.get("step_overhead");
  res.decode = step(m, s, hw, seqs, seqs, static_cast<double>(w.context), seqs, true);
  if (can_overlap && seqs >= 2.0) {
    sim_detail::apply_overlap(
        res.decode, step(m, s, hw, seqs / 2, seqs / 2, static_cast<double>(w.context), seqs / 2, true), overhead);
  }
  // Causal prefill from an empty cache: a query at position p sees p + 1 rows, p / 2 on average.
  const double pctx = static_cast<double>(w.prompt) / 2.0;
  res.prefill = step(m, s, hw, prefill_tokens, prefill_seqs, pctx, prefill_seqs, false);
  if (can_overlap && prefill_tokens >= 2.0) {
    sim_detail::apply_overlap(
        res.prefill, step(m, s, hw, prefill_tokens / 2, std::max(1.0, prefill_seqs / 2), pctx, prefill_seqs / 2, false),
        overhead);
  }
  res.decode_tokens_per_s_per_gpu = seqs * static_cast<double>(l.dp) / (res.decode.total * gpus);
  res.prefill_tokens_per_s_per_gpu = prefill_tokens * static_cast<double>(l.dp) / (res.prefill.total * gpus);
  const double prefill_steps = std::ceil(seqs * static_cast<double>(w.prompt) / prefill_tokens);
  res.request_seconds = prefill_steps * res.prefill.total + static_cast<double>(w.output) * res.decode.total;

  res.memory.weights = static_cast<double>(weights_per_rank(m, l).total());
  res.memory.state = seqs * static_cast<double>(sequence_state(m).at(w.context, l.cp));
  res.memory.workspace = static_cast<double>(
      workspace_bytes(m, l, static_cast<int64_t>(std::max(seqs, prefill_tokens)), w.context, 2.0 * s.expert_skew));
  // CPU ranks of one host share its memory.
  res.memory.capacity =
      hw.get("memory_bytes") / (hw.device == "cpu" ? static_cast<double>(std::max<int64_t>(1, s.gpus_per_node)) : 1.0);
  res.fits = res.memory.total() <= res.memory.capacity;
  return res;
}

nlohmann::json result_to_json(const SimResult& r) {
  auto step_json = [](const StepResult& s) {
    nlohmann::json j;
    for (int p = 0; p < kNumParts; ++p) j["parts"][part_name(static_cast<Part>(p))] = s.seconds[p];
    j["compute"] = s.compute;
    j["communication"] = s.communication;
    j["total"] = s.total;
    j["overlapped"] = s.overlapped;
    if (s.micro_compute > 0)
      j["micro_batch"] = {{"compute", s.micro_compute}, {"communication", s.micro_communication}};
    j["tokens_per_replica"] = s.tokens;
    j["max_copies_per_rank"] = s.max_copies_per_rank;
    j["bottleneck"] = part_name(s.bottleneck);
    return j;
  };
  nlohmann::json j;
  j["decode"] = step_json(r.decode);
  j["prefill"] = step_json(r.prefill);
  j["decode_tokens_per_s_per_gpu"] = r.decode_tokens_per_s_per_gpu;
  j["prefill_tokens_per_s_per_gpu"] = r.prefill_tokens_per_s_per_gpu;
  j["request_seconds"] = r.request_seconds;
  j["memory"] = {{"weights", r.memory.weights},
                 {"state", r.memory.state},
                 {"workspace", r.memory.workspace},
                 {"total", r.memory.total()},
                 {"capacity", r.memory.capacity}};
  j["fits"] = r.fits;
  return j;
}

std::string format_result(const SimSetup& s, const HardwareProfile& hw, const Workload& w, const SimResult& r) {
  std::ostringstream o;
  o << "hardware " << hw.name << "; " << s.nodes << " node(s) x " << s.gpus_per_node << " = " << s.layout.world()
    << " devices; layout " << to_string(s.layout) << "; expert skew " << s.expert_skew << "; overlap "
    << (hw.device == "cpu" ? "off (CPU ranks compute, then exchange)"
        : s.overlap        ? "on"
                           : "off")
    << "\n";
  o << "workload batch " << w.batch << " (" << w.batch / s.layout.dp << " per replica), context " << w.context
    << ", prompt " << w.prompt << ", output " << w.output << "\n\n";
  o << "part                    decode ms   prefill ms\n";
  for (int p = 0; p < kNumParts; ++p) {
    char line[120];
    std::snprintf(line, sizeof(line), "%-22s %10.3f %12.3f\n", part_name(static_cast<Part>(p)),
                  r.decode.seconds[p] * 1e3, r.prefill.seconds[p] * 1e3);
    o << line;
  }
  char line[200];
  std::snprintf(line, sizeof(line), "%-22s %10.3f %12.3f\n%-22s %10.3f %12.3f\n%-22s %10.3f %12.3f\n", "compute",
                r.decode.compute * 1e3, r.prefill.compute * 1e3, "communication", r.decode.communication * 1e3,
                r.prefill.communication * 1e3, "step", r.decode.total * 1e3, r.prefill.total * 1e3);
  o << line;
  o << "bottleneck: decode " << part_name(r.decode.bottleneck) << ", prefill " << part_name(r.prefill.bottleneck)
    << "\n";
  o << "prefill tokens per replica step " << r.prefill.tokens << "; busiest EP rank gets "
    << fmt("%.1f", r.decode.max_copies_per_rank) << " copies per layer in decode\n\n";
  o << "decode  " << fmt("%.1f", r.decode_tokens_per_s_per_gpu) << " tok/s per GPU ("
    << fmt("%.0f", r.decode_tokens_per_s_per_gpu * static_cast<double>(s.gpus_per_node)) << " per node), "
    << fmt("%.1f", 1.0 / r.decode.total) << " tok/s per sequence\n";
  o << "prefill " << fmt("%.1f", r.prefill_tokens_per_s_per_gpu) << " tok/s per GPU ("
    << fmt("%.0f", r.prefill_tokens_per_s_per_gpu * static_cast<double>(s.gpus_per_node)) << " per node)\n";
  o << "request (prompt " << w.prompt << " + output " << w.output << "): " << fmt("%.2f", r.request_seconds) << " s\n";
  o << "memory per GPU: weights " << format_bytes(r.memory.weights) << " + state " << format_bytes(r.memory.state)
    << " + workspace " << format_bytes(r.memory.workspace) << " = " << format_bytes(r.memory.total()) << " of "
    << format_bytes(r.memory.capacity) << (r.fits ? " (fits)" : " (DOES NOT FIT)") << "\n";
  return o.str();
}

std::vector<SweepRow> sweep(const ModelConfig& m, const SimSetup& base, const HardwareProfile& hw,
                            const Workload& base_workload, int64_t min_gpus, int64_t max_gpus) {
  DSV4_CHECK_ARG(min_gpus >= 1 && max_gpus >= min_gpus) << "--sweep needs 1 <= MIN <= MAX";
  const int64_t per_replica = std::max<int64_t>(1, base_workload.batch / base.layout.dp);
  std::vector<SweepRow> rows;
  for (int64_t g = min_gpus; g <= max_gpus; g *= 2) {
    SweepRow row;
    row.gpus = g;
    row.setup = base;
    row.setup.gpus_per_node = std::min(base.gpus_per_node, g);
    row.setup.nodes = g / row.setup.gpus_per_node;
    ParallelLayout& l = row.setup.layout;
    l.dp = g / (l.tp * l.cp);
    l.ep = 1;
    for (int64_t e = g; e >= 1; --e) {
      if (g % e == 0 && m.num_routed_experts % e == 0) {
        l.ep = e;
        break;
      }
    }
    row.workload = base_workload;
    row.workload.batch = per_replica * std::max<int64_t>(l.dp, 1);
    if (g % (l.tp * l.cp) != 0 || g % row.setup.gpus_per_node != 0) {
      row.refused = "gpus not a multiple of tp*cp and gpus_per_node";
    } else {
      const auto problems = layout_problems(m, l);
      if (!problems.empty()) {
        row.refused = problems.front();
      } else {
        row.result = simulate(m, row.setup, hw, row.workload);
      }
    }
    rows.push_back(row);
  }
  return rows;
}

std::string sweep_csv(const std::vector<SweepRow>& rows) {
  std::ostringstream o;
  o << "gpus,nodes,dp,tp,ep,cp,batch,decode_step_ms,decode_tok_s_per_gpu,prefill_tok_s_per_gpu,mem_per_gpu_gib,"
       "fits,decode_bottleneck,refused\n";
  for (const SweepRow& r : rows) {
    const ParallelLayout& l = r.setup.layout;
    o << r.gpus << "," << r.setup.nodes << "," << l.dp << "," << l.tp << "," << l.ep << "," << l.cp << ","
      << r.workload.batch << ",";
    if (r.refused.empty()) {
      o << fmt("%.4f", r.result.decode.total * 1e3) << "," << fmt("%.2f", r.result.decode_tokens_per_s_per_gpu) << ","
        << fmt("%.2f", r.result.prefill_tokens_per_s_per_gpu) << ","
        << fmt("%.3f", r.result.memory.total() / (1024.0 * 1024 * 1024)) << "," << (r.result.fits ? 1 : 0) << ","
        << part_name(r.result.decode.bottleneck) << ",\n";
    } else {
      o << ",,,,,,\"" << r.refused << "\"\n";
    }
  }
  return o.str();
}

std::string format_sweep(const std::vector<SweepRow>& rows) {
  std::ostringstream o;
  o << " gpus nodes   dp  tp   ep  batch  decode ms  decode tok/s/GPU  prefill tok/s/GPU  mem GiB  fits  bottleneck\n";
  for (const SweepRow& r : rows) {
    const ParallelLayout& l = r.setup.layout;
    char line[256];
    if (!r.refused.empty()) {
      std::snprintf(line, sizeof(line), "%5lld  refused: %s\n", static_cast<long long>(r.gpus), r.refused.c_str());
    } else {
      std::snprintf(line, sizeof(line), "%5lld %5lld %4lld %3lld %4lld %6lld %10.3f %17.1f %18.1f %8.1f %5s  %s\n",
                    static_cast<long long>(r.gpus), static_cast<long long>(r.setup.nodes), static_cast<long long>(l.dp),
                    static_cast<long long>(l.tp), static_cast<long long>(l.ep),
                    static_cast<long long>(r.workload.batch), r.result.decode.total * 1e3,
                    r.result.decode_tokens_per_s_per_gpu, r.result.prefill_tokens_per_s_per_gpu,
                    r.result.memory.total() / (1024.0 * 1024 * 1024), r.result.fits ? "yes" : "NO",
                    part_name(r.result.decode.bottleneck));
    }
    o << line;
  }
  return o.str();
}

}  // namespace dsv4::launch
