// Device runtime plumbing on a real GPU: pool recycling, streams/events, poison fill. Skips without a device.
#include <gtest/gtest.h>

#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/poison.h"

namespace dsv4::kernels::cuda {
namespace {

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (device_count() == 0) GTEST_SKIP() << "no CUDA device";
  }
};

TEST(GpuDiscovery, DeviceCountNeverThrows) { EXPECT_GE(device_count(), 0); }

TEST_F(GpuTest, PoolRecyclesBlocksBySizeClass) {
  DevicePool pool;
  void* a = pool.allocate(1000);
  EXPECT_EQ(pool.bytes_in_use(), 1024u);
  pool.release(a);
  void* b = pool.allocate(900);  // same size class: the same block comes back, no new cudaMalloc
  EXPECT_EQ(a, b);
  EXPECT_EQ(pool.bytes_reserved(), 1024u);
  pool.release(b);
  pool.trim();
  EXPECT_EQ(pool.bytes_reserved(), 0u);
}

TEST_F(GpuTest, PoisonWritesEveryByteAndEventsTime) {
  DevicePool pool;
  Stream stream;
  constexpr size_t kBytes = 1 << 20;
  DeviceBuffer buffer(pool, kBytes);
  Event start, end;
  start.record(stream.get());
  poison(buffer.data(), kBytes, 0xA5, stream.get());
  end.record(stream.get());
  std::vector<uint8_t> host(kBytes, 0);
  DSV4_CUDA_CHECK(cudaMemcpyAsync(host.data(), buffer.data(), kBytes, cudaMemcpyDeviceToHost, stream.get()));
  stream.synchronize();
  for (size_t i = 0; i < kBytes; ++i) ASSERT_EQ(host[i], 0xA5) << "byte " << i;
  EXPECT_GE(Event::elapsed_ms(start, end), 0.0f);
}

TEST_F(GpuTest, OutOfMemoryIsAClearError) {
  DevicePool pool;
  DeviceInfo info = device_info(0);
  EXPECT_THROW(pool.allocate(info.total_memory * 4), Error);
}

}  // namespace
}  // namespace dsv4::kernels::cuda
