// Error checks for CUDA runtime calls and kernel launches. Every call and every launch is checked; a failure
// becomes dsv4::Error(kCuda) naming the call, the CUDA error name and its description.
#pragma once

#include <cuda_runtime_api.h>

#include "runtime/core/error.h"
#include "runtime/core/logging.h"

#define DSV4_CUDA_CHECK(expr)                                                                             \
  do {                                                                                                    \
    cudaError_t dsv4_cuda_status_ = (expr);                                                               \
    DSV4_CHECK_CODE(dsv4_cuda_status_ == cudaSuccess, ::dsv4::ErrorCode::kCuda)                           \
        << #expr << ": " << cudaGetErrorName(dsv4_cuda_status_) << " (" << cudaGetErrorString(dsv4_cuda_status_) \
        << ")";                                                                                           \
  } while (0)

/// After a <<<...>>> launch: catches bad launch configurations at once (asynchronous faults surface at the
/// next synchronising call, which is checked too).
#define DSV4_CUDA_CHECK_LAUNCH() DSV4_CUDA_CHECK(cudaGetLastError())

/// Teardown variant for destructors: logs instead of throwing (the first error is kept by whoever threw).
#define DSV4_CUDA_CHECK_NOTHROW(expr)                                                                  \
  do {                                                                                                 \
    cudaError_t dsv4_cuda_status_ = (expr);                                                            \
    if (dsv4_cuda_status_ != cudaSuccess) {                                                            \
      DSV4_LOG(WARN) << #expr << " failed during teardown: " << cudaGetErrorName(dsv4_cuda_status_);   \
    }                                                                                                  \
  } while (0)
