// Linear layers over stored weight formats, dequantising on the fly: each 8-column group of a weight row
// is decoded in registers (FP8 128-blocks and FP4 32-blocks scaled as they are read) and multiplied into
// up to 8 tokens at once, so the weight streams from memory once per 8 tokens and is never materialised.
//
// Every (row, token) result is one 8-lane fp32 chain over the columns, then a fixed horizontal sum, then
// the scalar tail: the same order whatever M is and however rows are split over threads, so a token's
// output does not depend on the batch it is in (chunked prefill == one shot, bitwise).
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/ops/linear.h"
#include "runtime/core/error.h"
#include "runtime/core/float_formats.h"

namespace dsv4::kernels::cpu {
namespace {

constexpr int kTokensPerPass = 8;  // 8 accumulators + the decoded weights fit the 16 ymm registers

float scale_at(const WeightRef& w, int64_t index) {
  if (w.scale_dtype == DType::kF32) return static_cast<const float*>(w.scale)[index];
  return e8m0_to_f32(static_cast<const uint8_t*>(w.scale)[index]);
}

// Scalar decode of logical element (r, k), scale applied: used for ragged tails and the portable path.
float weight_at(const WeightRef& w, int64_t r, int64_t k) {
  const int64_t ld = w.row_pitch();
  switch (w.dtype) {
    case DType::kF32: return static_cast<const float*>(w.data)[r * ld + k];
    case DType::kBF16: return bf16_to_f32(static_cast<const uint16_t*>(w.data)[r * ld + k]);
    case DType::kF8E4M3:
      return e4m3_to_f32(static_cast<const uint8_t*>(w.data)[r * ld + k]) *
             scale_at(w, (r / w.block) * w.scale_pitch() + k / w.block);
    case DType::kFP4E2M1:
      return fp4_packed_at(static_cast<const uint8_t*>(w.data) + r * (ld / 2), k) *
             scale_at(w, r * w.scale_pitch() + k / w.block);
    default:
      DSV4_THROW(kUnsupported) << "linear: weight dtype " << dtype_name(w.dtype) << " is not supported";
  }
}

// ---- portable path: the same chain structure with 8 scalar lanes -------------------------------------
void row_dot_generic(const WeightRef& w, int64_t r, const float* const* x, int nt, float* out) {
  float acc[kTokensPerPass][8] = {};
  float wv[8];
  const int64_t full = w.in / 8 * 8;
  for (int64_t k = 0; k < full; k += 8) {
    for (int j = 0; j < 8; ++j) wv[j] = weight_at(w, r, k + j);
    for (int t = 0; t < nt; ++t)
      for (int j = 0; j < 8; ++j) acc[t][j] += x[t][k + j] * wv[j];
  }
  for (int t = 0; t < nt; ++t) {
    float s = ((acc[t][0] + acc[t][4]) + (acc[t][1] + acc[t][5])) + ((acc[t][2] + acc[t][6]) + (acc[t][3] + acc[t][7]));
    for (int64_t k = full; k < w.in; ++k) s += x[t][k] * weight_at(w, r, k);
    out[t] = s;
  }
}

// ---- AVX2 path ----------------------------------------------------------------------------------------
__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
  // Same pairing as the portable path: (l0+l4)+(l1+l5) + (l2+l6)+(l3+l7).
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  __m128 p = _mm_add_ps(s, _mm_movehl_ps(s, s));            // (s0+s2, s1+s3)
  return _mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)));  // (s0+s2)+(s1+s3)
}

// e4m3 -> fp32 in registers, without a table: the 7 magnitude bits shifted into an fp32's exponent/mantissa
// field give (1 + m/8) * 2^(E - 127) (or the subnormal m * 2^-129 when E = 0); times 2^120 that is exactly the
// e4m3 value, subnormals included (requires no DAZ, which the runtime never sets). 0x7F (NaN) is never stored.
__attribute__((target("avx2,fma"))) inline __m256 decode8_e4m3(const uint8_t* p, __m256 scale) {
  int64_t raw;
  std::memcpy(&raw, p, 8);
  const __m256i b = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(raw));
  const __m256i mag = _mm256_slli_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x7F)), 20);
  const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x80)), 24);
  __m256 v = _mm256_mul_ps(_mm256_castsi256_ps(mag), _mm256_set1_ps(0x1p120f));
  v = _mm256_or_ps(v, _mm256_castsi256_ps(sign));
  return _mm256_mul_ps(v, scale);
}

