#include "runtime/checkpoint/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/core/error.h"
#include "runtime/core/float_formats.h"

namespace dsv4 {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// One scale value as fp32, for the scale dtypes checkpoints use.
float scale_at(const TensorView& scale, int64_t i) {
  switch (scale.dtype) {
    case DType::kF8E8M0: return e8m0_to_f32(scale.as<const uint8_t>()[i]);
    case DType::kF32: return scale.as<const float>()[i];
    case DType::kBF16: return bf16_to_f32(scale.as<const uint16_t>()[i]);
    default: DSV4_THROW(kInvalidCheckpoint) << "scale dtype " << dtype_name(scale.dtype) << " is not F8_E8M0/F32/BF16";
  }
  return 0.0f;
}

// The power-of-two scale that maps `amax` onto at most `max_code`, within E8M0's range [2^-127, 2^127].
float pow2_scale(float amax, float max_code) {
  if (!(amax > 0.0f)) return 1.0f;
  DSV4_CHECK_ARG(std::isfinite(amax)) << "cannot quantise a non-finite value";
  float s = pow2_ceil(amax / max_code);
  return std::clamp(s, std::bit_cast<float>(0x00400000u), 0x1p127f);
}

void store_scale(const TensorView& scale, int64_t i, float s) {
  if (scale.dtype == DType::kF8E8M0) {
    scale.as<uint8_t>()[i] = f32_to_e8m0(s);
  } else {
    DSV4_CHECK_ARG(scale.dtype == DType::kF32) << "scale dtype must be F8_E8M0 or F32, got " << dtype_name(scale.dtype);
    scale.as<float>()[i] = s;
  }
}

}  // namespace

void dequant_fp8_blocks(const TensorView& weight, const TensorView& scale, int64_t block, float* out) {
  DSV4_CHECK_CODE(weight.dtype == DType::kF8E4M3 && weight.shape.rank() == 2, ErrorCode::kInvalidCheckpoint)
      << "FP8 block weight must be F8_E4M3 of rank 2, got " << dtype_name(weight.dtype) << " " << weight.shape.str();
  const int64_t rows = weight.dim(0), cols = weight.dim(1);
  const int64_t srows = ceil_div(rows, block), scols = ceil_div(cols, block);
  DSV4_CHECK_CODE(scale.shape == Shape({srows, scols}), ErrorCode::kInvalidCheckpoint)
      << "FP8 scale of a " << weight.shape.str() << " weight must be " << Shape({srows, scols}).str() << ", got "
      << scale.shape.str();
  const uint8_t* q = weight.as<const uint8_t>();
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t srow = (r / block) * scols;
    for (int64_t cb = 0; cb < scols; ++cb) {
      const float s = scale_at(scale, srow + cb);
      const int64_t c1 = std::min(cols, (cb + 1) * block);
      for (int64_t c = cb * block; c < c1; ++c) out[r * cols + c] = e4m3_to_f32(q[r * cols + c]) * s;
    }
  }
}

void dequant_fp4(const TensorView& packed, const TensorView& scale, int64_t block, float* out) {
  DSV4_CHECK_CODE((packed.dtype == DType::kI8 || packed.dtype == DType::kU8) && packed.shape.rank() == 2,
                  ErrorCode::kInvalidCheckpoint)
      << "packed FP4 weight must be I8 of rank 2, got " << dtype_name(packed.dtype) << " " << packed.shape.str();
  const int64_t rows = packed.dim(0), cols = packed.dim(1) * 2;
  DSV4_CHECK_CODE(cols % block == 0, ErrorCode::kInvalidCheckpoint)
      << "FP4 weight of " << cols << " logical columns is not a multiple of the block " << block;
  DSV4_CHECK_CODE(scale.dtype == DType::kF8E8M0 && scale.shape == Shape({rows, cols / block}),
                  ErrorCode::kInvalidCheckpoint)
      << "FP4 scale of a " << packed.shape.str() << " packed weight must be F8_E8M0 " << Shape({rows, cols / block}).str()
      << ", got " << dtype_name(scale.dtype) << " " << scale.shape.str();
  const uint8_t* p = packed.as<const uint8_t>();
  const uint8_t* s8 = scale.as<const uint8_t>();
  const int64_t nblocks = cols / block;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = p + r * (cols / 2);
    for (int64_t b = 0; b < nblocks; ++b) {
      const float s = e8m0_to_f32(s8[r * nblocks + b]);
      for (int64_t c = b * block; c < (b + 1) * block; ++c) out[r * cols + c] = fp4_packed_at(row, c) * s;
    }
  }
}

