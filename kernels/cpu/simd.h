// Small vector helpers for the CPU kernels, with an AVX2/FMA version chosen once at run time (-march is not
// set globally). Every caller gets the same function for the life of the process, so results do not depend
// on batch size or threading.
#pragma once

#include <cstdint>

namespace dsv4::kernels::cpu {

using DotFn = float (*)(const float* a, const float* b, int64_t n);
using AxpyFn = void (*)(float alpha, const float* x, float* y, int64_t n);

/// sum_i a[i] * b[i] with a fixed blocked summation order.
float dot(const float* a, const float* b, int64_t n);
/// y += alpha * x.
void axpy(float alpha, const float* x, float* y, int64_t n);
/// True when the AVX2/FMA paths are in use.
bool simd_avx2();

}  // namespace dsv4::kernels::cpu
