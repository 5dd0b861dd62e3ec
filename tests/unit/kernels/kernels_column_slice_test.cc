// column_slice: a view of some columns of a stored weight must give bitwise the same linear as the same
// columns copied into their own dense matrix (what a tensor-parallel shard or a deterministic chunk is).
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernels/ops/linear.h"
#include "runtime/core/error.h"

namespace dsv4::kernels {
namespace {

std::vector<float> run(const WeightRef& w, const std::vector<float>& x, int64_t m, int64_t x_stride) {
  std::vector<float> y(m * w.out);
  cpu::linear({x.data(), m, x_stride, w, 0, w.out, y.data(), w.out, false});
  return y;
}

std::vector<float> randn(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TEST(ColumnSlice, Fp8SliceEqualsCopiedColumns) {
  const int64_t out = 130, in = 384, m = 9, begin = 128, width = 200;  // ragged last block of the slice
  std::mt19937 rng(7);
  std::vector<uint8_t> codes(out * in), scales(2 * 3);
  for (auto& c : codes) {
    c = static_cast<uint8_t>(rng());
    if ((c & 0x7F) == 0x7F) c = 0x3C;
  }
  for (auto& s : scales) s = static_cast<uint8_t>(118 + rng() % 12);
  const WeightRef whole{codes.data(), DType::kF8E4M3, scales.data(), DType::kF8E8M0, out, in, 128};
  const WeightRef view = column_slice(whole, begin, width);

  // The same columns as their own [out, width] matrix with its own [2, 2] scale grid.
  std::vector<uint8_t> c2(out * width), s2(2 * 2);
  for (int64_t r = 0; r < out; ++r)
    for (int64_t k = 0; k < width; ++k) c2[r * width + k] = codes[r * in + begin + k];
  for (int64_t rb = 0; rb < 2; ++rb)
    for (int64_t kb = 0; kb < 2; ++kb) s2[rb * 2 + kb] = scales[rb * 3 + begin / 128 + kb];
  const WeightRef dense{c2.data(), DType::kF8E4M3, s2.data(), DType::kF8E8M0, out, width, 128};

  auto x = randn(m * width, 8);
  EXPECT_EQ(run(view, x, m, width), run(dense, x, m, width));
}

TEST(ColumnSlice, Fp4AndBf16Slices) {
  const int64_t out = 5, in = 128, m = 3;
  std::mt19937 rng(9);
  std::vector<uint8_t> packed(out * in / 2), scales(out * in / 32);
  for (auto& b : packed) b = static_cast<uint8_t>(rng());
  for (auto& s : scales) s = static_cast<uint8_t>(122 + rng() % 8);
  const WeightRef whole{packed.data(), DType::kFP4E2M1, scales.data(), DType::kF8E8M0, out, in, 32};
  const WeightRef view = column_slice(whole, 64, 64);
  std::vector<uint8_t> p2(out * 32), s2(out * 2);
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t b = 0; b < 32; ++b) p2[r * 32 + b] = packed[r * 64 + 32 + b];
    for (int64_t j = 0; j < 2; ++j) s2[r * 2 + j] = scales[r * 4 + 2 + j];
  }
  const WeightRef dense{p2.data(), DType::kFP4E2M1, s2.data(), DType::kF8E8M0, out, 64, 32};
  auto x = randn(m * 64, 10);
  EXPECT_EQ(run(view, x, m, 64), run(dense, x, m, 64));

  std::vector<uint16_t> wb(out * 33);
  for (auto& v : wb) v = static_cast<uint16_t>(0x3C00 + rng() % 0x400);
  const WeightRef bf{wb.data(), DType::kBF16, nullptr, DType::kF8E8M0, out, 33, 128};
  std::vector<uint16_t> wb2(out * 20);
  for (int64_t r = 0; r < out; ++r)
    for (int64_t k = 0; k < 20; ++k) wb2[r * 20 + k] = wb[r * 33 + 5 + k];
  auto x2 = randn(m * 20, 11);
  EXPECT_EQ(run(column_slice(bf, 5, 20), x2, m, 20),
            run({wb2.data(), DType::kBF16, nullptr, DType::kF8E8M0, out, 20, 128}, x2, m, 20));
}

TEST(ColumnSlice, RefusesSlicesOffTheScaleGrid) {
  std::vector<uint8_t> codes(4 * 256), scales(2);
  const WeightRef w{codes.data(), DType::kF8E4M3, scales.data(), DType::kF8E8M0, 4, 256, 128};
  EXPECT_THROW(column_slice(w, 64, 64), Error);
  EXPECT_THROW(column_slice(w, 128, 200), Error);
  EXPECT_NO_THROW(column_slice(w, 128, 128));
}

}  // namespace
}  // namespace dsv4::kernels
