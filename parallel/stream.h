// The stream handle every Communicator operation is ordered on.
//
// On CUDA builds a Stream is a cudaStream_t (nullptr = the legacy default stream); on CPU-only builds it is
// an opaque null handle so that callers write the same code. Host backends (MPI, in-process) synchronise
// the stream before touching memory and finish before returning, so their results are visible to the
// host and to later work on the stream.
#pragma once

#if defined(DSV4_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace dsv4::parallel {

#if defined(DSV4_WITH_CUDA)
using Stream = cudaStream_t;
#else
struct NoStream;
using Stream = NoStream*;
#endif

/// The default stream (and the only value CPU builds ever pass).
inline constexpr Stream kDefaultStream = nullptr;

/// Waits until all work queued on `stream` has finished. A no-op on CPU builds. Host-blocking backends call
/// it before reading or writing the caller's buffers.
void synchronize_stream(Stream stream);

}  // namespace dsv4::parallel
