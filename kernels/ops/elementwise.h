// Row-wise ops: RMSNorm, interleaved partial RoPE, the reference's quantisation round trips (spec §6),
// the Walsh-Hadamard transform, and the activation quantisation emulation used before FP8/FP4 GEMMs.
#pragma once

#include <cstdint>

#include "runtime/core/dtype.h"

namespace dsv4::kernels {

/// y[r] = w ⊙ x[r] / sqrt(mean(x[r]^2) + eps); `weight` may be null (unweighted). x and y may alias.
struct RmsNormParams {
  const float* x = nullptr;
  float* y = nullptr;
  int64_t rows = 0;
  int64_t dim = 0;
  int64_t x_stride = 0;
  int64_t y_stride = 0;
  const void* weight = nullptr;  // [dim], kBF16 or kF32
  DType weight_dtype = DType::kBF16;
  float eps = 1e-6f;
};

/// Interleaved (GPT-J) RoPE, in place, on dims [offset, offset + 2 * freqs) of `heads` vectors per row:
/// pairs (a, b) = (x[offset+2i], x[offset+2i+1]) rotate by angle pos * inv_freq[i]; `inverse` uses -sin.
/// The angle is computed in fp32 as pos * inv_freq (what the references do).
struct RopeParams {
  float* x = nullptr;
  int64_t rows = 0;
  int64_t heads = 1;          // vectors per row
  int64_t head_stride = 0;    // floats between heads of a row
  int64_t row_stride = 0;     // floats between rows
  int64_t offset = 0;         // first rotated dim within a head
  const float* inv_freq = nullptr;  // [num_pairs]
  int64_t num_pairs = 0;
  const int64_t* positions = nullptr;  // [rows]
  bool inverse = false;
};

/// FP8 e4m3 round trip per block of `block` values (pow2 scale from amax/448, amax floor 1e-4), on the first
/// `count` values of each row, in place. Used for KV dims (block 64) and activations before GEMMs (128).
struct Fp8RoundTripParams {
  float* x = nullptr;
  int64_t rows = 0;
  int64_t count = 0;
  int64_t stride = 0;
  int64_t block = 128;
};

/// FP4 e2m1 round trip per block of `block` values (pow2 scale from amax/6, amax floor 6*2^-126), in place.
struct Fp4RoundTripParams {
  float* x = nullptr;
  int64_t rows = 0;
  int64_t count = 0;
  int64_t stride = 0;
  int64_t block = 32;
};

/// Walsh-Hadamard transform of each `dim`-vector (dim a power of two), scaled by dim^-0.5, in place.
struct HadamardParams {
  float* x = nullptr;
  int64_t rows = 0;  // vectors
  int64_t dim = 0;
  int64_t stride = 0;
};

namespace cpu {
void rms_norm(const RmsNormParams& p);
void rope(const RopeParams& p);
void fp8_round_trip(const Fp8RoundTripParams& p);
void fp4_round_trip(const Fp4RoundTripParams& p);
void hadamard(const HadamardParams& p);
}  // namespace cpu

}  // namespace dsv4::kernels
