// Exhaustive checks of the checkpoint number formats (spec §7.3) and of the block (de)quantisers, plus a
// bit-exact comparison of the e4m3 and bf16 casts against torch (tests/golden/quant, written by
// scripts/reference/quant_golden.py).
#include "runtime/checkpoint/quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/core/float_formats.h"
#include "tests/support/test_paths.h"

namespace dsv4 {
namespace {

uint32_t bits(float f) { return std::bit_cast<uint32_t>(f); }

TensorView view_of(void* data, DType dtype, Shape shape) { return TensorView{data, dtype, shape}; }

// ---- scalar formats, every code -----------------------------------------------------------------------

TEST(QuantFormats, AllE4M3Codes) {
  for (int b = 0; b < 256; ++b) {
    const float v = e4m3_to_f32(static_cast<uint8_t>(b));
    const int e = (b >> 3) & 0xF, m = b & 7;
    if ((b & 0x7F) == 0x7F) {
      EXPECT_TRUE(std::isnan(v)) << "code " << b;
      continue;
    }
    // Spec §7.3 written out independently: E = 0 -> M * 2^-9, otherwise (1 + M/8) * 2^(E-7).
    const double mag = e == 0 ? m * std::pow(2.0, -9) : (1.0 + m / 8.0) * std::pow(2.0, e - 7);
    const double want = (b & 0x80) ? -mag : mag;
    EXPECT_EQ(static_cast<double>(v), want) << "code " << b;
    EXPECT_EQ(std::signbit(v), (b & 0x80) != 0) << "code " << b;
    EXPECT_EQ(f32_to_e4m3(v), b) << "round trip of code " << b;
  }
  EXPECT_EQ(e4m3_to_f32(0x7E), 448.0f);
  EXPECT_EQ(e4m3_to_f32(0xFE), -448.0f);
  EXPECT_EQ(e4m3_to_f32(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(e4m3_to_f32(0x07), 7 * std::ldexp(1.0f, -9));
  EXPECT_EQ(e4m3_to_f32(0x08), std::ldexp(1.0f, -6));  // smallest normal
}

TEST(QuantFormats, E4M3RoundsToNearestEvenAndSaturates) {
  EXPECT_EQ(f32_to_e4m3(1.0625f), 0x38);           // 1 + 1/16: tie between 1.0 (m=0) and 1.125 -> even 1.0
  EXPECT_EQ(f32_to_e4m3(1.1875f), 0x3A);           // tie between 1.125 (m=1) and 1.25 (m=2) -> 1.25
  EXPECT_EQ(f32_to_e4m3(std::nextafter(1.0625f, 2.0f)), 0x39);
  EXPECT_EQ(f32_to_e4m3(std::ldexp(1.0f, -10)), 0x00);      // tie between 0 and 2^-9 -> 0
  EXPECT_EQ(f32_to_e4m3(3 * std::ldexp(1.0f, -10)), 0x02);  // tie between 1 and 2 (x 2^-9) -> 2
  EXPECT_EQ(f32_to_e4m3(15 * std::ldexp(1.0f, -10)), 0x08); // tie between 7 x 2^-9 and 2^-6 -> normal 0x08
  EXPECT_EQ(f32_to_e4m3(-1.0625f), 0xB8);
  EXPECT_EQ(f32_to_e4m3(464.0f), 0x7E);  // tie between 448 and (missing) 480 still saturates to 448
  EXPECT_EQ(f32_to_e4m3(1e9f), 0x7E);
  EXPECT_EQ(f32_to_e4m3(-INFINITY), 0xFE);
  EXPECT_EQ(f32_to_e4m3(NAN) & 0x7F, 0x7F);
}

TEST(QuantFormats, AllE2M1Codes) {
  const float table[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  for (int n = 0; n < 16; ++n) {
    const float v = e2m1_to_f32(static_cast<uint8_t>(n));
    EXPECT_EQ(std::fabs(v), table[n & 7]) << "code " << n;
    EXPECT_EQ(std::signbit(v), (n & 8) != 0) << "code " << n;
    EXPECT_EQ(f32_to_e2m1(v), n) << "round trip of code " << n;
  }
  // Ties go to the even code: 0.25->0, 0.75->1.0, 1.25->1.0, 1.75->2, 2.5->2, 3.5->4, 5->4.
  const std::pair<float, int> ties[] = {{0.25f, 0}, {0.75f, 2}, {1.25f, 2}, {1.75f, 4}, {2.5f, 4}, {3.5f, 6}, {5.0f, 6}};
  for (auto [x, code] : ties) {
    EXPECT_EQ(f32_to_e2m1(x), code) << x;
    EXPECT_EQ(f32_to_e2m1(-x), code | 8) << -x;
  }
  EXPECT_EQ(f32_to_e2m1(std::nextafter(0.25f, 1.0f)), 1);
  EXPECT_EQ(f32_to_e2m1(7.0f), 7);   // saturates
  EXPECT_EQ(f32_to_e2m1(1e30f), 7);
}

TEST(QuantFormats, AllE8M0Codes) {
  for (int e = 0; e < 256; ++e) {
    const float v = e8m0_to_f32(static_cast<uint8_t>(e));
    if (e == 255) {
      EXPECT_TRUE(std::isnan(v));
      continue;
    }
    EXPECT_EQ(static_cast<double>(v), std::ldexp(1.0, e - 127)) << "code " << e;
    EXPECT_EQ(f32_to_e8m0(v), e) << "round trip of code " << e;
  }
  EXPECT_EQ(bits(e8m0_to_f32(0)), 0x00400000u);  // 2^-127 is an fp32 subnormal
  EXPECT_EQ(f32_to_e8m0(3.0f), 128 + 1);          // not a power of two: rounds up to 4
}

TEST(QuantFormats, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);  // tie -> even (1.0)
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);  // tie between 0x3F81 and 0x3F82 -> even
  EXPECT_EQ(f32_to_bf16(std::nextafter(1.0f + std::ldexp(1.0f, -8), 2.0f)), 0x3F81);
  EXPECT_EQ(f32_to_bf16(INFINITY), 0x7F80);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7F80);  // rounds up into infinity
  EXPECT_EQ(f32_to_bf16(NAN) & 0x7FC0, 0x7FC0);
}

// ---- torch golden --------------------------------------------------------------------------------------

TEST(QuantGolden, E4M3AndBf16MatchTorchBitExactly) {
  const auto path = testing::source_dir() / "tests/golden/quant/e4m3_bf16.bin";
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in) << "missing " << path << " (run scripts/reference/quant_golden.py)";
  char magic[8];
  uint32_t count = 0;
  in.read(magic, 8);
  in.read(reinterpret_cast<char*>(&count), 4);
  ASSERT_EQ(std::string(magic, 8), "DSV4QG01");
  ASSERT_EQ(count, 4096u);
  std::vector<float> x(count);
  std::vector<uint8_t> e4m3(count);
  std::vector<uint16_t> bf16(count);
  in.read(reinterpret_cast<char*>(x.data()), count * 4);
  in.read(reinterpret_cast<char*>(e4m3.data()), count);
  in.read(reinterpret_cast<char*>(bf16.data()), count * 2);
  ASSERT_TRUE(in) << "truncated " << path;
  int e4m3_bad = 0, bf16_bad = 0;
  for (uint32_t i = 0; i < count; ++i) {
    const float clamped = std::clamp(x[i], -kE4M3Max, kE4M3Max);
    if (f32_to_e4m3(clamped) != e4m3[i] && e4m3_bad++ < 5) {
      ADD_FAILURE() << "e4m3 of " << x[i] << " (bits " << std::hex << bits(x[i]) << "): ours "
                    << int(f32_to_e4m3(clamped)) << ", torch " << int(e4m3[i]);
    }
    if (f32_to_bf16(x[i]) != bf16[i] && bf16_bad++ < 5) {
      ADD_FAILURE() << "bf16 of " << x[i] << " (bits " << std::hex << bits(x[i]) << "): ours " << f32_to_bf16(x[i])
                    << ", torch " << bf16[i];
    }
  }
  EXPECT_EQ(e4m3_bad, 0);
  EXPECT_EQ(bf16_bad, 0);
}

// ---- block dequantisation ------------------------------------------------------------------------------

TEST(QuantBlocks, Fp8RaggedEdgesUseTheCeilScaleGrid) {
  // [130, 200] with 128 blocks: the scale grid is [2, 2]; rows 128-129 and columns 128-199 are ragged.
  const int64_t rows = 130, cols = 200;
  std::vector<uint8_t> q(rows * cols);
  for (size_t i = 0; i < q.size(); ++i) {
    const uint8_t code = static_cast<uint8_t>((i * 37) % 256);
    q[i] = (code & 0x7F) == 0x7F ? 0x3F : code;  // every code except the NaNs
  }
  uint8_t scales[4] = {127, 130, 120, 140};  // 1, 8, 2^-7, 2^13
  std::vector<float> out(rows * cols);
  dequant_fp8_blocks(view_of(q.data(), DType::kF8E4M3, {rows, cols}), view_of(scales, DType::kF8E8M0, {2, 2}), 128,
                     out.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float s = std::ldexp(1.0f, scales[(r / 128) * 2 + c / 128] - 127);
      ASSERT_EQ(bits(out[r * cols + c]), bits(e4m3_to_f32(q[r * cols + c]) * s)) << r << "," << c;
    }
  }
  // F32 scales (Base checkpoints) are used as they are.
  float fscales[4] = {0.5f, 3.0f, -1.0f, 0.125f};
  dequant_fp8_blocks(view_of(q.data(), DType::kF8E4M3, {rows, cols}), view_of(fscales, DType::kF32, {2, 2}), 128,
                     out.data());
  EXPECT_EQ(out[129 * cols + 199], e4m3_to_f32(q[129 * cols + 199]) * 0.125f);
  EXPECT_EQ(out[0 * cols + 130], e4m3_to_f32(q[130]) * 3.0f);
  // A scale grid of the wrong shape is a checkpoint error.
  EXPECT_THROW(dequant_fp8_blocks(view_of(q.data(), DType::kF8E4M3, {rows, cols}),
                                  view_of(scales, DType::kF8E8M0, {1, 2}), 128, out.data()),
               Error);
}

