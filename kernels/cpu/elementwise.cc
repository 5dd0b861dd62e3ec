// Row-wise ops: RMSNorm, partial interleaved RoPE, quantisation round trips (spec §6), Hadamard.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/thread_pool.h"
#include "kernels/ops/elementwise.h"
#include "runtime/core/error.h"
#include "runtime/core/float_formats.h"

namespace dsv4::kernels::cpu {

void rms_norm(const RmsNormParams& p) {
  parallel_for(p.rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, p.dim)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* x = p.x + r * p.x_stride;
      float* y = p.y + r * p.y_stride;
      double ss = 0.0;  // fp64 sum: the mean of squares over up to 4*7168 values without drift
      for (int64_t i = 0; i < p.dim; ++i) ss += static_cast<double>(x[i]) * x[i];
      const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(p.dim) + p.eps));
      if (p.weight == nullptr) {
        for (int64_t i = 0; i < p.dim; ++i) y[i] = x[i] * inv;
      } else if (p.weight_dtype == DType::kBF16) {
        const auto* w = static_cast<const uint16_t*>(p.weight);
        for (int64_t i = 0; i < p.dim; ++i) y[i] = bf16_to_f32(w[i]) * (x[i] * inv);
      } else {
        DSV4_CHECK(p.weight_dtype == DType::kF32) << "rms_norm: weight dtype " << dtype_name(p.weight_dtype);
        const auto* w = static_cast<const float*>(p.weight);
        for (int64_t i = 0; i < p.dim; ++i) y[i] = w[i] * (x[i] * inv);
      }
    }
  });
}

void rope(const RopeParams& p) {
  for (int64_t r = 0; r < p.rows; ++r) {
    const float pos = static_cast<float>(p.positions[r]);
    for (int64_t i = 0; i < p.num_pairs; ++i) {
      const float angle = pos * p.inv_freq[i];
      const float c = static_cast<float>(std::cos(static_cast<double>(angle)));
      float s = static_cast<float>(std::sin(static_cast<double>(angle)));
      if (p.inverse) s = -s;
      for (int64_t h = 0; h < p.heads; ++h) {
        float* v = p.x + r * p.row_stride + h * p.head_stride + p.offset + 2 * i;
        const float a = v[0], b = v[1];
        v[0] = a * c - b * s;
        v[1] = a * s + b * c;
      }
    }
  }
}

void fp8_round_trip(const Fp8RoundTripParams& p) {
  for (int64_t r = 0; r < p.rows; ++r) {
    float* x = p.x + r * p.stride;
    for (int64_t k0 = 0; k0 < p.count; k0 += p.block) {
      const int64_t n = std::min(p.block, p.count - k0);
      float amax = 1e-4f;
      for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[k0 + i]));
      const float scale = pow2_ceil(amax / kE4M3Max);
      for (int64_t i = 0; i < n; ++i) {
        float v = std::clamp(x[k0 + i] / scale, -kE4M3Max, kE4M3Max);
        x[k0 + i] = e4m3_to_f32(f32_to_e4m3(v)) * scale;
      }
    }
  }
}

void fp4_round_trip(const Fp4RoundTripParams& p) {
  const float floor_amax = 6.0f * std::ldexp(1.0f, -126);
  for (int64_t r = 0; r < p.rows; ++r) {
    float* x = p.x + r * p.stride;
    for (int64_t k0 = 0; k0 < p.count; k0 += p.block) {
      const int64_t n = std::min(p.block, p.count - k0);
      float amax = floor_amax;
      for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[k0 + i]));
      const float scale = pow2_ceil(amax / kE2M1Max);
      for (int64_t i = 0; i < n; ++i) {
        float v = std::clamp(x[k0 + i] / scale, -kE2M1Max, kE2M1Max);
        x[k0 + i] = e2m1_to_f32(f32_to_e2m1(v)) * scale;
      }
    }
  }
}

void hadamard(const HadamardParams& p) {
  DSV4_CHECK(p.dim > 0 && (p.dim & (p.dim - 1)) == 0) << "hadamard: dim " << p.dim << " is not a power of two";
  const float norm = 1.0f / std::sqrt(static_cast<float>(p.dim));
  for (int64_t r = 0; r < p.rows; ++r) {
    float* x = p.x + r * p.stride;
    for (int64_t h = 1; h < p.dim; h *= 2) {
      for (int64_t i = 0; i < p.dim; i += 2 * h) {
        for (int64_t j = i; j < i + h; ++j) {
          const float a = x[j], b = x[j + h];
          x[j] = a + b;
          x[j + h] = a - b;
        }
      }
    }
    for (int64_t i = 0; i < p.dim; ++i) x[i] *= norm;
  }
}

}  // namespace dsv4::kernels::cpu
