// Rank-ordered host reductions (see reduce.h for the arithmetic contract).
#include "parallel/reduce.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/core/float_formats.h"

namespace dsv4::parallel::detail {
namespace {

template <typename T>
T combine(T a, T b, ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      if constexpr (std::is_integral_v<T>) {
        using U = std::make_unsigned_t<T>;
        return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));  // wraps, no UB
      } else {
        return a + b;
      }
    case ReduceOp::kMax:
      return std::max(a, b);
    case ReduceOp::kMin:
      return std::min(a, b);
  }
  return a;
}

template <typename T>
void reduce_typed(const void* const* inputs, int n, void* out, size_t count, ReduceOp op) {
  T* dst = static_cast<T*>(out);
  for (size_t i = 0; i < count; ++i) {
    T acc = static_cast<const T*>(inputs[0])[i];
    for (int r = 1; r < n; ++r) acc = combine(acc, static_cast<const T*>(inputs[r])[i], op);
    dst[i] = acc;
  }
}

void reduce_bf16(const void* const* inputs, int n, void* out, size_t count, ReduceOp op) {
  uint16_t* dst = static_cast<uint16_t*>(out);
  for (size_t i = 0; i < count; ++i) {
    float acc = bf16_to_f32(static_cast<const uint16_t*>(inputs[0])[i]);
    for (int r = 1; r < n; ++r) acc = combine(acc, bf16_to_f32(static_cast<const uint16_t*>(inputs[r])[i]), op);
    dst[i] = f32_to_bf16(acc);
  }
}

}  // namespace

void check_reducible(DType dtype, std::string_view what) {
  DSV4_CHECK_ARG(dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kI32 || dtype == DType::kI64)
      << what << ": reductions accept F32, BF16, I32 and I64, not " << dtype_name(dtype);
}

void reduce_in_rank_order(const void* const* inputs, int n, void* out, size_t count, DType dtype, ReduceOp op) {
  DSV4_CHECK(n >= 1) << "reduction over " << n << " inputs";
  switch (dtype) {
    case DType::kF32: return reduce_typed<float>(inputs, n, out, count, op);
    case DType::kI32: return reduce_typed<int32_t>(inputs, n, out, count, op);
    case DType::kI64: return reduce_typed<int64_t>(inputs, n, out, count, op);
    case DType::kBF16: return reduce_bf16(inputs, n, out, count, op);
    default: check_reducible(dtype, "reduce");
  }
}

}  // namespace dsv4::parallel::detail