TEST(QuantBlocks, Fp8QuantiseRoundTrip) {
  const int64_t rows = 257, cols = 130;
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) w[i] = normal(rng) * std::ldexp(1.0f, static_cast<int>((i / cols) / 128) * 5 - 3);
  w[5] = 0.0f;
  std::vector<uint8_t> q(rows * cols), s(3 * 2);
  std::vector<float> sf(3 * 2);
  for (DType sd : {DType::kF8E8M0, DType::kF32}) {
    TensorView sv = sd == DType::kF8E8M0 ? view_of(s.data(), sd, {3, 2}) : view_of(sf.data(), sd, {3, 2});
    quantize_fp8_blocks(w.data(), rows, cols, 128, view_of(q.data(), DType::kF8E4M3, {rows, cols}), sv);
    std::vector<float> back(rows * cols);
    dequant_fp8_blocks(view_of(q.data(), DType::kF8E4M3, {rows, cols}), sv, 128, back.data());
    for (int64_t rb = 0; rb < 3; ++rb) {
      for (int64_t cb = 0; cb < 2; ++cb) {
        float amax = 0.0f;
        for (int64_t r = rb * 128; r < std::min(rows, rb * 128 + 128); ++r)
          for (int64_t c = cb * 128; c < std::min(cols, cb * 128 + 128); ++c) amax = std::max(amax, std::fabs(w[r * cols + c]));
        const float want = pow2_ceil(amax / 448.0f);
        const float got = sd == DType::kF8E8M0 ? e8m0_to_f32(s[rb * 2 + cb]) : sf[rb * 2 + cb];
        EXPECT_EQ(got, want) << "block " << rb << "," << cb;
      }
    }
    for (int64_t i = 0; i < rows * cols; ++i) {
      const float scale = sd == DType::kF8E8M0 ? e8m0_to_f32(s[(i / cols / 128) * 2 + (i % cols) / 128])
                                               : sf[(i / cols / 128) * 2 + (i % cols) / 128];
      // Half an e4m3 ulp: 2^-4 relative for normals, 2^-10 x scale in the subnormal range.
      ASSERT_LE(std::fabs(back[i] - w[i]), std::max(std::fabs(w[i]) * 0.0625f, scale * std::ldexp(1.0f, -10)))
          << i;
      ASSERT_NE(q[i] & 0x7F, 0x7F) << "NaN code at " << i;
    }
    EXPECT_EQ(back[5], 0.0f);
  }
}

