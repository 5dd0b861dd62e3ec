#include "kernels/cuda/check.h"
#include "kernels/cuda/poison.h"

namespace dsv4::kernels::cuda {
namespace {

__global__ void poison_kernel(uint8_t* data, size_t bytes, uint8_t pattern) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < bytes; i += size_t(gridDim.x) * blockDim.x) {
    data[i] = pattern;
  }
}

}  // namespace

void poison(void* device_ptr, size_t bytes, uint8_t pattern, cudaStream_t stream) {
  if (bytes == 0) return;
  constexpr int kThreads = 256;
  int blocks = static_cast<int>(std::min<size_t>((bytes + kThreads - 1) / kThreads, 4096));
  poison_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<uint8_t*>(device_ptr), bytes, pattern);
  DSV4_CUDA_CHECK_LAUNCH();
}

}  // namespace dsv4::kernels::cuda
