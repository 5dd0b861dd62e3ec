// Engine: the per-rank executor of a StepPlan (proto/dsv4/v1/control.proto).
//
// Every rank of the job runs Engine::step(plan) on the same plan in lock-step:
//   - each DP replica (its TP x CP ranks of the Mesh) runs the work items whose dp_rank is its own, in one
//     batched Model::forward; a replica with no items of its own still calls forward with zero chunks, because
//     the MoE exchange spans every rank of the EP group (every rank calls forward once per non-empty plan);
//   - with context parallelism the CP ranks of a replica run the same chunks, each holding its share of every
//     sequence's compressed rows (Model::new_sequence shards them), and end with the same logits: the TP ranks
//     of CP rank 0 report the candidates, the other CP ranks only join the collectives;
//   - for the items marked `sample`, each TP rank reduces its vocabulary shard of the last position's logits
//     to ShardCandidates (runtime/engine/sampler.h) with the item's SamplingPlan; the candidates (a few KB)
//     are sent to rank 0, which merges them. When a merged set cannot decide the sample exactly (a top-p /
//     min-p set reaching past the candidates, or an untruncated draw landing beyond their mass), rank 0
//     broadcasts a wider count and the shards report again: more than the first few hundred tokens per shard
//     are only sent when the distribution and the draw need them.
// Rank 0 then samples with each request's own random stream (GenerationStream::step(MergedCandidates)).
//
// A single-process engine (no world communicator) is the same with one replica and one shard.
#pragma once

#include <cstdint>
#include <functional>
#include <unordered_map>
#include <vector>

#include "dsv4/v1/control.pb.h"
#include "parallel/communicator.h"
#include "parallel/mesh.h"
#include "runtime/engine/sampler.h"
#include "runtime/model/model.h"

namespace dsv4 {

/// The merged sampling candidates of one sequence the plan asked to sample (rank 0 only).
struct SampledCandidates {
  uint64_t sequence_id = 0;
  MergedCandidates candidates;
};

/// Rank 0's test of whether merged candidates decide a sequence's next sample (e.g. GenerationStream::
/// candidates_suffice, which knows the stream's next random draw); false makes the shards report more.
using CandidateCheck =
    std::function<bool(uint64_t sequence_id, const MergedCandidates& merged, int32_t count_per_shard, bool all_in)>;

/// The sampling parameters a SamplingPlan carries (what the shards need: temperature, top-k, top-p, min-p,
/// top logprobs; the seed is used by rank 0's stream).
SamplingParams sampling_params_of(const v1::SamplingPlan& plan);
/// The SamplingPlan entry for a request's parameters.
v1::SamplingPlan sampling_plan_of(uint64_t sequence_id, const SamplingParams& params);

class Engine {
 public:
  /// A single-process engine over a whole model. The model must outlive the engine.
  explicit Engine(Model& model);
  /// One rank of a sharded job: `world` spans every rank (rank 0 merges the candidates), `mesh` is the layout
  /// the model's shard and groups were made from (any dp, tp, ep, cp). Model and world must outlive the engine.
  Engine(Model& model, parallel::Communicator& world, const parallel::Mesh& mesh);

  /// Frees plan.free_sequences (those this rank holds), then runs the work items of this rank's replica in one
  /// batched forward. A work item whose start_position is 0 creates the sequence's state; otherwise
  /// start_position must equal the state's length (the plan and the engine agree on every sequence's progress,
  /// or the plan is rejected with kInternal). Every item marked `sample` needs a SamplingPlan entry.
  /// Collective over the world. Returns, on rank 0, the merged candidates of the `sample` items in plan order;
  /// an empty vector on the other ranks. `check` (rank 0; empty: candidates_suffice of the plan's parameters,
  /// which is exact for every draw) decides when the candidates suffice.
  std::vector<SampledCandidates> step(const v1::StepPlan& plan, const CandidateCheck& check = {});

  /// Sequences holding state on this rank (its replica's; with cp > 1, this rank's share of each).
  size_t num_sequences() const { return states_.size(); }
  /// Books the state of sequences created from now on to `pool` (runtime/kv/state_pool.h), which must outlive
  /// the engine; null (the default) gives each sequence a private unlimited pool. A full pool fails the step
  /// with Error(kResourceExhausted) before any state changes; the scheduler's admission prevents that when
  /// its cost function is cpu_state_bytes and its budget the pool's.
  void set_state_pool(StatePool* pool) { state_pool_ = pool; }
  StatePool* state_pool() const { return state_pool_; }
  /// Bytes of state the live sequences of this rank hold (SequenceState::memory_bytes; its CP share).
  int64_t state_bytes() const;
  const Model& model() const { return *model_; }
  /// This rank's attention replica and the number of replicas.
  int dp_rank() const { return dp_rank_; }
  int dp_size() const { return dp_size_; }
  /// Ranks each sequence's state is sharded over (the context-parallel group), and this rank's place in it.
  int cp_rank() const { return cp_rank_; }
  int cp_size() const { return cp_size_; }

 private:
  struct SampleItem {
    uint64_t sequence_id = 0;
    int dp_rank = 0;
    int row = -1;  // row of this rank's logits (-1: another replica's item)
    SamplingParams params;
  };
  // Reduces the sample items' logits to candidates, gathers them on rank 0 and merges them there.
  std::vector<SampledCandidates> gather_candidates(const std::vector<SampleItem>& items, const ForwardOutput& out,
                                                   const CandidateCheck& check);

  Model* model_;
  parallel::Communicator* world_ = nullptr;  // null: single process
  std::vector<int> replica_ranks_;           // world ranks of replica d's tp ranks: [d * tp + t]
  int dp_rank_ = 0, dp_size_ = 1, tp_size_ = 1, cp_rank_ = 0, cp_size_ = 1;
  std::unordered_map<uint64_t, SequenceState> states_;
  StatePool* state_pool_ = nullptr;
};

}  // namespace dsv4
