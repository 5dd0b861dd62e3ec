// Manifold hyper-connections (mHC, spec §3.2-§3.3 and the HC head of §3.8).
//
// The residual state of a token is X [n, D] (n = hc_mult streams). `hc_pre` turns the mixing logits
// m = rho * (fn . flatten(X)) into pre weights, post weights and the Sinkhorn-normalised comb matrix, and
// returns u = sum_j pre_j X_j. `hc_post` computes X'_k = post_k y + sum_j C[j][k] X_j (C transposed).
#pragma once

#include <cstdint>

namespace dsv4::kernels {

/// Mixing logits for `tokens` tokens: mix[t] = rsqrt(mean(X_t^2) + norm_eps) * (fn . flatten(X_t)).
struct HcMixParams {
  const float* x = nullptr;   // [tokens, n * dim]
  int64_t tokens = 0;
  int64_t width = 0;          // n * dim
  const float* fn = nullptr;  // [outputs, n * dim] fp32
  int64_t outputs = 0;        // (2 + n) * n for a sublayer, n for the head
  float norm_eps = 1e-6f;
  float* mix = nullptr;       // [tokens, outputs]
};

/// From mixing logits to pre / post / comb, then u = sum_j pre_j X_j.
struct HcPreParams {
  const float* mix = nullptr;   // [tokens, (2 + n) * n]
  const float* x = nullptr;     // [tokens, n, dim]
  int64_t tokens = 0;
  int64_t n = 4;
  int64_t dim = 0;
  const float* base = nullptr;  // [(2 + n) * n]
  const float* scale = nullptr; // [3]
  int64_t sinkhorn_iters = 20;
  float eps = 1e-6f;
  float* u = nullptr;           // [tokens, dim]
  float* post = nullptr;        // [tokens, n]
  float* comb = nullptr;        // [tokens, n, n], comb[j][k]: source stream j -> destination k
};

/// X'_k = post_k y + sum_j comb[j][k] X_j, written to `out` (may not alias x).
struct HcPostParams {
  const float* x = nullptr;     // [tokens, n, dim]
  const float* y = nullptr;     // [tokens, dim]
  const float* post = nullptr;  // [tokens, n]
  const float* comb = nullptr;  // [tokens, n, n]
  int64_t tokens = 0;
  int64_t n = 4;
  int64_t dim = 0;
  float* out = nullptr;         // [tokens, n, dim]
};

/// HC head: p_j = sigmoid(mix_j * scale + base_j) + eps, h = sum_j p_j X_j.
struct HcHeadParams {
  const float* mix = nullptr;   // [tokens, n]
  const float* x = nullptr;     // [tokens, n, dim]
  int64_t tokens = 0;
  int64_t n = 4;
  int64_t dim = 0;
  const float* base = nullptr;  // [n]
  float scale = 1.0f;
  float eps = 1e-6f;
  float* h = nullptr;           // [tokens, dim]
};

namespace cpu {
void hc_mix(const HcMixParams& p);
void hc_pre(const HcPreParams& p);
void hc_post(const HcPostParams& p);
void hc_head(const HcHeadParams& p);
/// Sinkhorn-Knopp on an n x n matrix of logits, in place (softmax over rows + eps, column norm, then
/// iters-1 rounds of row norm and column norm). Exposed for tests.
void sinkhorn(float* c, int64_t n, int64_t iters, float eps);
}  // namespace cpu

}  // namespace dsv4::kernels
