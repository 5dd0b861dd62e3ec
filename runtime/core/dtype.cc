#include "runtime/core/dtype.h"

namespace dsv4 {

int dtype_bits(DType dtype) {
  switch (dtype) {
    case DType::kF64:
    case DType::kI64: return 64;
    case DType::kF32:
    case DType::kI32: return 32;
    case DType::kF16:
    case DType::kBF16:
    case DType::kI16: return 16;
    case DType::kI8:
    case DType::kU8:
    case DType::kBool:
    case DType::kF8E4M3:
    case DType::kF8E8M0: return 8;
    case DType::kFP4E2M1: return 4;
  }
  return 0;
}

size_t dtype_bytes(DType dtype, int64_t count) {
  return static_cast<size_t>((count * dtype_bits(dtype) + 7) / 8);
}

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kF64: return "F64";
    case DType::kI8: return "I8";
    case DType::kU8: return "U8";
    case DType::kI16: return "I16";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
    case DType::kBool: return "BOOL";
    case DType::kF8E4M3: return "F8_E4M3";
    case DType::kF8E8M0: return "F8_E8M0";
    case DType::kFP4E2M1: return "FP4_E2M1";
  }
  return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  static constexpr DType kAll[] = {DType::kF32, DType::kF16,  DType::kBF16,   DType::kF64,    DType::kI8,
                                   DType::kU8,  DType::kI16,  DType::kI32,    DType::kI64,    DType::kBool,
                                   DType::kF8E4M3, DType::kF8E8M0};
  for (DType d : kAll) {
    if (dtype_name(d) == name) return d;
  }
  return std::nullopt;
}

bool dtype_is_float(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kF64:
    case DType::kF8E4M3:
    case DType::kF8E8M0:
    case DType::kFP4E2M1: return true;
    default: return false;
  }
}

}  // namespace dsv4
