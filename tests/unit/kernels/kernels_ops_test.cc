// CPU kernels against closed forms and naive double-precision references.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/backend.h"
#include "runtime/core/float_formats.h"

namespace dsv4::kernels {
namespace {

std::vector<float> randn(int64_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Naive reference y[t, r] = sum_k x[t, k] * wf[r, k] in double, with sum_k |x w| (the scale of fp32
// accumulation error) in `abs_sum`.
std::vector<float> naive(const std::vector<float>& x, const std::vector<float>& wf, int64_t m, int64_t out, int64_t in,
                         std::vector<float>* abs_sum = nullptr) {
  std::vector<float> y(m * out);
  if (abs_sum) abs_sum->resize(m * out);
  for (int64_t t = 0; t < m; ++t)
    for (int64_t r = 0; r < out; ++r) {
      double s = 0, a = 0;
      for (int64_t k = 0; k < in; ++k) {
        s += static_cast<double>(x[t * in + k]) * wf[r * in + k];
        a += std::fabs(static_cast<double>(x[t * in + k]) * wf[r * in + k]);
      }
      y[t * out + r] = static_cast<float>(s);
      if (abs_sum) (*abs_sum)[t * out + r] = static_cast<float>(a);
    }
  return y;
}

std::vector<float> run_linear(const WeightRef& w, const std::vector<float>& x, int64_t m) {
  std::vector<float> y(m * w.out);
  cpu::linear({x.data(), m, w.in, w, 0, w.out, y.data(), w.out, false});
  return y;
}

void expect_close(const std::vector<float>& a, const std::vector<float>& b, float tol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], tol * (1.0f + std::fabs(b[i]))) << "at " << i;
}

TEST(Linear, Fp8BlocksRaggedShape) {
  const int64_t out = 130, in = 200, m = 5;  // ragged 128-blocks on both axes
  std::mt19937 rng(1);
  std::vector<uint8_t> codes(out * in), scales(2 * 2);
  for (auto& c : codes) {
    c = static_cast<uint8_t>(rng());
    if ((c & 0x7F) == 0x7F) c = 0x3C;  // no NaN codes
  }
  for (auto& s : scales) s = static_cast<uint8_t>(120 + rng() % 10);
  std::vector<float> wf(out * in);
  for (int64_t r = 0; r < out; ++r)
    for (int64_t k = 0; k < in; ++k)
      wf[r * in + k] = e4m3_to_f32(codes[r * in + k]) * e8m0_to_f32(scales[(r / 128) * 2 + k / 128]);
  WeightRef w{codes.data(), DType::kF8E4M3, scales.data(), DType::kF8E8M0, out, in, 128};
  auto x = randn(m * in, 2);
  auto y = run_linear(w, x, m);
  std::vector<float> abs_sum;
  auto ref = naive(x, wf, m, out, in, &abs_sum);
  for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], ref[i], 1e-6f * abs_sum[i]) << "at " << i;
  // A token's result does not depend on the batch it is in.
  std::vector<float> x3(x.begin() + 3 * in, x.begin() + 4 * in);
  auto y3 = run_linear(w, x3, 1);
  for (int64_t r = 0; r < out; ++r) EXPECT_EQ(y3[r], y[3 * out + r]);
  // A band of rows (grouped projections) with accumulation.
  std::vector<float> band(m * 10, 1.0f);
  cpu::linear({x.data(), m, in, w, 120, 10, band.data(), 10, true});
  for (int64_t t = 0; t < m; ++t)
    for (int64_t r = 0; r < 10; ++r) EXPECT_FLOAT_EQ(band[t * 10 + r], 1.0f + y[t * out + 120 + r]);
}

TEST(Linear, Fp4PackedExperts) {
  const int64_t out = 7, in = 64, m = 3;
  std::mt19937 rng(3);
  std::vector<uint8_t> packed(out * in / 2), scales(out * in / 32);
  for (auto& b : packed) b = static_cast<uint8_t>(rng());
  for (auto& s : scales) s = static_cast<uint8_t>(122 + rng() % 8);
  std::vector<float> wf(out * in);
  for (int64_t r = 0; r < out; ++r)
    for (int64_t k = 0; k < in; ++k)
      wf[r * in + k] = fp4_packed_at(packed.data() + r * in / 2, k) * e8m0_to_f32(scales[r * 2 + k / 32]);
  // Low nibble = even column.
  EXPECT_EQ(fp4_packed_at(packed.data(), 0), e2m1_to_f32(packed[0] & 0xF));
  WeightRef w{packed.data(), DType::kFP4E2M1, scales.data(), DType::kF8E8M0, out, in, 32};
  auto x = randn(m * in, 4);
  expect_close(run_linear(w, x, m), naive(x, wf, m, out, in), 1e-5f);
}

