// Shared helpers of the forward pass: emulated linears, norms, RoPE frequency tables, TP collectives.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/model/layers.h"

namespace dsv4::model_detail {

void tp_sum(Ctx& ctx, float* buf, int64_t count) {
  parallel::Communicator& tp = *ctx.par.tp;
  if (tp.size() == 1 || count == 0) return;
  tp.all_reduce(buf, buf, static_cast<size_t>(count), DType::kF32, parallel::ReduceOp::kSum, parallel::kDefaultStream);
}

void tp_gather(Ctx& ctx, const float* send, float* recv, int64_t count) {
  parallel::Communicator& tp = *ctx.par.tp;
  if (tp.size() == 1) {
    if (count > 0) std::memcpy(recv, send, sizeof(float) * static_cast<size_t>(count));
    return;
  }
  if (count == 0) return;
  tp.all_gather(send, recv, static_cast<size_t>(count), DType::kF32, parallel::kDefaultStream);
}

void linear(Ctx& ctx, const kernels::WeightRef& w, const float* x, int64_t m, int64_t x_stride, float* y,
            int64_t y_stride, int64_t row0, int64_t rows, bool accumulate) {
  if (m == 0) return;
  kernels::LinearParams p;
  p.w = w;
  p.m = m;
  p.row0 = row0;
  p.rows = rows < 0 ? w.out : rows;
  p.y = y;
  p.y_stride = y_stride;
  p.accumulate = accumulate;
  std::vector<float> quantised;
  if (ctx.reference() && (w.dtype == DType::kF8E4M3 || w.dtype == DType::kFP4E2M1)) {
    // The reference quantises GEMM inputs to e4m3 per 128 along K with a power-of-two scale.
    quantised.resize(static_cast<size_t>(m * w.in));
    for (int64_t r = 0; r < m; ++r) std::copy_n(x + r * x_stride, w.in, quantised.data() + r * w.in);
    ctx.be.fp8_round_trip({quantised.data(), m, w.in, w.in, 128});
    p.x = quantised.data();
    p.x_stride = w.in;
  } else {
    p.x = x;
    p.x_stride = x_stride;
  }
  ctx.be.linear(p);
}

void rms_norm(Ctx& ctx, const NormWeight* w, const float* x, float* y, int64_t rows, int64_t dim,
              int64_t x_stride, int64_t y_stride) {
  kernels::RmsNormParams p;
  p.x = x;
  p.y = y;
  p.rows = rows;
  p.dim = dim;
  p.x_stride = x_stride;
  p.y_stride = y_stride;
  if (w != nullptr) {
    p.weight = w->data;
    p.weight_dtype = w->dtype;
  }
  p.eps = static_cast<float>(ctx.cfg.rms_norm_eps);
  ctx.be.rms_norm(p);
}

std::vector<float> rope_inv_freq(const ModelConfig& cfg, int64_t ratio) {
  const int64_t r = cfg.rope_dim, pairs = r / 2;
  const double base = ratio == 0 ? cfg.rope_theta : cfg.compress_rope_theta;
  std::vector<float> inv(pairs);
  for (int64_t i = 0; i < pairs; ++i) inv[i] = static_cast<float>(std::pow(base, -2.0 * i / r));
  const YarnScaling& y = cfg.yarn;
  if (ratio == 0 || !y.enabled || y.factor <= 1.0 || y.original_max_position <= 0) return inv;
  // YaRN without the magnitude factor (spec §1.2): pairs below `lo` keep their frequency, pairs above
  // `hi` are divided by the factor, the ones between are blended linearly.
  auto corr = [&](double beta) {
    return r * std::log(static_cast<double>(y.original_max_position) / (2.0 * std::numbers::pi * beta)) /
           (2.0 * std::log(base));
  };
  double lo = std::max(0.0, std::floor(corr(y.beta_fast)));
  double hi = std::min(static_cast<double>(r - 1), std::ceil(corr(y.beta_slow)));
  if (hi == lo) hi += 0.001;
  for (int64_t i = 0; i < pairs; ++i) {
    const double ramp = std::clamp((static_cast<double>(i) - lo) / (hi - lo), 0.0, 1.0);
    const double f = std::pow(base, -2.0 * i / r);
    inv[i] = static_cast<float>(f * (1.0 - ramp) + f / y.factor * ramp);
  }
  return inv;
}

}  // namespace dsv4::model_detail
