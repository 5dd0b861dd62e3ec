// Element types of tensors, with the safetensors names used by DeepSeek-V4 checkpoints.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace dsv4 {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kF64,
  kI8,
  kU8,
  kI16,
  kI32,
  kI64,
  kBool,
  kF8E4M3,   // float8 e4m3fn: no infinities, 0x7F/0xFF are NaN, max 448
  kF8E8M0,   // unsigned power-of-two scale: byte e -> 2^(e-127), 255 = NaN
  kFP4E2M1,  // two values per byte, low nibble = even column (stored as I8 tensors in the checkpoint)
};

/// Bits per element: 4 for kFP4E2M1, otherwise 8 x byte size.
int dtype_bits(DType dtype);

/// Bytes for `count` elements (rounded up for 4-bit types).
size_t dtype_bytes(DType dtype, int64_t count);

/// The safetensors spelling ("BF16", "F8_E4M3", ...). kFP4E2M1 has none and returns "FP4_E2M1".
std::string_view dtype_name(DType dtype);

/// Parses a safetensors dtype string. Returns nullopt for unknown names (callers name the file and tensor).
std::optional<DType> parse_dtype(std::string_view name);

bool dtype_is_float(DType dtype);

}  // namespace dsv4