TEST(Linear, Bf16AndF32) {
  const int64_t out = 9, in = 33, m = 2;
  auto wf = randn(out * in, 5);
  std::vector<uint16_t> wb(out * in);
  for (int64_t i = 0; i < out * in; ++i) {
    wb[i] = f32_to_bf16(wf[i]);
    wf[i] = bf16_to_f32(wb[i]);
  }
  auto x = randn(m * in, 6);
  expect_close(run_linear({wb.data(), DType::kBF16, nullptr, DType::kF8E8M0, out, in, 128}, x, m),
               naive(x, wf, m, out, in), 1e-5f);
  expect_close(run_linear({wf.data(), DType::kF32, nullptr, DType::kF8E8M0, out, in, 128}, x, m),
               naive(x, wf, m, out, in), 1e-5f);
}

TEST(Elementwise, RmsNormClosedForm) {
  std::vector<float> x = {3.0f, 4.0f}, y(2);
  std::vector<float> w = {2.0f, 0.5f};
  cpu::rms_norm({x.data(), y.data(), 1, 2, 2, 2, w.data(), DType::kF32, 1e-6f});
  const float inv = 1.0f / std::sqrt(12.5f + 1e-6f);
  EXPECT_FLOAT_EQ(y[0], 2.0f * 3.0f * inv);
  EXPECT_FLOAT_EQ(y[1], 0.5f * 4.0f * inv);
}

TEST(Elementwise, RopeInterleavedPartialAndInverse) {
  // 2 heads of 6 dims, rotary on dims 2..5 (2 pairs).
  std::vector<float> x = {9, 9, 1, 0, 1, 0, 8, 8, 0, 1, 2, 3};
  const std::vector<float> orig = x;
  std::vector<float> inv = {0.5f, 0.25f};
  int64_t pos = 3;
  cpu::rope({x.data(), 1, 2, 6, 12, 2, inv.data(), 2, &pos, false});
  EXPECT_EQ(x[0], 9.0f);
  EXPECT_EQ(x[1], 9.0f);
  EXPECT_NEAR(x[2], std::cos(1.5f), 1e-6);
  EXPECT_NEAR(x[3], std::sin(1.5f), 1e-6);
  EXPECT_NEAR(x[4], std::cos(0.75f), 1e-6);
  EXPECT_NEAR(x[8], -std::sin(1.5f), 1e-6);  // (0, 1) rotates to (-sin, cos)
  EXPECT_NEAR(x[9], std::cos(1.5f), 1e-6);
  cpu::rope({x.data(), 1, 2, 6, 12, 2, inv.data(), 2, &pos, true});
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(x[i], orig[i], 1e-6) << i;
}

TEST(Elementwise, Fp8RoundTripClosedForm) {
  // Block 1: amax 300 -> scale 1; 300 -> 288 (e4m3 step 32 in [256, 448]). Block 2: amax 1000 -> scale 4;
  // 1000/4 = 250 -> 256 (step 16 in [128, 256]) -> 1024; 1.0 stays exact. Block 3: zeros stay zero.
  std::vector<float> x = {1.0f, 0.5f, 300.0f, -3.0f, 1000.0f, 1.0f, -0.3f, 2.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  cpu::fp8_round_trip({x.data(), 1, 12, 12, 4});
  EXPECT_EQ(x[0], 1.0f);
  EXPECT_EQ(x[1], 0.5f);
  EXPECT_EQ(x[2], 288.0f);
  EXPECT_EQ(x[3], -3.0f);
  EXPECT_EQ(x[4], 1024.0f);
  EXPECT_EQ(x[5], 1.0f);
  EXPECT_EQ(x[6], 4.0f * e4m3_to_f32(f32_to_e4m3(-0.075f)));
  EXPECT_EQ(x[8], 0.0f);
}

TEST(Elementwise, Fp4RoundTripTiesToEven) {
  // amax 6 -> scale 1: 2.5 ties 2 / 3 -> 2 (even code), 5 ties 4 / 6 -> 4, 0.25 ties 0 / 0.5 -> 0,
  // 0.75 ties 0.5 / 1 -> 1, 1.2 -> 1.
  std::vector<float> x = {6.0f, 2.5f, 5.0f, 0.25f, -0.75f, 1.2f, 0.0f, 0.0f};
  cpu::fp4_round_trip({x.data(), 1, 8, 8, 8});
  EXPECT_EQ(x[0], 6.0f);
  EXPECT_EQ(x[1], 2.0f);
  EXPECT_EQ(x[2], 4.0f);
  EXPECT_EQ(x[3], 0.0f);
  EXPECT_EQ(x[4], -1.0f);
  EXPECT_EQ(x[5], 1.0f);
  // amax 12 -> scale 2: 7 -> 3.5 -> 4 (ties to even code 6) -> 8.
  std::vector<float> y = {12.0f, 7.0f};
  cpu::fp4_round_trip({y.data(), 1, 2, 2, 2});
  EXPECT_EQ(y[0], 12.0f);
  EXPECT_EQ(y[1], 8.0f);
}

TEST(Elementwise, HadamardIsOrthonormalAndSelfInverse) {
  std::vector<float> e(16, 0.0f);
  e[0] = 1.0f;
  cpu::hadamard({e.data(), 1, 16, 16});
  for (float v : e) EXPECT_FLOAT_EQ(v, 0.25f);
  auto x = randn(32, 9);
  auto y = x;
  cpu::hadamard({y.data(), 2, 16, 16});
  cpu::hadamard({y.data(), 2, 16, 16});
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], x[i], 1e-6);
}

