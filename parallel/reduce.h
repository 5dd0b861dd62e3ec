// Deterministic host reductions shared by the MPI and in-process backends (internal header).
//
// Both reduce contributions in rank order with the same arithmetic, so that the two backends are bitwise
// identical: f32 sums left to right in f32; bf16 converts to f32, sums left to right, rounds once (RNE);
// integers wrap like the hardware does (two's complement, computed in unsigned arithmetic).
#pragma once

#include <cstddef>

#include "parallel/communicator.h"

namespace dsv4::parallel::detail {

/// out[i] = op(inputs[0][i], inputs[1][i], ..., inputs[n-1][i]) for i < count. `out` may alias inputs[0]
/// only; other aliasing is the caller's problem.
void reduce_in_rank_order(const void* const* inputs, int n, void* out, size_t count, DType dtype, ReduceOp op);

/// Throws kInvalidArgument unless `dtype` is one of f32, bf16, i32, i64.
void check_reducible(DType dtype, std::string_view what);

}  // namespace dsv4::parallel::detail