__attribute__((target("avx2,fma"))) inline __m256 decode8_bf16(const uint16_t* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

// 4 packed bytes -> 8 e2m1 values (low nibble first), times scale.
__attribute__((target("avx2,fma"))) inline __m256 decode8_fp4(const uint8_t* p, __m256 scale) {
  int32_t raw;
  std::memcpy(&raw, p, 4);
  const __m128i bytes = _mm_shuffle_epi8(_mm_cvtsi32_si128(raw), _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, -1, -1, -1,
                                                                               -1, -1, -1, -1, -1));
  __m256i n = _mm256_srlv_epi32(_mm256_cvtepu8_epi32(bytes), _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4));
  n = _mm256_and_si256(n, _mm256_set1_epi32(0xF));
  const __m256 table = _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
  __m256 v = _mm256_permutevar8x32_ps(table, n);  // uses the low 3 bits of each lane
  const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(n, _mm256_set1_epi32(0x8)), 28);
  v = _mm256_or_ps(v, _mm256_castsi256_ps(sign));
  return _mm256_mul_ps(v, scale);
}

template <int NT>
__attribute__((target("avx2,fma"))) inline void fma_all(__m256* acc, const float* const* x, __m256 wv, int64_t k) {
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_fmadd_ps(_mm256_loadu_ps(x[t] + k), wv, acc[t]);
}

template <int NT>
__attribute__((target("avx2,fma"))) void row_dot_avx2(const WeightRef& w, int64_t r, const float* const* x, float* out) {
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  const int64_t in = w.in, full = in / 8 * 8, ld = w.row_pitch();
  switch (w.dtype) {
    case DType::kF32: {
      const float* row = static_cast<const float*>(w.data) + r * ld;
      for (int64_t k = 0; k < full; k += 8) fma_all<NT>(acc, x, _mm256_loadu_ps(row + k), k);
      break;
    }
    case DType::kBF16: {
      const uint16_t* row = static_cast<const uint16_t*>(w.data) + r * ld;
      for (int64_t k = 0; k < full; k += 8) fma_all<NT>(acc, x, decode8_bf16(row + k), k);
      break;
    }
    case DType::kF8E4M3: {
      const uint8_t* row = static_cast<const uint8_t*>(w.data) + r * ld;
      const int64_t srow = (r / w.block) * w.scale_pitch();
      for (int64_t k0 = 0; k0 < full; k0 += w.block) {
        const __m256 s = _mm256_set1_ps(scale_at(w, srow + k0 / w.block));
        const int64_t end = std::min(full, k0 + w.block);
        for (int64_t k = k0; k < end; k += 8) fma_all<NT>(acc, x, decode8_e4m3(row + k, s), k);
      }
      break;
    }
    case DType::kFP4E2M1: {
      const uint8_t* row = static_cast<const uint8_t*>(w.data) + r * (ld / 2);
      const int64_t blocks_in = in / w.block;
      for (int64_t b = 0; b < blocks_in; ++b) {
        const __m256 s = _mm256_set1_ps(scale_at(w, r * w.scale_pitch() + b));
        for (int64_t k = b * w.block; k < (b + 1) * w.block; k += 8) fma_all<NT>(acc, x, decode8_fp4(row + k / 2, s), k);
      }
      break;
    }
    default:
      DSV4_THROW(kUnsupported) << "linear: weight dtype " << dtype_name(w.dtype) << " is not supported";
  }
  for (int t = 0; t < NT; ++t) {
    float s = hsum(acc[t]);
    for (int64_t k = full; k < in; ++k) s += x[t][k] * weight_at(w, r, k);
    out[t] = s;
  }
}

void row_dot(const WeightRef& w, int64_t r, const float* const* x, int nt, float* out) {
  if (!simd_avx2()) return row_dot_generic(w, r, x, nt, out);
  switch (nt) {
    case 1: return row_dot_avx2<1>(w, r, x, out);
    case 2: return row_dot_avx2<2>(w, r, x, out);
    case 3: return row_dot_avx2<3>(w, r, x, out);
    case 4: return row_dot_avx2<4>(w, r, x, out);
    case 5: return row_dot_avx2<5>(w, r, x, out);
    case 6: return row_dot_avx2<6>(w, r, x, out);
    case 7: return row_dot_avx2<7>(w, r, x, out);
    default: return row_dot_avx2<8>(w, r, x, out);
  }
}

}  // namespace

}  // namespace dsv4::kernels::cpu

