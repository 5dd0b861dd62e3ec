// One transformer block on the mHC residual state (spec §3.2, §3.3, §3.8): for each sublayer, mix the
// streams into its input (pre), run it, and spread its output back over the streams (post, comb^T).
// The mixers are replicated: every TP rank computes them on the whole residual state.
#include <vector>

#include "runtime/model/layers.h"

namespace dsv4::model_detail {
namespace {

enum class Sublayer { kAttention, kMoe };

void sublayer(Ctx& ctx, const LayerWeights& w, Sublayer which, int64_t slot, int64_t ratio, bool hash,
              const Batch& b, float* X) {
  const ModelConfig& cfg = ctx.cfg;
  const int64_t n = cfg.hc_mult, D = cfg.hidden_size, T = b.rows, outputs = (2 + n) * n;
  const HcWeights& hc = which == Sublayer::kAttention ? w.hc_attn : w.hc_ffn;
  std::vector<float> mix(T * outputs), u(T * D), post(T * n), comb(T * n * n);
  ctx.be.hc_mix({X, T, n * D, hc.fn.data(), outputs, static_cast<float>(cfg.rms_norm_eps), mix.data()});
  kernels::HcPreParams pre;
  pre.mix = mix.data();
  pre.x = X;
  pre.tokens = T;
  pre.n = n;
  pre.dim = D;
  pre.base = hc.base.data();
  pre.scale = hc.scale.data();
  pre.sinkhorn_iters = cfg.hc_sinkhorn_iters;
  pre.eps = static_cast<float>(cfg.hc_eps);
  pre.u = u.data();
  pre.post = post.data();
  pre.comb = comb.data();
  ctx.be.hc_pre(pre);

  const NormWeight& norm = which == Sublayer::kAttention ? w.attn_norm : w.ffn_norm;
  rms_norm(ctx, &norm, u.data(), u.data(), T, D, D, D);
  std::vector<float> y(T * D);
  if (which == Sublayer::kAttention) {
    attention_forward(ctx, w.attn, slot, ratio, b, u.data(), y.data());
  } else {
    moe_forward(ctx, w.moe, hash, b, u.data(), y.data());
  }
  std::vector<float> out(T * n * D);
  ctx.be.hc_post({X, y.data(), post.data(), comb.data(), T, n, D, out.data()});
  std::copy(out.begin(), out.end(), X);
}

}  // namespace

void block_forward(Ctx& ctx, const LayerWeights& w, int64_t slot, int64_t ratio, bool hash, const Batch& b,
                   float* X) {
  if (b.rows == 0) {
    // An idle rank: no attention work (its TP peers are idle too), but its EP peers expect it in the
    // MoE exchange. (A CP rank of a non-empty split batch always holds rows: cp_local_batch.)
    moe_forward(ctx, w.moe, hash, b, nullptr, nullptr);
    return;
  }
  sublayer(ctx, w, Sublayer::kAttention, slot, ratio, hash, b, X);
  sublayer(ctx, w, Sublayer::kMoe, slot, ratio, hash, b, X);
}

void head_forward(Ctx& ctx, const HcWeights& hc, const NormWeight& norm, const kernels::WeightRef& head,
                  const float* X, int64_t rows, float* logits) {
  const ModelConfig& cfg = ctx.cfg;
  const int64_t n = cfg.hc_mult, D = cfg.hidden_size;
  std::vector<float> mix(rows * n), h(rows * D);
  ctx.be.hc_mix({X, rows, n * D, hc.fn.data(), n, static_cast<float>(cfg.rms_norm_eps), mix.data()});
  ctx.be.hc_head({mix.data(), X, rows, n, D, hc.base.data(), hc.scale.data()[0], static_cast<float>(cfg.hc_eps),
                  h.data()});
  rms_norm(ctx, &norm, h.data(), h.data(), rows, D, D, D);
  // The reference computes the head in fp32 from bf16 weights: never activation-quantised.
  Ctx plain = ctx.with(Numerics::kPlain);
  linear(plain, head, h.data(), rows, D, logits, head.out);
}

}  // namespace dsv4::model_detail
