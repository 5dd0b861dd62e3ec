// Linear layers over the weight formats of DeepSeek-V4 checkpoints, consumed directly (never dequantised
// into memory as a whole): y[m, r] = sum_k x[m, k] * W[row0 + r, k] for r in [0, rows).
//
// Weight formats (spec §7.3):
//   kF8E4M3  [out, in] e4m3 codes, block scales [ceil(out/128), ceil(in/128)] (E8M0 or F32)
//   kFP4E2M1 [out, in/2] packed e2m1 (low nibble = even column), E8M0 scales [out, in/32]
//   kBF16 / kF32 [out, in] plain values, no scale
// Accumulation is fp32. The per-(row, token) dot product is computed the same way whatever M is, so a
// token's output does not depend on which other tokens share the call (chunked prefill == one shot).
#pragma once

#include <cstdint>

#include "runtime/core/dtype.h"

namespace dsv4::kernels {

/// A weight matrix as stored: data pointer, format, and (for FP8/FP4) its scale grid.
struct WeightRef {
  const void* data = nullptr;
  DType dtype = DType::kF32;         // kF8E4M3, kFP4E2M1, kBF16 or kF32
  const void* scale = nullptr;       // block scales (FP8, FP4), else null
  DType scale_dtype = DType::kF8E8M0;  // kF8E8M0 or kF32
  int64_t out = 0;                   // logical rows
  int64_t in = 0;                    // logical columns (FP4: twice the stored byte width)
  int64_t block = 128;               // FP8: square block edge; FP4: inputs per scale (32)
  /// Row pitch of `data` in logical elements (0: `in`). A column slice of a stored matrix is a view with
  /// the parent's pitch (column_slice), so tensor-parallel shards and deterministic-mode chunks need no copy.
  int64_t ld = 0;
  /// Row pitch of `scale` in entries (0: the dense grid, ceil(in / block) for FP8, in / block for FP4).
  int64_t scale_ld = 0;

  int64_t row_pitch() const { return ld ? ld : in; }
  int64_t scale_pitch() const { return scale_ld ? scale_ld : (in + block - 1) / block; }
};

/// Columns [begin, begin + width) of `w` as a view (same rows, same storage). For FP8 and FP4 weights `begin`
/// must be a multiple of the block (the slice starts on a scale boundary) and, for FP4, `width` too; throws
/// Error(kInvalidArgument) otherwise or when the range leaves the weight.
WeightRef column_slice(const WeightRef& w, int64_t begin, int64_t width);

struct LinearParams {
  const float* x = nullptr;  // [m, x_stride], the first `w.in` values of each row are used
  int64_t m = 0;
  int64_t x_stride = 0;
  WeightRef w;
  int64_t row0 = 0;          // first weight row (grouped projections use a band of rows)
  int64_t rows = 0;          // output features computed
  float* y = nullptr;        // [m, y_stride]
  int64_t y_stride = 0;
  bool accumulate = false;   // y += result instead of y = result
};

namespace cpu {
void linear(const LinearParams& p);
}  // namespace cpu

}  // namespace dsv4::kernels
