// MoE sublayer (spec §3.7): sqrt-softplus router, bias for selection only (or tid2eid on hash layers),
// renormalised and scaled weights, routed experts and the shared expert with the asymmetric SwiGLU clamp,
// the routing weight applied to the intermediate vector before W2.
//
// On many ranks (model_parallel.h): each TP rank routes its contiguous block of the batch's rows and sends
// one row per (token, k) slot, [x | routing weight], through the MoeDispatcher to the owner of the chosen
// expert; owners run their held experts on grouped rows and combine brings the results back, which are
// added in top-k order (also in a single process, so every layout sums a token's experts identically).
// The shared expert holds this rank's intermediate columns: its w2 output is a partial sum, reduced over
// the TP group together with the routed rows (each rank contributes its own block, zeros elsewhere).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/model/layers.h"

namespace dsv4::model_detail {
namespace {

// The hidden SwiGLU vector of `rows` rows of x (row pitch x_stride): silu(min(W1 x, lim)) * clamp(W3 x),
// times weights[r * w_stride] when weights is not null. h is [rows, F] with F = W1's rows.
void swiglu(Ctx& ctx, const ExpertWeights& e, const float* x, int64_t x_stride, int64_t rows, const float* weights,
            int64_t w_stride, std::vector<float>& h) {
  const int64_t F = e.w1.out;
  const float lim = static_cast<float>(ctx.cfg.swiglu_limit);
  std::vector<float> u(rows * F);
  h.resize(rows * F);
  linear(ctx, e.w1, x, rows, x_stride, h.data(), F);
  linear(ctx, e.w3, x, rows, x_stride, u.data(), F);
  for (int64_t r = 0; r < rows; ++r) {
    const float wr = weights ? weights[r * w_stride] : 1.0f;
    for (int64_t i = 0; i < F; ++i) {
      float gate = h[r * F + i], up = u[r * F + i];
      if (lim > 0.0f) {
        gate = std::min(gate, lim);
        up = std::clamp(up, -lim, lim);
      }
      h[r * F + i] = gate / (1.0f + std::exp(-gate)) * up * wr;
    }
  }
}

// Router of rows [0, T) of x: the k chosen experts and their weights per row.
void route(Ctx& ctx, const MoeWeights& w, bool hash, const int32_t* tokens, const float* x, int64_t T, int32_t* chosen,
           float* weight) {
  const ModelConfig& cfg = ctx.cfg;
  const int64_t D = cfg.hidden_size, E = cfg.num_routed_experts, k = cfg.num_experts_per_token;
  std::vector<float> logits(T * E);
  linear(ctx, w.gate, x, T, D, logits.data(), E);
  std::vector<float> sigma(E), biased(E);
  std::vector<int32_t> order(E);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t e = 0; e < E; ++e) {
      const float l = logits[t * E + e];
      const float softplus = l > 20.0f ? l : std::log1p(std::exp(l));
      sigma[e] = std::sqrt(softplus);
    }
    int32_t* idx = chosen + t * k;
    if (hash) {
      const int64_t* row = w.tid2eid + static_cast<int64_t>(tokens[t]) * k;
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
}

// Routed experts of rows [0, T) of x (this rank's block): routed[t] = sum over j in top-k order of
// expert(chosen[t, j]) applied with weight[t, j]. Collective over the EP group even for T = 0.
void routed_experts(Ctx& ctx, const MoeWeights& w, const int32_t* chosen, const float* weight, const float* x,
                    int64_t T, float* routed) {
  const int64_t D = ctx.cfg.hidden_size, k = ctx.cfg.num_experts_per_token, W = D + 1;
  // One dispatched row per slot carries its routing weight in column D, so that the owner applies it
  // before W2 and combine only moves results (weight 1: exact).
  std::vector<float> send(T * k * W), ones(T * k, 1.0f), back(T * k * W);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      float* dst = send.data() + (t * k + j) * W;
      std::copy_n(x + t * D, D, dst);
      dst[D] = weight[t * k + j];
    }
  }
  parallel::MoeDispatchInput in;
  in.num_tokens = T * k;
  in.top_k = 1;
  in.expert_ids = chosen;
  in.x = send.data();
  const parallel::MoeDispatchResult& got = ctx.dispatcher.dispatch(in);
  const auto* rows = reinterpret_cast<const float*>(got.rows);
  std::vector<float> out(got.num_rows * W), h;
  for (size_t i = 0; i < got.num_tokens_per_expert.size(); ++i) {
    const int64_t n = got.num_tokens_per_expert[i], first = got.expert_offsets[i];
    if (n == 0) continue;
    const ExpertWeights& e = w.experts[i];
    swiglu(ctx, e, rows + first * W, W, n, rows + first * W + D, W, h);
    linear(ctx, e.w2, h.data(), n, e.w1.out, out.data() + first * W, W);
  }
  ctx.dispatcher.combine(out.data(), ones.data(), back.data());
  for (int64_t t = 0; t < T; ++t) {
    float* dst = routed + t * D;
    std::copy_n(back.data() + t * k * W, D, dst);
    for (int64_t j = 1; j < k; ++j) {
      const float* src = back.data() + (t * k + j) * W;
      for (int64_t c = 0; c < D; ++c) dst[c] += src[c];
    }
  }
}

}  // namespace