TEST(Attention, SinkOnlyInDenominator) {
  // One head, dim 2, q = (1, 0), rows v0 = (2, 1), v1 = (0, 3) (raw) and c0 = (1, 1) (compressed).
  std::vector<float> q = {1, 0}, raw = {2, 1, 0, 3}, comp = {1, 1}, sink = {0.5f}, out(2);
  std::vector<int32_t> idx = {0, -1, 2, 1};
  SparseAttentionParams p;
  p.q = q.data();
  p.tokens = 1;
  p.heads = 1;
  p.dim = 2;
  p.kv_raw = raw.data();
  p.n_raw = 2;
  const float* comp_pages[] = {comp.data()};
  p.comp_pages = comp_pages;
  p.comp_rows_per_page = 1;
  p.n_comp = 1;
  p.indices = idx.data();
  p.max_indices = 4;
  p.sink = sink.data();
  p.scale = 0.5f;
  p.out = out.data();
  cpu::sparse_attention(p);
  const double l0 = 1.0, l1 = 0.0, lc = 0.5;
  const double den = std::exp(l0) + std::exp(l1) + std::exp(lc) + std::exp(0.5);
  EXPECT_NEAR(out[0], (2 * std::exp(l0) + 0 * std::exp(l1) + 1 * std::exp(lc)) / den, 1e-6);
  EXPECT_NEAR(out[1], (1 * std::exp(l0) + 3 * std::exp(l1) + 1 * std::exp(lc)) / den, 1e-6);
  std::fill(idx.begin(), idx.end(), -1);
  cpu::sparse_attention(p);
  EXPECT_EQ(out[0], 0.0f);
}

TEST(HyperConnection, SinkhornColumnsSumToOne) {
  auto c = randn(16, 11, 2.0f);
  cpu::sinkhorn(c.data(), 4, 20, 1e-6f);
  for (int k = 0; k < 4; ++k) {
    float s = 0;
    for (int j = 0; j < 4; ++j) s += c[j * 4 + k];
    EXPECT_NEAR(s, 1.0f, 1e-5);
  }
  for (int j = 0; j < 4; ++j) {
    float s = 0;
    for (int k = 0; k < 4; ++k) s += c[j * 4 + k];
    EXPECT_NEAR(s, 1.0f, 1e-2);
  }
}

TEST(HyperConnection, PostUsesCombTransposed) {
  // comb[0][1] = 1: source stream 0 feeds destination stream 1; post adds post_k * y.
  const int64_t n = 4, D = 3;
  std::vector<float> x(n * D), y = {1, 2, 3}, post = {0, 0.5f, 0, 0}, comb(n * n, 0.0f), out(n * D);
  for (int64_t i = 0; i < n * D; ++i) x[i] = static_cast<float>(i);
  comb[0 * n + 1] = 1.0f;
  cpu::hc_post({x.data(), y.data(), post.data(), comb.data(), 1, n, D, out.data()});
  for (int64_t c = 0; c < D; ++c) {
    EXPECT_FLOAT_EQ(out[1 * D + c], x[c] + 0.5f * y[c]);
    EXPECT_FLOAT_EQ(out[0 * D + c], 0.0f);
  }
}

TEST(Compressor, PoolSoftmaxPerChannelSkipsEmptySlots) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> a0 = {1, 5}, a1 = {3, 7}, a2 = {100, 100};
  std::vector<float> s0 = {0, 0}, s1 = {0, std::log(3.0f)}, s2 = {-inf, -inf};
  const float* kv[] = {a0.data(), a1.data(), a2.data()};
  const float* sc[] = {s0.data(), s1.data(), s2.data()};
  std::vector<float> out(2);
  cpu::compressor_pool({kv, sc, 3, 2, out.data()});
  EXPECT_FLOAT_EQ(out[0], 2.0f);                 // equal weights: mean
  EXPECT_NEAR(out[1], (5 + 3 * 7) / 4.0f, 1e-6);  // weights 1 : 3
}

}  // namespace
}  // namespace dsv4::kernels
