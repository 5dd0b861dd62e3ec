// Engine: the per-rank executor of a StepPlan (proto/dsv4/v1/control.proto).
//
// Every rank of the job runs Engine::step(plan) on the same plan in lock-step. For now each rank holds a full
// replica of the model (Model over the whole checkpoint), so every rank computes the same rows; the sharded
// model (tensor / expert parallel weights, vocab-sharded head and per-shard sampling candidates) is issue 4,
// and will replace the body of step() without changing this interface.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "dsv4/v1/control.pb.h"
#include "runtime/model/model.h"

namespace dsv4 {

/// Logits of the last position of one sequence that the plan asked to sample.
struct SampledLogits {
  uint64_t sequence_id = 0;
  std::vector<float> logits;  // [vocab]
};

class Engine {
 public:
  /// The model must outlive the engine.
  explicit Engine(Model& model) : model_(&model) {}

  /// Frees plan.free_sequences, then runs every work item in one batched forward. A work item whose
  /// start_position is 0 creates the sequence's state; otherwise start_position must equal the state's length
  /// (the plan and the engine agree on every sequence's progress, or the plan is rejected with kInternal).
  /// Returns the last-position logits of the items with `sample` set, in plan order.
  std::vector<SampledLogits> step(const v1::StepPlan& plan);

  /// Sequences holding state now.
  size_t num_sequences() const { return states_.size(); }
  /// Bytes of state the live sequences hold (SequenceState::memory_bytes).
  int64_t state_bytes() const;
  const Model& model() const { return *model_; }

 private:
  Model* model_;
  std::unordered_map<uint64_t, SequenceState> states_;
};

}  // namespace dsv4
