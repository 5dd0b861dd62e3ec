// StateHandover, the hand-over of the two-micro-batch pipeline (runtime/model/model_pipeline.cc): micro-batch B
// may enter a layer slot only once A released it, A's release of a later slot releases the earlier ones, and a
// failed A wakes a waiting B with an error instead of leaving it waiting.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "runtime/core/error.h"
#include "runtime/model/layers.h"

namespace dsv4::model_detail {
namespace {

using namespace std::chrono_literals;

TEST(StateHandover, AcquireWaitsForRelease) {
  StateHandover h;
  std::atomic<int> entered{-1};
  std::thread b([&] {
    for (int slot = 0; slot < 3; ++slot) {
      h.acquire(slot);
      entered = slot;
    }
  });
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(entered.load(), -1) << "B entered slot 0 before A released it";
  h.release(0);
  for (int i = 0; i < 200 && entered.load() < 0; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(entered.load(), 0);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(entered.load(), 0) << "B entered slot 1 before A released it";
  h.release(2);  // releases 1 and 2 too
  b.join();
  EXPECT_EQ(entered.load(), 2);
  h.release(1);  // an earlier slot again changes nothing
  h.acquire(2);
}

TEST(StateHandover, FailWakesWaiterWithError) {
  StateHandover h;
  h.release(0);
  std::atomic<bool> threw{false};
  std::thread b([&] {
    h.acquire(0);
    try {
      h.acquire(1);
    } catch (const Error& e) {
      threw = e.code() == ErrorCode::kInternal;
    }
  });
  std::this_thread::sleep_for(20ms);
  h.fail();
  b.join();
  EXPECT_TRUE(threw.load());
  EXPECT_THROW(h.acquire(5), Error);
}

}  // namespace
}  // namespace dsv4::model_detail
