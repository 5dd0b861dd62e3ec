// The quantisation-emulation ops of `reference` numerics against torch's float8 / e2m1 casts
// (tests/golden/qat, written by scripts/reference/make_golden.py).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <vector>

#include "kernels/backend.h"
#include "tests/support/test_paths.h"

namespace dsv4::kernels {
namespace {

std::vector<float> load(const std::string& file, size_t count) {
  const auto path = dsv4::testing::source_dir() / "tests/golden/qat" / file;
  std::vector<float> v(count);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(count * sizeof(float)));
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  return v;
}

void expect_bitwise(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i] && bad++ == 0) first = i;
  }
  EXPECT_EQ(bad, 0u) << what << ": first mismatch at " << first << ": " << got[first] << " vs " << want[first];
}

TEST(QatGolden, Fp8RoundTripBlock64) {
  auto x = load("fp8_rt64.in.f32", 32 * 448);
  cpu::fp8_round_trip({x.data(), 32, 448, 448, 64});
  expect_bitwise(x, load("fp8_rt64.out.f32", 32 * 448), "fp8_rt64");
}

TEST(QatGolden, ActivationQuantBlock128) {
  auto x = load("act_q128.in.f32", 32 * 512);
  cpu::fp8_round_trip({x.data(), 32, 512, 512, 128});
  expect_bitwise(x, load("act_q128.out.f32", 32 * 512), "act_q128");
}

TEST(QatGolden, HadamardThenFp4Block32) {
  auto x = load("had_fp4_rt32.in.f32", 32 * 128);
  const auto had = load("had_fp4_rt32.had.f32", 32 * 128);
  cpu::hadamard({x.data(), 32, 128, 128});
  // fp32 butterflies vs a float64 product: the error scales with the row's magnitude (inputs reach 3e4).
  for (int r = 0; r < 32; ++r) {
    float row_max = 0.0f;
    for (int i = 0; i < 128; ++i) row_max = std::max(row_max, std::fabs(had[r * 128 + i]));
    for (int i = 0; i < 128; ++i) ASSERT_NEAR(x[r * 128 + i], had[r * 128 + i], 1e-6f * row_max) << r << "," << i;
  }
  // The FP4 rounding itself, on the oracle's Hadamard output, must match exactly.
  auto h = had;
  cpu::fp4_round_trip({h.data(), 32, 128, 128, 32});
  expect_bitwise(h, load("had_fp4_rt32.out.f32", 32 * 128), "fp4_rt32");
}

}  // namespace
}  // namespace dsv4::kernels