void moe_forward(Ctx& ctx, const MoeWeights& w, bool hash, const Batch& b, const float* x, float* y) {
  const ModelConfig& cfg = ctx.cfg;
  const int64_t D = cfg.hidden_size, k = cfg.num_experts_per_token, T = b.rows;
  const int tp = ctx.par.tp->size(), tr = ctx.par.tp->rank();

  // Routed experts of this TP rank's block of rows; zeros in the other rows.
  const int64_t r0 = T * tr / tp, r1 = T * (tr + 1) / tp, nb = r1 - r0;
  std::vector<int32_t> chosen(nb * k);
  std::vector<float> weight(nb * k);
  route(ctx, w, hash, b.tokens.data() + r0, x + r0 * D, nb, chosen.data(), weight.data());
  std::vector<float> routed(T * D, 0.0f);
  routed_experts(ctx, w, chosen.data(), weight.data(), x + r0 * D, nb, routed.data() + r0 * D);
  if (T == 0) return;

  // Shared expert over this rank's intermediate columns.
  std::vector<float> h;
  swiglu(ctx, w.shared, x, D, T, nullptr, 0, h);
  const int64_t F = w.shared.w1.out;
  if (!ctx.deterministic()) {
    linear(ctx, w.shared.w2, h.data(), T, F, y, D);
    for (int64_t i = 0; i < T * D; ++i) y[i] += routed[i];
    tp_sum(ctx, y, T * D);
    return;
  }
  // Deterministic: w2 in fixed 128-column chunks whose partials are added in chunk order on every rank,
  // then the routed rows (each from the rank that computed them: no arithmetic), then shared + routed.
  const int64_t chunks = (F + kSharedChunk - 1) / kSharedChunk, per_rank = (chunks + 1) * T * D;
  std::vector<float> part(per_rank), all(per_rank * tp);
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t c0 = c * kSharedChunk, width = std::min(kSharedChunk, F - c0);
    linear(ctx, kernels::column_slice(w.shared.w2, c0, width), h.data() + c0, T, F, part.data() + c * T * D, D);
  }
  std::copy(routed.begin(), routed.end(), part.begin() + chunks * T * D);
  tp_gather(ctx, part.data(), all.data(), per_rank);
  bool first = true;
  for (int q = 0; q < tp; ++q) {
    for (int64_t c = 0; c < chunks; ++c) {
      const float* p = all.data() + q * per_rank + c * T * D;
      if (first) {
        std::copy_n(p, T * D, y);
        first = false;
      } else {
        for (int64_t i = 0; i < T * D; ++i) y[i] += p[i];
      }
    }
  }
  for (int q = 0; q < tp; ++q) {
    const int64_t q0 = T * q / tp, q1 = T * (q + 1) / tp;
    const float* src = all.data() + q * per_rank + chunks * T * D;
    for (int64_t i = q0 * D; i < q1 * D; ++i) y[i] += src[i];
  }
}

}  // namespace dsv4::model_detail
