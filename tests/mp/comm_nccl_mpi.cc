// The shared communicator cases (comm_core.h) over the NCCL backend with device buffers, launched by
// mpirun (one GPU per rank). Skips cleanly where there is no CUDA device or fewer devices than ranks.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "parallel/communicator.h"
#include "tests/mp/comm_core.h"
#include "tests/support/mpi_test_env.h"

namespace dsv4::parallel {
namespace {

void cuda_ok(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

class DeviceMemory final : public testing::CommMemory {
 public:
  DeviceMemory() { cuda_ok(cudaStreamCreate(&stream_), "cudaStreamCreate"); }
  ~DeviceMemory() override { cudaStreamDestroy(stream_); }
  void* allocate(size_t bytes) override {
    void* ptr = nullptr;
    cuda_ok(cudaMalloc(&ptr, bytes ? bytes : 1), "cudaMalloc");
    return ptr;
  }
  void release(void* ptr) override {
    cudaStreamSynchronize(stream_);
    cudaFree(ptr);
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    cuda_ok(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    cuda_ok(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  void download(void* dst, const void* src, size_t bytes) override {
    cuda_ok(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");  // NCCL work is asynchronous
    cuda_ok(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
  }
  Stream stream() override { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

class CommNccl : public ::testing::Test {
 protected:
  void SetUp() override {
    Bootstrap& world = dsv4::testing::mpi_world_bootstrap();
    int devices = 0;
    const cudaError_t status = cudaGetDeviceCount(&devices);
    // The same answer on every rank of one machine, so every rank skips together (no collective is left
    // half-joined).
    if (status != cudaSuccess || devices == 0) GTEST_SKIP() << "no CUDA device: " << cudaGetErrorString(status);
    if (devices < world.size()) GTEST_SKIP() << devices << " CUDA devices for " << world.size() << " ranks";
    cuda_ok(cudaSetDevice(world.rank() % devices), "cudaSetDevice");
    comm_ = make_communicator("nccl", world);
    memory_ = std::make_unique<DeviceMemory>();
  }
  std::unique_ptr<Communicator> comm_;
  std::unique_ptr<DeviceMemory> memory_;
  // NCCL reduces in its own order: the bitwise rank-order case does not apply.
  testing::CoreOptions options_{.rank_ordered_reductions = false};
};

TEST_F(CommNccl, AllReduce) { testing::case_all_reduce(*comm_, *memory_, options_); }
TEST_F(CommNccl, AllGather) { testing::case_all_gather(*comm_, *memory_); }
TEST_F(CommNccl, ReduceScatter) { testing::case_reduce_scatter(*comm_, *memory_); }
TEST_F(CommNccl, AllToAllV) { testing::case_all_to_all_v(*comm_, *memory_); }
TEST_F(CommNccl, Broadcast) { testing::case_broadcast(*comm_, *memory_); }
TEST_F(CommNccl, SendRecvRing) { testing::case_send_recv_ring(*comm_, *memory_); }
TEST_F(CommNccl, Split) { testing::case_split(*comm_, *memory_); }
TEST_F(CommNccl, Identity) { EXPECT_EQ(comm_->backend_name(), "nccl"); }

}  // namespace
}  // namespace dsv4::parallel