TEST(QuantBlocks, Fp4PackedLowNibbleIsEvenColumn) {
  // One row of 64 logical columns, two blocks of 32: byte j = column 2j (low) | column 2j+1 (high).
  std::vector<uint8_t> packed(32);
  for (int j = 0; j < 32; ++j) packed[j] = static_cast<uint8_t>((j % 16) | (((j + 5) % 16) << 4));
  uint8_t scales[2] = {127, 129};  // 1, 4
  std::vector<float> out(64);
  dequant_fp4(view_of(packed.data(), DType::kI8, {1, 32}), view_of(scales, DType::kF8E8M0, {1, 2}), 32, out.data());
  for (int c = 0; c < 64; ++c) {
    const int j = c / 2;
    const int nibble = (c % 2 == 0) ? (j % 16) : ((j + 5) % 16);
    EXPECT_EQ(out[c], e2m1_to_f32(static_cast<uint8_t>(nibble)) * (c < 32 ? 1.0f : 4.0f)) << c;
  }
  // Scale columns must be cols / 32.
  EXPECT_THROW(dequant_fp4(view_of(packed.data(), DType::kI8, {1, 32}), view_of(scales, DType::kF8E8M0, {1, 1}), 32,
                           out.data()),
               Error);
}

TEST(QuantBlocks, Fp4QuantiseRoundTrip) {
  const int64_t rows = 3, cols = 96;
  std::vector<float> w(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) w[i] = e2m1_to_f32(static_cast<uint8_t>(i % 16)) * std::ldexp(1.0f, static_cast<int>(i / 32) - 4);
  std::vector<uint8_t> packed(rows * cols / 2), scales(rows * cols / 32);
  quantize_fp4(w.data(), rows, cols, 32, view_of(packed.data(), DType::kI8, {rows, cols / 2}),
               view_of(scales.data(), DType::kF8E8M0, {rows, cols / 32}));
  std::vector<float> back(rows * cols);
  dequant_fp4(view_of(packed.data(), DType::kI8, {rows, cols / 2}), view_of(scales.data(), DType::kF8E8M0, {rows, 3}),
              32, back.data());
  // Every block holds exact e2m1 values times a power of two whose amax is 6: the round trip is exact.
  for (int64_t i = 0; i < rows * cols; ++i) ASSERT_EQ(back[i], w[i]) << i;
  for (int64_t b = 0; b < rows * 3; ++b) EXPECT_EQ(scales[b], 127 + b - 4) << b;
}

