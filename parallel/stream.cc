// Stream synchronisation for host-blocking communicator backends.
#include "parallel/stream.h"

#include "runtime/core/error.h"

namespace dsv4::parallel {

void synchronize_stream(Stream stream) {
#if defined(DSV4_WITH_CUDA)
  // A CPU-only rank in a CUDA build never creates a stream; the default stream is then a no-op only when
  // there is no device, so skip the call for nullptr to keep CPU ranks independent of a driver.
  if (stream == nullptr) return;
  cudaError_t status = cudaStreamSynchronize(stream);
  DSV4_CHECK_CODE(status == cudaSuccess, ErrorCode::kCuda)
      << "cudaStreamSynchronize before a host collective: " << cudaGetErrorString(status);
#else
  (void)stream;
#endif
}

}  // namespace dsv4::parallel
