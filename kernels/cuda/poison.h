// Test-harness helper: fills device memory with a byte pattern (0xFF = NaN for fp32/bf16/e4m3) so a kernel
// that fails to write an element is caught by the comparison against the CPU reference.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace dsv4::kernels::cuda {

void poison(void* device_ptr, size_t bytes, uint8_t pattern, cudaStream_t stream);

}  // namespace dsv4::kernels::cuda
