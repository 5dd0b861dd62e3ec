// Continuous-batching scheduler (rank 0): turns queued requests into StepPlans.
//
// Each step it spends a token budget, in this order:
//   1. one decode token for every running sequence that has a sampled token to feed (oldest admission first);
//   2. the next prefill chunk of every running sequence still prefilling (oldest first), as large as the
//      remaining budget and the chunk cap allow;
//   3. admission from the head of the FIFO queue while the sequence cap, the state budget and the token budget
//      allow; a newly admitted request gets its first prefill chunk in the same step.
// Admission is strictly FIFO (the head is never overtaken, so a large request cannot starve). A sequence
// reserves the state of its whole possible length (prompt + max new tokens) at admission, priced by
// `StateCostFn` (sequence_bytes of runtime/kv), so a running sequence never runs out of state and nothing has
// to be preempted. Finished or cancelled sequences are listed in the next plan's free_sequences.
//
// Data parallelism: each admitted sequence is assigned to one attention replica (SequenceWork.dp_rank) for its
// whole life, the least loaded one by tokens (prompt + max new tokens of its running sequences; ties: the lowest
// replica) among those whose state budget still has room; the state budget is per replica (each replica holds
// its own sequences' state). Every work item marked `sample` comes with the sequence's SamplingPlan (what the
// vocabulary shards need to reduce their logits to candidates).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <unordered_map>
#include <vector>

#include "dsv4/v1/control.pb.h"

namespace dsv4::serve {

struct SchedulerLimits {
  /// Bytes of sequence state the running sequences of one replica may reserve together (> 0).
  int64_t state_budget_bytes = 0;
  /// Tokens (decode + prefill) per step (> 0, >= max_running so every running sequence can decode).
  int64_t max_step_tokens = 256;
  /// Sequences running at once (> 0).
  int32_t max_running = 64;
  /// Largest prefill chunk of one sequence in one step; 0 = only the token budget limits it.
  int64_t max_prefill_chunk = 0;
  /// Attention replicas (> 0); state_budget_bytes applies to each.
  int32_t dp_size = 1;
};

/// Bytes of state one sequence holds at `tokens` tokens of context.
using StateCostFn = std::function<int64_t(int64_t tokens)>;

class Scheduler {
 public:
  /// Throws kInvalidArgument on limits outside their ranges.
  Scheduler(SchedulerLimits limits, StateCostFn cost);

  /// Queues a request. Throws kInvalidArgument for an empty prompt or max_new_tokens <= 0, kResourceExhausted
  /// when its reservation exceeds the whole state budget (it could never run), kInternal for a duplicate id.
  /// `sampling` (its sequence_id is set here) goes into every plan that samples the sequence; the default is
  /// greedy.
  void enqueue(uint64_t id, std::vector<int32_t> prompt, int64_t max_new_tokens, v1::SamplingPlan sampling = {});

  /// The next step. Every sequence marked `sample` must get on_sampled() (or cancel()) before the next call.
  v1::StepPlan next_plan();

  /// The token sampled for `id` after the last plan. When `finished`, the sequence is freed in the next plan;
  /// otherwise `token` is fed to the model in a later step.
  void on_sampled(uint64_t id, int32_t token, bool finished);

  /// Removes a queued request, or stops a running one (freed in the next plan). False when `id` is unknown.
  bool cancel(uint64_t id);

  /// Nothing queued, running or waiting to be freed.
  bool idle() const { return queue_.empty() && running_.empty() && pending_free_.empty(); }
  size_t queued() const { return queue_.size(); }
  size_t running() const { return running_.size(); }
  /// Sum of the running sequences' reservations (all replicas).
  int64_t reserved_bytes() const { return reserved_bytes_; }
  /// The replica a running sequence is assigned to; -1 when `id` is not running.
  int32_t replica_of(uint64_t id) const;
  const SchedulerLimits& limits() const { return limits_; }
  /// The reservation of a request of this size (what admission compares with the budget).
  int64_t reservation(int64_t prompt_tokens, int64_t max_new_tokens) const;

 private:
  struct Sequence {
    uint64_t id = 0;
    std::vector<int32_t> prompt;
    int64_t max_new_tokens = 0;
    int64_t reserved = 0;
    int64_t fed = 0;            // tokens given to the model so far (= the engine's state length)
    bool awaiting_sample = false;
    bool has_next = false;      // a sampled token waits to be fed
    int32_t next_token = 0;
    int32_t dp_rank = 0;
    int64_t tokens = 0;         // prompt + max new tokens: the load it puts on its replica
    int64_t sampled = 0;        // tokens sampled so far (SamplingPlan.step)
    v1::SamplingPlan sampling;
  };

  void add_chunk(v1::StepPlan& plan, Sequence& seq, int64_t& budget);
  void add_sampling(v1::StepPlan& plan, const Sequence& seq) const;
  // Gives a running sequence's reservation and load back.
  void release(const Sequence& seq);
  // The replica the queue's head goes to, or -1 when no replica's budget has room for it.
  int32_t pick_replica(const Sequence& seq) const;

  SchedulerLimits limits_;
  StateCostFn cost_;
  std::deque<Sequence> queue_;
  std::vector<Sequence> running_;  // in admission order
  std::vector<uint64_t> pending_free_;
  int64_t reserved_bytes_ = 0;
  std::vector<int64_t> replica_reserved_;  // bytes reserved per replica
  std::vector<int64_t> replica_tokens_;    // Sequence::tokens summed per replica
  uint64_t step_id_ = 0;
};

}  // namespace dsv4::serve
