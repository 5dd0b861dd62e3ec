// MoE sublayer (spec §3.7): sqrt-softplus router, bias for selection only (or tid2eid on hash layers),
// renormalised and scaled weights, routed experts and the shared expert with the asymmetric SwiGLU clamp,
// the routing weight applied to the intermediate vector before W2.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/model/layers.h"

namespace dsv4::model_detail {
namespace {

// y_rows (+)= W2 [silu(min(W1 x, lim)) * clamp(W3 x, -lim, lim) * weight] for the given rows of x.
void run_expert(Ctx& ctx, const ExpertWeights& e, const float* x, int64_t rows, const float* weights, float* out) {
  const int64_t D = ctx.cfg.hidden_size, F = ctx.cfg.moe_intermediate_size;
  const float lim = static_cast<float>(ctx.cfg.swiglu_limit);
  std::vector<float> g(rows * F), u(rows * F);
  linear(ctx, e.w1, x, rows, D, g.data(), F);
  linear(ctx, e.w3, x, rows, D, u.data(), F);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < F; ++i) {
      float gate = g[r * F + i], up = u[r * F + i];
      if (lim > 0.0f) {
        gate = std::min(gate, lim);
        up = std::clamp(up, -lim, lim);
      }
      g[r * F + i] = gate / (1.0f + std::exp(-gate)) * up * weights[r];
    }
  }
  linear(ctx, e.w2, g.data(), rows, F, out, D);
}

}  // namespace

void moe_forward(Ctx& ctx, const MoeWeights& w, bool hash, const Batch& b, const float* x, float* y) {
  const ModelConfig& cfg = ctx.cfg;
  const int64_t D = cfg.hidden_size, E = cfg.num_routed_experts, k = cfg.num_experts_per_token, T = b.rows;
  std::vector<float> logits(T * E);
  linear(ctx, w.gate, x, T, D, logits.data(), E);

  std::vector<int32_t> chosen(T * k);
  std::vector<float> weight(T * k);
  std::vector<float> sigma(E), biased(E);
  std::vector<int32_t> order(E);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t e = 0; e < E; ++e) {
      const float l = logits[t * E + e];
      const float softplus = l > 20.0f ? l : std::log1p(std::exp(l));
      sigma[e] = std::sqrt(softplus);
    }
    int32_t* idx = chosen.data() + t * k;
    if (hash) {
      const int64_t* row = w.tid2eid + static_cast<int64_t>(b.tokens[t]) * k;
      for (int64_t j = 0; j < k; ++j) idx[j] = static_cast<int32_t>(row[j]);
    } else {
      const float* bias = w.bias.data();
      for (int64_t e = 0; e < E; ++e) biased[e] = sigma[e] + bias[e];
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t p, int32_t q) {
        return biased[p] > biased[q] || (biased[p] == biased[q] && p < q);
      });
      std::copy_n(order.begin(), k, idx);
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < k; ++j) sum += sigma[idx[j]];
    const float norm = cfg.norm_topk_prob ? 1.0f / sum : 1.0f;
    for (int64_t j = 0; j < k; ++j) {
      weight[t * k + j] = sigma[idx[j]] * norm * static_cast<float>(cfg.routed_scaling_factor);
    }
  }

  // Shared expert first, then routed experts in id order: each token's sum has a fixed order whatever
  // other tokens share the batch.
  std::vector<float> ones(T, 1.0f);
  run_expert(ctx, w.shared, x, T, ones.data(), y);
  std::vector<std::vector<std::pair<int64_t, float>>> by_expert(E);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < k; ++j) by_expert[chosen[t * k + j]].push_back({t, weight[t * k + j]});
  }
  std::vector<float> xs, ws, out;
  for (int64_t e = 0; e < E; ++e) {
    const auto& list = by_expert[e];
    if (list.empty()) continue;
    const int64_t n = static_cast<int64_t>(list.size());
    xs.resize(n * D);
    ws.resize(n);
    out.resize(n * D);
    for (int64_t i = 0; i < n; ++i) {
      std::copy_n(x + list[i].first * D, D, xs.data() + i * D);
      ws[i] = list[i].second;
    }
    run_expert(ctx, w.experts[e], xs.data(), n, ws.data(), out.data());
    for (int64_t i = 0; i < n; ++i) {
      float* dst = y + list[i].first * D;
      const float* src = out.data() + i * D;
      for (int64_t c = 0; c < D; ++c) dst[c] += src[c];
    }
  }
}

}  // namespace dsv4::model_detail