void convert_to_f32(const TensorView& t, float* out) {
  const int64_t n = t.numel();
  switch (t.dtype) {
    case DType::kF32: std::memcpy(out, t.data, static_cast<size_t>(n) * 4); return;
    case DType::kF64:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(t.as<const double>()[i]);
      return;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(t.as<const uint16_t>()[i]);
      return;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(t.as<const uint16_t>()[i]);
      return;
    case DType::kF8E4M3:
      for (int64_t i = 0; i < n; ++i) out[i] = e4m3_to_f32(t.as<const uint8_t>()[i]);
      return;
    case DType::kF8E8M0:
      for (int64_t i = 0; i < n; ++i) out[i] = e8m0_to_f32(t.as<const uint8_t>()[i]);
      return;
    case DType::kI8:
      for (int64_t i = 0; i < n; ++i) out[i] = t.as<const int8_t>()[i];
      return;
    case DType::kU8:
    case DType::kBool:
      for (int64_t i = 0; i < n; ++i) out[i] = t.as<const uint8_t>()[i];
      return;
    case DType::kI16:
      for (int64_t i = 0; i < n; ++i) out[i] = t.as<const int16_t>()[i];
      return;
    case DType::kI32:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(t.as<const int32_t>()[i]);
      return;
    case DType::kI64:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(t.as<const int64_t>()[i]);
      return;
    case DType::kFP4E2M1:
      for (int64_t i = 0; i < n; ++i) out[i] = fp4_packed_at(t.as<const uint8_t>(), i);
      return;
  }
}

Tensor dequantize(const TensorView& stored, const TensorView* scale, int64_t fp8_block, int64_t fp4_block) {
  if (scale == nullptr) {
    Tensor out(DType::kF32, stored.shape);
    convert_to_f32(stored, out.as<float>());
    return out;
  }
  if (stored.dtype == DType::kF8E4M3) {
    DSV4_CHECK_CODE(stored.shape.rank() == 2, ErrorCode::kInvalidCheckpoint)
        << "FP8 block weight must have rank 2, got " << stored.shape.str();
    Tensor out(DType::kF32, stored.shape);
    dequant_fp8_blocks(stored, *scale, fp8_block, out.as<float>());
    return out;
  }
  if (stored.dtype == DType::kI8 || stored.dtype == DType::kU8) {
    DSV4_CHECK_CODE(stored.shape.rank() == 2, ErrorCode::kInvalidCheckpoint)
        << "packed FP4 weight must have rank 2, got " << stored.shape.str();
    Tensor out(DType::kF32, Shape({stored.dim(0), stored.dim(1) * 2}));
    dequant_fp4(stored, *scale, fp4_block, out.as<float>());
    return out;
  }
  DSV4_THROW(kInvalidCheckpoint) << "a " << dtype_name(stored.dtype) << " tensor has no quantised form with a scale";
  return Tensor();
}