namespace dsv4::kernels {

WeightRef column_slice(const WeightRef& w, int64_t begin, int64_t width) {
  DSV4_CHECK_ARG(begin >= 0 && width > 0 && begin + width <= w.in)
      << "column_slice: columns [" << begin << ", " << begin + width << ") outside a weight of " << w.in << " columns";
  WeightRef v = w;
  v.in = width;
  v.ld = w.row_pitch();
  switch (w.dtype) {
    case DType::kF32:
      v.data = static_cast<const float*>(w.data) + begin;
      return v;
    case DType::kBF16:
      v.data = static_cast<const uint16_t*>(w.data) + begin;
      return v;
    case DType::kF8E4M3:
    case DType::kFP4E2M1: {
      const bool fp4 = w.dtype == DType::kFP4E2M1;
      DSV4_CHECK_ARG(begin % w.block == 0 && (!fp4 || width % w.block == 0))
          << "column_slice: columns [" << begin << ", " << begin + width << ") of a " << dtype_name(w.dtype)
          << " weight do not start" << (fp4 ? " and end" : "") << " on a " << w.block << "-column scale block";
      v.data = static_cast<const uint8_t*>(w.data) + (fp4 ? begin / 2 : begin);
      v.scale_ld = w.scale_pitch();
      const int64_t scale_bytes = w.scale_dtype == DType::kF32 ? 4 : 1;
      v.scale = static_cast<const uint8_t*>(w.scale) + (begin / w.block) * scale_bytes;
      return v;
    }
    default:
      DSV4_THROW(kUnsupported) << "column_slice: weight dtype " << dtype_name(w.dtype) << " is not supported";
  }
}

}  // namespace dsv4::kernels

namespace dsv4::kernels::cpu {

void linear(const LinearParams& p) {
  const WeightRef& w = p.w;
  DSV4_CHECK(p.row0 >= 0 && p.row0 + p.rows <= w.out) << "linear: rows [" << p.row0 << ", " << p.row0 + p.rows
                                                      << ") outside a weight of " << w.out << " rows";
  DSV4_CHECK(p.x_stride >= w.in && p.y_stride >= p.rows) << "linear: bad strides";
  if (w.dtype == DType::kFP4E2M1) {
    DSV4_CHECK(w.in % w.block == 0 && w.block % 8 == 0) << "linear: FP4 rows must be whole 32-blocks";
  }
  if (w.dtype == DType::kF8E4M3) {
    DSV4_CHECK(w.block % 8 == 0) << "linear: FP8 block " << w.block;
  }
  if (p.m == 0 || p.rows == 0) return;
  // Rows per task: enough weight bytes per task to amortise the hand-off.
  const int64_t min_rows = std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(1, w.in * std::max<int64_t>(1, p.m / 8)));
  parallel_for(p.rows, min_rows, [&](int64_t begin, int64_t end) {
    // Token groups outermost within a task so a band of rows stays in cache across the groups.
    constexpr int64_t kRowTile = 16;
    for (int64_t rb = begin; rb < end; rb += kRowTile) {
      const int64_t re = std::min(end, rb + kRowTile);
      for (int64_t t0 = 0; t0 < p.m; t0 += kTokensPerPass) {
        const int nt = static_cast<int>(std::min<int64_t>(kTokensPerPass, p.m - t0));
        const float* xs[kTokensPerPass];
        for (int t = 0; t < nt; ++t) xs[t] = p.x + (t0 + t) * p.x_stride;
        for (int64_t r = rb; r < re; ++r) {
          float v[kTokensPerPass];
          row_dot(w, p.row0 + r, xs, nt, v);
          for (int t = 0; t < nt; ++t) {
            float& o = p.y[(t0 + t) * p.y_stride + r];
            o = p.accumulate ? o + v[t] : v[t];
          }
        }
      }
    }
  });
}

}  // namespace dsv4::kernels::cpu
