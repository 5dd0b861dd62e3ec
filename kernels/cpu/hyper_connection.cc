// mHC kernels: mixing logits, Sinkhorn split into pre / post / comb, the post mix, and the HC head.
#include <cmath>
#include <vector>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/ops/hyper_connection.h"
#include "runtime/core/error.h"

namespace dsv4::kernels::cpu {
namespace {
float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
}  // namespace

void hc_mix(const HcMixParams& p) {
  parallel_for(p.tokens, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const float* x = p.x + t * p.width;
      double ss = 0.0;
      for (int64_t i = 0; i < p.width; ++i) ss += static_cast<double>(x[i]) * x[i];
      const float rho = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(p.width) + p.norm_eps));
      for (int64_t o = 0; o < p.outputs; ++o) p.mix[t * p.outputs + o] = rho * dot(p.fn + o * p.width, x, p.width);
    }
  });
}

void sinkhorn(float* c, int64_t n, int64_t iters, float eps) {
  for (int64_t j = 0; j < n; ++j) {  // softmax over k of row j, then + eps
    float* row = c + j * n;
    float mx = row[0];
    for (int64_t k = 1; k < n; ++k) mx = std::max(mx, row[k]);
    float s = 0.0f;
    for (int64_t k = 0; k < n; ++k) s += (row[k] = std::exp(row[k] - mx));
    for (int64_t k = 0; k < n; ++k) row[k] = row[k] / s + eps;
  }
  auto normalise_columns = [&] {
    for (int64_t k = 0; k < n; ++k) {
      float s = 0.0f;
      for (int64_t j = 0; j < n; ++j) s += c[j * n + k];
      for (int64_t j = 0; j < n; ++j) c[j * n + k] /= (s + eps);
    }
  };
  normalise_columns();
  for (int64_t it = 1; it < iters; ++it) {
    for (int64_t j = 0; j < n; ++j) {
      float s = 0.0f;
      for (int64_t k = 0; k < n; ++k) s += c[j * n + k];
      for (int64_t k = 0; k < n; ++k) c[j * n + k] /= (s + eps);
    }
    normalise_columns();
  }
}

void hc_pre(const HcPreParams& p) {
  const int64_t n = p.n, width = (2 + n) * n;
  parallel_for(p.tokens, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const float* m = p.mix + t * width;
      float* post = p.post + t * n;
      float* comb = p.comb + t * n * n;
      float pre[16];
      DSV4_CHECK(n <= 16) << "hc_pre: hc_mult " << n << " > 16";
      for (int64_t j = 0; j < n; ++j) {
        pre[j] = sigmoid(m[j] * p.scale[0] + p.base[j]) + p.eps;
        post[j] = 2.0f * sigmoid(m[n + j] * p.scale[1] + p.base[n + j]);
      }
      for (int64_t i = 0; i < n * n; ++i) comb[i] = m[2 * n + i] * p.scale[2] + p.base[2 * n + i];
      sinkhorn(comb, n, p.sinkhorn_iters, p.eps);
      float* u = p.u + t * p.dim;
      const float* x = p.x + t * n * p.dim;
      for (int64_t c = 0; c < p.dim; ++c) u[c] = 0.0f;
      for (int64_t j = 0; j < n; ++j) axpy(pre[j], x + j * p.dim, u, p.dim);
    }
  });
}

void hc_post(const HcPostParams& p) {
  const int64_t n = p.n;
  parallel_for(p.tokens * n, 1, [&](int64_t b, int64_t e) {
    for (int64_t task = b; task < e; ++task) {
      const int64_t t = task / n, k = task % n;
      const float* x = p.x + t * n * p.dim;
      const float* comb = p.comb + t * n * n;
      float* out = p.out + (t * n + k) * p.dim;
      const float pk = p.post[t * n + k];
      const float* y = p.y + t * p.dim;
      for (int64_t c = 0; c < p.dim; ++c) out[c] = pk * y[c];
      for (int64_t j = 0; j < n; ++j) axpy(comb[j * n + k], x + j * p.dim, out, p.dim);
    }
  });
}

void hc_head(const HcHeadParams& p) {
  for (int64_t t = 0; t < p.tokens; ++t) {
    float* h = p.h + t * p.dim;
    const float* x = p.x + t * p.n * p.dim;
    for (int64_t c = 0; c < p.dim; ++c) h[c] = 0.0f;
    for (int64_t j = 0; j < p.n; ++j) {
      const float w = sigmoid(p.mix[t * p.n + j] * p.scale + p.base[j]) + p.eps;
      axpy(w, x + j * p.dim, h, p.dim);
    }
  }
}

}  // namespace dsv4::kernels::cpu
