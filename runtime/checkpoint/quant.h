// Dequantisation of checkpoint tensors to fp32 (spec §7.3), the inverse quantisers the checkpoint writer
// uses, and the scale checks of checkpoint validation. Scalar conversions come from runtime/core/float_formats.h.
//
//   FP8 block weight: W[r,c] = e4m3(Q[r,c]) * S[r / B, c / B], scale grid ceil(rows/B) x ceil(cols/B)
//                     (E8M0 scales in instruct checkpoints, F32 in Base ones).
//   FP4 expert:       byte j of a row holds column 2j in its low nibble, 2j+1 in its high nibble;
//                     W[r,c] = e2m1(c) * S[r, c / 32] with E8M0 scales.
#pragma once

#include <cstdint>
#include <optional>

#include "runtime/core/tensor.h"

namespace dsv4 {

/// FP8 e4m3 weight [rows, cols] with block scales [ceil(rows/block), ceil(cols/block)] of dtype F8_E8M0 or
/// F32 -> fp32 [rows, cols] in `out`.
void dequant_fp8_blocks(const TensorView& weight, const TensorView& scale, int64_t block, float* out);

/// Packed FP4 e2m1 weight, I8 [rows, cols/2], with E8M0 scales [rows, cols/block] -> fp32 [rows, cols].
void dequant_fp4(const TensorView& packed, const TensorView& scale, int64_t block, float* out);

/// Element-wise conversion of a plain tensor (F32, F16, BF16, F64, F8_E4M3, F8_E8M0, integer types) to fp32.
void convert_to_f32(const TensorView& plain, float* out);

/// The logical fp32 tensor a stored tensor stands for: FP8 block weights and packed FP4 weights are
/// dequantised with `scale`; anything else is converted element-wise (`scale` must then be null).
/// The kind is told by dtypes: F8_E4M3 + scale -> FP8 blocks; I8 + F8_E8M0 scale whose column count is
/// 2 * cols / fp4_block -> packed FP4. Throws Error(kInvalidCheckpoint) when the scale shape does not fit.
Tensor dequantize(const TensorView& stored, const TensorView* scale, int64_t fp8_block, int64_t fp4_block);

/// fp32 [rows, cols] -> FP8 e4m3 [rows, cols] + block scales. Each block's scale is the power of two
/// 2^ceil(log2(amax / 448)) (a zero block gets scale 1), so every scaled value fits without saturation.
/// `scale` is F8_E8M0 or F32 [ceil(rows/block), ceil(cols/block)]; `q` is F8_E4M3 [rows, cols].
void quantize_fp8_blocks(const float* w, int64_t rows, int64_t cols, int64_t block, const TensorView& q,
                         const TensorView& scale);

/// fp32 [rows, cols] (cols a multiple of `block`, even) -> packed FP4 I8 [rows, cols/2] + E8M0 scales
/// [rows, cols/block], scale 2^ceil(log2(amax / 6)) per block (zero block: scale 1).
void quantize_fp4(const float* w, int64_t rows, int64_t cols, int64_t block, const TensorView& packed,
                  const TensorView& scale);

/// Index of the first scale element that is NaN or infinite (E8M0 byte 255; F32/BF16/F16 non-finite);
/// nullopt when all are finite. Other dtypes: nullopt.
std::optional<int64_t> find_nonfinite(const TensorView& scale);

}  // namespace dsv4
