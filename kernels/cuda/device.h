// The CUDA device runtime: device discovery, streams, events and a cudaMalloc-backed pool.
//
// Serving never allocates on the hot path: the pool takes its blocks from cudaMalloc once (warm-up) and hands
// them out again by size class; release() returns blocks to the pool, not to the driver.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace dsv4::kernels::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int sm_major = 0;
  int sm_minor = 0;
  int num_sms = 0;
  size_t total_memory = 0;
  size_t free_memory = 0;
};

/// Number of usable devices. 0 (not an error) when there is no driver or no device: cudaGetDeviceCount
/// returns cudaErrorNoDevice / cudaErrorInsufficientDriver then, which is how a CPU-only machine looks.
int device_count();

DeviceInfo device_info(int index);

/// RAII stream (non-blocking with respect to the legacy default stream).
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }
  void synchronize() const;

 private:
  cudaStream_t stream_ = nullptr;
};

/// RAII event with timing enabled.
class Event {
 public:
  Event();
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(cudaStream_t stream);
  void synchronize() const;
  cudaEvent_t get() const { return event_; }
  /// Milliseconds between two recorded events.
  static float elapsed_ms(const Event& start, const Event& end);

 private:
  cudaEvent_t event_ = nullptr;
};

/// A pool of device memory blocks from plain cudaMalloc, recycled by size class (powers of two from 256 B).
/// Thread-safe. Blocks are freed to the driver only when the pool is destroyed or trim() is called.
class DevicePool {
 public:
  DevicePool() = default;
  ~DevicePool();
  DevicePool(const DevicePool&) = delete;
  DevicePool& operator=(const DevicePool&) = delete;

  /// A block of at least `bytes` (256-byte aligned). Throws Error(kResourceExhausted) naming the size when
  /// the device is out of memory.
  void* allocate(size_t bytes);
  /// Returns a block from allocate() to the pool.
  void release(void* ptr);
  /// Frees every cached (not in use) block to the driver.
  void trim();

  size_t bytes_in_use() const;
  size_t bytes_reserved() const;

 private:
  static size_t size_class(size_t bytes);
  mutable std::mutex mutex_;
  std::multimap<size_t, void*> free_blocks_;  // size class -> block
  std::map<void*, size_t> in_use_;            // block -> size class
  size_t bytes_in_use_ = 0;
  size_t bytes_reserved_ = 0;
};

/// An owning device buffer drawn from a pool (RAII).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(DevicePool& pool, size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  void* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  DevicePool* pool_ = nullptr;
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace dsv4::kernels::cuda