TEST(QuantBlocks, DequantizeDispatchesOnDtypes) {
  uint16_t bf[3] = {0x3F80, 0xC000, 0x0000};
  Tensor t = dequantize(view_of(bf, DType::kBF16, {3}), nullptr, 128, 32);
  EXPECT_EQ(t.as<float>()[0], 1.0f);
  EXPECT_EQ(t.as<float>()[1], -2.0f);
  uint8_t packed[16] = {0x21};
  uint8_t scale[1] = {128};
  TensorView sv = view_of(scale, DType::kF8E8M0, {1, 1});
  Tensor f4 = dequantize(view_of(packed, DType::kI8, {1, 16}), &sv, 128, 32);
  ASSERT_EQ(f4.shape(), Shape({1, 32}));
  EXPECT_EQ(f4.as<float>()[0], 1.0f);  // low nibble, code 1 = 0.5, times scale 2
  EXPECT_EQ(f4.as<float>()[1], 2.0f);  // high nibble, code 2 = 1.0, times scale 2
  EXPECT_THROW(dequantize(view_of(bf, DType::kBF16, {3}), &sv, 128, 32), Error);
}

TEST(QuantValidation, FindsNanAndInfScales) {
  uint8_t e8[6] = {127, 0, 254, 1, 255, 3};
  EXPECT_EQ(find_nonfinite(view_of(e8, DType::kF8E8M0, {2, 3})), 4);
  e8[4] = 2;
  EXPECT_EQ(find_nonfinite(view_of(e8, DType::kF8E8M0, {2, 3})), std::nullopt);
  float f[4] = {1.0f, 2.0f, INFINITY, NAN};
  EXPECT_EQ(find_nonfinite(view_of(f, DType::kF32, {4})), 2);
  f[2] = 0.0f;
  EXPECT_EQ(find_nonfinite(view_of(f, DType::kF32, {4})), 3);
  f[3] = -5.0f;
  EXPECT_EQ(find_nonfinite(view_of(f, DType::kF32, {4})), std::nullopt);
  uint16_t b[2] = {0x3F80, 0xFF80};  // 1.0, -inf
  EXPECT_EQ(find_nonfinite(view_of(b, DType::kBF16, {2})), 1);
}

}  // namespace
}  // namespace dsv4
