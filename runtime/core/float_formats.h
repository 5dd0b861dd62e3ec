// Scalar conversions between fp32 and the narrow formats of DeepSeek-V4 checkpoints and its QAT emulation.
// Header-only and branch-light: kernels call these in inner loops.
//
// Rounding is round-to-nearest-even everywhere (what torch's .to(float8_e4m3fn) and bf16 casts do).
#pragma once

#include <array>
#include <bit>
#include <cmath>
#include <cstdint>

namespace dsv4 {

// ---- bfloat16 ------------------------------------------------------------------------------------------
inline float bf16_to_f32(uint16_t v) { return std::bit_cast<float>(static_cast<uint32_t>(v) << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

/// Rounds an fp32 value to the nearest bf16 value (the reference stores activations in bf16).
inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

// ---- float16 -------------------------------------------------------------------------------------------
inline float f16_to_f32(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  if (exp == 0) {
    float mag = std::ldexp(static_cast<float>(mant), -24);
    return std::bit_cast<float>(std::bit_cast<uint32_t>(mag) | sign);
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}

inline uint16_t f32_to_f16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return sign | 0x7E00u;
  if (a >= 0x477FF000u) return sign | 0x7C00u;  // rounds to >= 65520: infinity
  if (a < 0x38800000u) {                        // below 2^-14: subnormal half
    float mag = std::bit_cast<float>(a) * 16777216.0f;  // / 2^-24
    return sign | static_cast<uint16_t>(std::nearbyint(mag));
  }
  uint32_t mant = a & 0x7FFFFFu;
  uint32_t exp = (a >> 23) - 112;
  uint32_t h = (exp << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return sign | static_cast<uint16_t>(h);
}

// ---- float8 e4m3fn -------------------------------------------------------------------------------------
inline constexpr float kE4M3Max = 448.0f;

namespace detail {
inline std::array<float, 256> make_e4m3_table() {
  std::array<float, 256> t{};
  for (int b = 0; b < 256; ++b) {
    int e = (b >> 3) & 0xF, m = b & 7;
    float mag;
    if ((b & 0x7F) == 0x7F) {
      mag = NAN;
    } else if (e == 0) {
      mag = std::ldexp(static_cast<float>(m), -9);
    } else {
      mag = std::ldexp(1.0f + m / 8.0f, e - 7);
    }
    t[b] = (b & 0x80) ? -mag : mag;
  }
  return t;
}
inline const std::array<float, 256> kE4M3Table = make_e4m3_table();
}  // namespace detail

inline float e4m3_to_f32(uint8_t b) { return detail::kE4M3Table[b]; }

/// fp32 -> e4m3fn, round-to-nearest-even. Values beyond the range saturate to +-448 (callers clamp first,
/// as the reference does); NaN maps to 0x7F.
inline uint8_t f32_to_e4m3(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return sign | 0x7F;
  float mag = std::bit_cast<float>(a);
  if (mag < 0.015625f) {  // below 2^-6: subnormal grid of 2^-9
    return sign | static_cast<uint8_t>(std::nearbyint(mag * 512.0f));  // 8 rounds up into the first normal
  }
  int e = static_cast<int>(a >> 23) - 127;
  uint32_t mant = a & 0x7FFFFFu;
  uint32_t m3 = mant >> 20;
  uint32_t rem = mant & 0xFFFFFu;
  if (rem > 0x80000u || (rem == 0x80000u && (m3 & 1u))) ++m3;
  if (m3 == 8) {
    m3 = 0;
    ++e;
  }
  int biased = e + 7;
  if (biased > 15 || (biased == 15 && m3 == 7)) return sign | 0x7E;  // saturate at 448
  return sign | static_cast<uint8_t>((biased << 3) | m3);
}

// ---- E8M0 scales ---------------------------------------------------------------------------------------
/// byte e -> 2^(e-127); e = 0 is 2^-127 (an fp32 subnormal), e = 255 is NaN. Reinterpreted, never cast.
inline float e8m0_to_f32(uint8_t e) {
  if (e == 255) return NAN;
  if (e == 0) return std::bit_cast<float>(0x00400000u);
  return std::bit_cast<float>(static_cast<uint32_t>(e) << 23);
}

/// Exact encoding of a power of two in [2^-127, 2^127]; other values are rounded up to the next power of two.
inline uint8_t f32_to_e8m0(float scale) {
  uint32_t u = std::bit_cast<uint32_t>(scale);
  if (u == 0x00400000u) return 0;
  uint32_t e = (u >> 23) & 0xFFu;
  if (u & 0x7FFFFFu) ++e;  // not a power of two: round up so the scaled values stay in range
  return static_cast<uint8_t>(e > 254 ? 254 : e);
}

/// 2^ceil(log2(x)) for x > 0, computed exactly from the bits (the reference's ue8m0 scale rounding).
inline float pow2_ceil(float x) {
  uint32_t u = std::bit_cast<uint32_t>(x);
  uint32_t e = (u >> 23) & 0xFFu;
  if (e == 0) {  // subnormal input: use frexp
    int ex;
    float m = std::frexp(x, &ex);
    return m == 0.5f ? x : std::ldexp(1.0f, ex);
  }
  if ((u & 0x7FFFFFu) == 0) return x;
  return std::bit_cast<float>((e + 1) << 23);
}

// ---- FP4 e2m1 ------------------------------------------------------------------------------------------
inline constexpr float kE2M1Max = 6.0f;
inline constexpr std::array<float, 16> kE2M1Table = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                                     -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

inline float e2m1_to_f32(uint8_t nibble) { return kE2M1Table[nibble & 0xF]; }

/// fp32 -> e2m1 code (0..15), nearest with ties to the even code; saturates at +-6.
inline uint8_t f32_to_e2m1(float f) {
  uint8_t sign = std::signbit(f) ? 8 : 0;
  float a = std::fabs(f);
  uint8_t code;
  if (!(a > 0.25f)) code = 0;  // also NaN -> 0
  else if (a < 0.75f) code = 1;
  else if (a <= 1.25f) code = 2;
  else if (a < 1.75f) code = 3;
  else if (a <= 2.5f) code = 4;
  else if (a < 3.5f) code = 5;
  else if (a <= 5.0f) code = 6;
  else code = 7;
  return sign | code;
}

/// Logical element `col` of a packed FP4 row (low nibble = even column).
inline float fp4_packed_at(const uint8_t* row, int64_t col) {
  uint8_t byte = row[col >> 1];
  return e2m1_to_f32((col & 1) ? (byte >> 4) : (byte & 0xF));
}

}  // namespace dsv4
