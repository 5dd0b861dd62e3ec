#include "kernels/cuda/device.h"

#include <bit>
#include <utility>

#include "kernels/cuda/check.h"
#include "runtime/core/logging.h"

namespace dsv4::kernels::cuda {

int device_count() {
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status == cudaErrorNoDevice || status == cudaErrorInsufficientDriver || status == cudaErrorInitializationError) {
    cudaGetLastError();  // clear the sticky-free error so later checks do not see it
    return 0;
  }
  DSV4_CUDA_CHECK(status);
  return count;
}

DeviceInfo device_info(int index) {
  cudaDeviceProp prop{};
  DSV4_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  DeviceInfo info;
  info.index = index;
  info.name = prop.name;
  info.sm_major = prop.major;
  info.sm_minor = prop.minor;
  info.num_sms = prop.multiProcessorCount;
  info.total_memory = prop.totalGlobalMem;
  int current = 0;
  DSV4_CUDA_CHECK(cudaGetDevice(&current));
  DSV4_CUDA_CHECK(cudaSetDevice(index));
  size_t free_bytes = 0, total_bytes = 0;
  DSV4_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  DSV4_CUDA_CHECK(cudaSetDevice(current));
  info.free_memory = free_bytes;
  return info;
}

Stream::Stream() { DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
Stream::~Stream() {
  if (stream_ != nullptr) DSV4_CUDA_CHECK_NOTHROW(cudaStreamDestroy(stream_));
}
void Stream::synchronize() const { DSV4_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

Event::Event() { DSV4_CUDA_CHECK(cudaEventCreate(&event_)); }
Event::~Event() {
  if (event_ != nullptr) DSV4_CUDA_CHECK_NOTHROW(cudaEventDestroy(event_));
}
void Event::record(cudaStream_t stream) { DSV4_CUDA_CHECK(cudaEventRecord(event_, stream)); }
void Event::synchronize() const { DSV4_CUDA_CHECK(cudaEventSynchronize(event_)); }
float Event::elapsed_ms(const Event& start, const Event& end) {
  float ms = 0.0f;
  DSV4_CUDA_CHECK(cudaEventElapsedTime(&ms, start.event_, end.event_));
  return ms;
}

size_t DevicePool::size_class(size_t bytes) { return bytes <= 256 ? 256 : std::bit_ceil(bytes); }

DevicePool::~DevicePool() {
  std::lock_guard lock(mutex_);
  if (!in_use_.empty()) {
    DSV4_LOG(WARN) << "device pool destroyed with " << in_use_.size() << " blocks still in use";
  }
  for (auto& [size, ptr] : free_blocks_) DSV4_CUDA_CHECK_NOTHROW(cudaFree(ptr));
  for (auto& [ptr, size] : in_use_) DSV4_CUDA_CHECK_NOTHROW(cudaFree(ptr));
}

void* DevicePool::allocate(size_t bytes) {
  size_t cls = size_class(bytes);
  std::lock_guard lock(mutex_);
  auto it = free_blocks_.find(cls);
  void* ptr = nullptr;
  if (it != free_blocks_.end()) {
    ptr = it->second;
    free_blocks_.erase(it);
  } else {
    cudaError_t status = cudaMalloc(&ptr, cls);
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      DSV4_THROW(kResourceExhausted) << "device out of memory allocating " << cls << " bytes (" << bytes_reserved_
                                     << " bytes already reserved by this pool)";
    }
    DSV4_CUDA_CHECK(status);
    bytes_reserved_ += cls;
  }
  in_use_.emplace(ptr, cls);
  bytes_in_use_ += cls;
  return ptr;
}

void DevicePool::release(void* ptr) {
  if (ptr == nullptr) return;
  std::lock_guard lock(mutex_);
  auto it = in_use_.find(ptr);
  DSV4_CHECK(it != in_use_.end()) << "release of a pointer this pool did not allocate";
  free_blocks_.emplace(it->second, ptr);
  bytes_in_use_ -= it->second;
  in_use_.erase(it);
}

void DevicePool::trim() {
  std::lock_guard lock(mutex_);
  for (auto& [size, ptr] : free_blocks_) {
    DSV4_CUDA_CHECK(cudaFree(ptr));
    bytes_reserved_ -= size;
  }
  free_blocks_.clear();
}

size_t DevicePool::bytes_in_use() const {
  std::lock_guard lock(mutex_);
  return bytes_in_use_;
}

size_t DevicePool::bytes_reserved() const {
  std::lock_guard lock(mutex_);
  return bytes_reserved_;
}

DeviceBuffer::DeviceBuffer(DevicePool& pool, size_t bytes) : pool_(&pool), data_(pool.allocate(bytes)), size_(bytes) {}

DeviceBuffer::~DeviceBuffer() {
  if (pool_ != nullptr) pool_->release(data_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)), data_(std::exchange(other.data_, nullptr)), size_(other.size_) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (pool_ != nullptr) pool_->release(data_);
    pool_ = std::exchange(other.pool_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    size_ = other.size_;
  }
  return *this;
}

}  // namespace dsv4::kernels::cuda