void quantize_fp8_blocks(const float* w, int64_t rows, int64_t cols, int64_t block, const TensorView& q,
                         const TensorView& scale) {
  const int64_t srows = ceil_div(rows, block), scols = ceil_div(cols, block);
  DSV4_CHECK_ARG(q.dtype == DType::kF8E4M3 && q.shape == Shape({rows, cols}))
      << "FP8 output must be F8_E4M3 [" << rows << ", " << cols << "], got " << dtype_name(q.dtype) << " "
      << q.shape.str();
  DSV4_CHECK_ARG(scale.shape == Shape({srows, scols}))
      << "FP8 scale output must be [" << srows << ", " << scols << "], got " << scale.shape.str();
  uint8_t* out = q.as<uint8_t>();
  for (int64_t rb = 0; rb < srows; ++rb) {
    const int64_t r0 = rb * block, r1 = std::min(rows, r0 + block);
    for (int64_t cb = 0; cb < scols; ++cb) {
      const int64_t c0 = cb * block, c1 = std::min(cols, c0 + block);
      float amax = 0.0f;
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(w[r * cols + c]));
      }
      const float s = pow2_scale(amax, kE4M3Max);
      const float inv = 1.0f / s;  // exact: s is a power of two
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) out[r * cols + c] = f32_to_e4m3(w[r * cols + c] * inv);
      }
      store_scale(scale, rb * scols + cb, s);
    }
  }
}

void quantize_fp4(const float* w, int64_t rows, int64_t cols, int64_t block, const TensorView& packed,
                  const TensorView& scale) {
  DSV4_CHECK_ARG(cols % block == 0 && cols % 2 == 0)
      << "FP4 quantisation needs columns (" << cols << ") to be a multiple of the block " << block;
  DSV4_CHECK_ARG(packed.shape == Shape({rows, cols / 2}) && dtype_bits(packed.dtype) == 8)
      << "packed FP4 output must be I8 [" << rows << ", " << cols / 2 << "], got " << packed.shape.str();
  DSV4_CHECK_ARG(scale.dtype == DType::kF8E8M0 && scale.shape == Shape({rows, cols / block}))
      << "FP4 scale output must be F8_E8M0 [" << rows << ", " << cols / block << "], got " << dtype_name(scale.dtype)
      << " " << scale.shape.str();
  uint8_t* p = packed.as<uint8_t>();
  uint8_t* s8 = scale.as<uint8_t>();
  const int64_t nblocks = cols / block;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = w + r * cols;
    for (int64_t b = 0; b < nblocks; ++b) {
      float amax = 0.0f;
      for (int64_t c = b * block; c < (b + 1) * block; ++c) amax = std::max(amax, std::fabs(row[c]));
      const float s = pow2_scale(amax, kE2M1Max);
      const float inv = 1.0f / s;
      for (int64_t c = b * block; c < (b + 1) * block; c += 2) {
        const uint8_t lo = f32_to_e2m1(row[c] * inv), hi = f32_to_e2m1(row[c + 1] * inv);
        p[r * (cols / 2) + c / 2] = static_cast<uint8_t>(lo | (hi << 4));
      }
      s8[r * nblocks + b] = f32_to_e8m0(s);
    }
  }
}

std::optional<int64_t> find_nonfinite(const TensorView& t) {
  const int64_t n = t.numel();
  switch (t.dtype) {
    case DType::kF8E8M0: {
      const uint8_t* p = t.as<const uint8_t>();
      const void* hit = std::memchr(p, 0xFF, static_cast<size_t>(n));
      if (hit != nullptr) return static_cast<const uint8_t*>(hit) - p;
      return std::nullopt;
    }
    case DType::kF32:
      for (int64_t i = 0; i < n; ++i) {
        if (!std::isfinite(t.as<const float>()[i])) return i;
      }
      return std::nullopt;
    case DType::kBF16:
    case DType::kF16: {
      // Exponent all ones in either 16-bit format means Inf or NaN.
      const uint16_t mask = t.dtype == DType::kBF16 ? 0x7F80 : 0x7C00;
      for (int64_t i = 0; i < n; ++i) {
        if ((t.as<const uint16_t>()[i] & mask) == mask) return i;
      }
      return std::nullopt;
    }
    default: return std::nullopt;
  }
}

}  // namespace dsv4
