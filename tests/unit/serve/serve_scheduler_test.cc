// Scheduler tests against a fake engine that tracks each sequence's length the way Engine::step does.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "runtime/core/error.h"
#include "runtime/serve/scheduler.h"

namespace dsv4::serve {
namespace {

// 100 bytes per token: reservations are easy to reason about.
int64_t cost(int64_t tokens) { return 100 * tokens; }

// Plays the engine: checks every plan against its own sequence lengths, returns the ids to sample.
struct FakeEngine {
  std::map<uint64_t, int64_t> length;
  std::vector<uint64_t> step(const v1::StepPlan& plan, int64_t max_tokens) {
    for (uint64_t id : plan.free_sequences()) EXPECT_EQ(length.erase(id), 1u) << "free of unknown " << id;
    std::vector<uint64_t> sampled;
    int64_t tokens = 0;
    std::set<uint64_t> seen;
    for (const auto& w : plan.work()) {
      EXPECT_TRUE(seen.insert(w.sequence_id()).second) << "sequence twice in one plan";
      EXPECT_FALSE(w.token_ids().empty());
      if (w.start_position() == 0) EXPECT_EQ(length.count(w.sequence_id()), 0u);
      EXPECT_EQ(length[w.sequence_id()], w.start_position());
      length[w.sequence_id()] += w.token_ids_size();
      tokens += w.token_ids_size();
      if (w.sample()) sampled.push_back(w.sequence_id());
    }
    EXPECT_LE(tokens, max_tokens);
    return sampled;
  }
};

std::vector<int32_t> prompt(int n) { return std::vector<int32_t>(static_cast<size_t>(n), 7); }

TEST(ServeScheduler, ChunkedPrefillThenDecodeUntilMaxTokens) {
  Scheduler s({.state_budget_bytes = 100000, .max_step_tokens = 4, .max_running = 2}, cost);
  s.enqueue(1, prompt(10), 3);
  FakeEngine engine;
  std::vector<int64_t> chunk_sizes;
  int generated = 0;
  for (int step = 0; step < 20 && !s.idle(); ++step) {
    v1::StepPlan plan = s.next_plan();
    for (const auto& w : plan.work()) chunk_sizes.push_back(w.token_ids_size());
    for (uint64_t id : engine.step(plan, 4)) {
      ++generated;
      s.on_sampled(id, 42, /*finished=*/generated == 3);
    }
  }
  EXPECT_TRUE(s.idle());
  EXPECT_EQ(generated, 3);
  // 10 prompt tokens in chunks of 4, 4, 2, then two decode tokens (the third sampled token is not fed).
  EXPECT_EQ(chunk_sizes, (std::vector<int64_t>{4, 4, 2, 1, 1}));
  EXPECT_TRUE(engine.length.empty()) << "the finished sequence was freed";
  EXPECT_EQ(s.reserved_bytes(), 0);
}

TEST(ServeScheduler, AdmissionByStateBudgetIsFifo) {
  // Each request of 5 prompt + 6 new tokens reserves 100 * 10 bytes; the budget holds two.
  Scheduler s({.state_budget_bytes = 2000, .max_step_tokens = 64, .max_running = 8}, cost);
  EXPECT_EQ(s.reservation(5, 6), 1000);
  for (uint64_t id = 1; id <= 4; ++id) s.enqueue(id, prompt(5), 6);
  v1::StepPlan plan = s.next_plan();
  ASSERT_EQ(plan.work_size(), 2);
  EXPECT_EQ(plan.work(0).sequence_id(), 1u);
  EXPECT_EQ(plan.work(1).sequence_id(), 2u);
  EXPECT_EQ(s.queued(), 2u);
  EXPECT_EQ(s.reserved_bytes(), 2000);
  s.on_sampled(1, 9, /*finished=*/true);  // frees room for exactly one more: the queue head (3), not 4
  s.on_sampled(2, 9, false);
  plan = s.next_plan();
  ASSERT_EQ(plan.free_sequences_size(), 1);
  EXPECT_EQ(plan.free_sequences(0), 1u);
  ASSERT_EQ(plan.work_size(), 2);
  EXPECT_EQ(plan.work(0).sequence_id(), 2u);  // decode first
  EXPECT_EQ(plan.work(0).token_ids_size(), 1);
  EXPECT_EQ(plan.work(0).token_ids(0), 9);
  EXPECT_EQ(plan.work(1).sequence_id(), 3u);  // then the FIFO head's prefill
  EXPECT_EQ(s.queued(), 1u);
}

TEST(ServeScheduler, LargeHeadIsNotOvertaken) {
  Scheduler s({.state_budget_bytes = 3000, .max_step_tokens = 64, .max_running = 8}, cost);
  s.enqueue(1, prompt(10), 11);  // 2000 bytes
  s.enqueue(2, prompt(20), 6);   // 2500 bytes: does not fit next to 1
  s.enqueue(3, prompt(2), 2);    // 300 bytes: would fit, but must wait behind 2
  v1::StepPlan plan = s.next_plan();
  ASSERT_EQ(plan.work_size(), 1);
  EXPECT_EQ(plan.work(0).sequence_id(), 1u);
  s.on_sampled(1, 5, true);
  plan = s.next_plan();
  ASSERT_EQ(plan.work_size(), 2);
  EXPECT_EQ(plan.work(0).sequence_id(), 2u);
  EXPECT_EQ(plan.work(1).sequence_id(), 3u);
}

TEST(ServeScheduler, TokenBudgetSharedByDecodeAndPrefill) {
  Scheduler s({.state_budget_bytes = 1 << 30, .max_step_tokens = 8, .max_running = 4}, cost);
  FakeEngine engine;
  for (uint64_t id = 1; id <= 3; ++id) s.enqueue(id, prompt(3), 50);
  // Step 0: 3 + 3 = 6 tokens of prefill, request 3 gets the 2 tokens left (no sample yet).
  v1::StepPlan plan = s.next_plan();
  ASSERT_EQ(plan.work_size(), 3);
  EXPECT_EQ(plan.work(2).token_ids_size(), 2);
  EXPECT_FALSE(plan.work(2).sample());
  for (uint64_t id : engine.step(plan, 8)) s.on_sampled(id, 1, false);
  s.enqueue(4, prompt(30), 5);
  // Step 1: decode for 1 and 2, the last token of 3's prompt, then 5 tokens of 4's prompt.
  plan = s.next_plan();
  ASSERT_EQ(plan.work_size(), 4);
  EXPECT_EQ(plan.work(0).token_ids_size(), 1);
  EXPECT_EQ(plan.work(1).token_ids_size(), 1);
  EXPECT_EQ(plan.work(2).sequence_id(), 3u);
  EXPECT_EQ(plan.work(2).token_ids_size(), 1);
  EXPECT_TRUE(plan.work(2).sample());
  EXPECT_EQ(plan.work(3).sequence_id(), 4u);
  EXPECT_EQ(plan.work(3).token_ids_size(), 5);
  engine.step(plan, 8);
}

TEST(ServeScheduler, MaxRunningAndPrefillChunkCap) {
  Scheduler s({.state_budget_bytes = 1 << 30, .max_step_tokens = 16, .max_running = 2, .max_prefill_chunk = 3},
              cost);
  for (uint64_t id = 1; id <= 3; ++id) s.enqueue(id, prompt(7), 4);
  v1::StepPlan plan = s.next_plan();
  ASSERT_EQ(plan.work_size(), 2);
  EXPECT_EQ(plan.work(0).token_ids_size(), 3);
  EXPECT_EQ(plan.work(1).token_ids_size(), 3);
  EXPECT_EQ(s.running(), 2u);
  EXPECT_EQ(s.queued(), 1u);
}

TEST(ServeScheduler, CancelQueuedAndRunning) {
  Scheduler s({.state_budget_bytes = 1000, .max_step_tokens = 16, .max_running = 4}, cost);
  s.enqueue(1, prompt(4), 3);  // 600 bytes
  s.enqueue(2, prompt(4), 3);  // waits for budget
  v1::StepPlan plan = s.next_plan();
  ASSERT_EQ(plan.work_size(), 1);
  s.on_sampled(1, 3, false);
  EXPECT_TRUE(s.cancel(2));   // queued: just removed
  EXPECT_TRUE(s.cancel(1));   // running: freed in the next plan
  EXPECT_FALSE(s.cancel(1));
  EXPECT_FALSE(s.cancel(99));
  EXPECT_EQ(s.reserved_bytes(), 0);
  plan = s.next_plan();
  EXPECT_EQ(plan.work_size(), 0);
  ASSERT_EQ(plan.free_sequences_size(), 1);
  EXPECT_EQ(plan.free_sequences(0), 1u);
  EXPECT_TRUE(s.idle());
}

TEST(ServeScheduler, ManySequencesAllFinishAndFreeEverything) {
  Scheduler s({.state_budget_bytes = 6000, .max_step_tokens = 12, .max_running = 5, .max_prefill_chunk = 4}, cost);
  FakeEngine engine;
  std::map<uint64_t, int> want, got;
  for (uint64_t id = 1; id <= 20; ++id) {
    want[id] = 1 + static_cast<int>(id % 4);
    s.enqueue(id, prompt(1 + static_cast<int>(id * 3 % 9)), want[id]);
  }
  for (int step = 0; step < 500 && !s.idle(); ++step) {
    v1::StepPlan plan = s.next_plan();
    EXPECT_LE(s.reserved_bytes(), 6000);
    EXPECT_LE(s.running(), 5u);
    for (uint64_t id : engine.step(plan, 12)) {
      ++got[id];
      s.on_sampled(id, 1, got[id] == want[id]);
    }
  }
  EXPECT_TRUE(s.idle());
  EXPECT_EQ(got, want);
  EXPECT_TRUE(engine.length.empty());
}

TEST(ServeScheduler, RejectsImpossibleRequestsAndBadLimits) {
  Scheduler s({.state_budget_bytes = 1000, .max_step_tokens = 16, .max_running = 4}, cost);
  try {
    s.enqueue(1, prompt(8), 8);  // 1500 bytes > the whole budget
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kResourceExhausted);
  }
  EXPECT_THROW(s.enqueue(2, {}, 3), Error);
  EXPECT_THROW(s.enqueue(3, prompt(2), 0), Error);
  EXPECT_THROW(Scheduler({.state_budget_bytes = 0, .max_step_tokens = 16, .max_running = 4}, cost), Error);
  EXPECT_THROW(Scheduler({.state_budget_bytes = 10, .max_step_tokens = 2, .max_running = 4}, cost), Error);
  EXPECT_TRUE(s.idle());
}


// Data parallelism: each admitted sequence goes to the replica with the fewest tokens (prompt + max new) among
// those whose own state budget has room, keeps it for life, and every sampled item carries its SamplingPlan.
TEST(ServeScheduler, SpreadsSequencesOverReplicasByTokens) {
  // Budget per replica: 2000 bytes; a request reserves 100 B x (prompt + max new - 1).
  Scheduler s({.state_budget_bytes = 2000, .max_step_tokens = 64, .max_running = 8, .dp_size = 2}, cost);
  v1::SamplingPlan hot;
  hot.set_temperature(0.7f);
  hot.set_top_k(5);
  s.enqueue(1, prompt(10), 5, hot);  // load 15 tokens, 1400 B -> replica 0 (both empty: the lowest)
  s.enqueue(2, prompt(3), 2);        // load 5, 400 B -> replica 1 (0 tokens < 15)
  s.enqueue(3, prompt(4), 2);        // load 6, 500 B -> replica 1 (5 < 15)
  s.enqueue(4, prompt(4), 2);        // load 6, 500 B -> replica 1 (11 < 15; 900 + 500 <= 2000)
  s.enqueue(5, prompt(5), 3);        // 700 B: fits neither (1400 + 700, 1400 + 700 > 2000): waits
  const v1::StepPlan plan = s.next_plan();
  std::map<uint64_t, int32_t> replica;
  for (const auto& w : plan.work()) replica[w.sequence_id()] = w.dp_rank();
  EXPECT_EQ(replica, (std::map<uint64_t, int32_t>{{1, 0}, {2, 1}, {3, 1}, {4, 1}}));
  EXPECT_EQ(s.queued(), 1u);
  EXPECT_EQ(s.replica_of(4), 1);
  EXPECT_EQ(s.replica_of(5), -1);
  // Every sampled item has its sampling parameters in the plan.
  ASSERT_EQ(plan.sampling_size(), 4);
  for (const auto& sp : plan.sampling()) {
    if (sp.sequence_id() == 1) {
      EXPECT_FLOAT_EQ(sp.temperature(), 0.7f);
      EXPECT_EQ(sp.top_k(), 5);
    } else {
      EXPECT_EQ(sp.temperature(), 0.0f);
    }
    EXPECT_EQ(sp.step(), 0u);
  }
  // Sequence 1 finishes: replica 0 has room again and takes the waiting request.
  s.on_sampled(1, 9, /*finished=*/true);
  for (uint64_t id : {2, 3, 4}) s.on_sampled(id, 9, false);
  const v1::StepPlan next = s.next_plan();
  for (const auto& w : next.work()) {
    if (w.sequence_id() == 5) EXPECT_EQ(w.dp_rank(), 0);
    if (w.sequence_id() == 2) EXPECT_EQ(w.dp_rank(), 1);  // a running sequence keeps its replica
  }
  EXPECT_EQ(s.replica_of(5), 0);
  for (const auto& sp : next.sampling()) {
    if (sp.sequence_id() == 2) EXPECT_EQ(sp.step(), 1u);  // one token sampled so far
  }
}

}  // namespace
}  // namespace dsv4::serve
