// How one rank of a sharded model talks to the others: the communicators of its groups, built from the
// world communicator and the Mesh, and the switches that change reduction order.
//
// The model on many ranks (ARCHITECTURE.md, "parallel layout"):
//   - TP group (consecutive ranks): attention heads and output groups, the shared expert's intermediate
//     columns and the vocabulary (embedding rows, LM-head rows) are split over it. The single KV head, the
//     compressors, the indexer, the router and the HC mixers are computed by every TP rank (they are small,
//     and the sequence state stays whole on each rank of the group). Row-parallel projections (wo_b, the
//     shared expert's w2) end in a reduction over the group; the vocabulary-sharded embedding ends in a sum
//     with zeros (exact); the head leaves logits sharded (sampling merges per-shard candidates).
//   - EP group: routed experts in contiguous blocks. The TP ranks of one replica see the same rows, so
//     each dispatches a disjoint contiguous block of them (rows [t*r/tp, t*(r+1)/tp) for tp rank r), and the
//     combined outputs are summed back over the TP group together with the shared expert.
//   - DP: replicas (distinct TP groups) serve distinct sequences; EP spans them, so every rank of the EP
//     group must call forward() the same number of times, with zero chunks when its replica has no work.
//
// Deterministic mode fixes every reduction order so that logits are bitwise identical for every layout and
// batch composition: a row-parallel projection is computed as a sum of fixed column chunks (one per output
// group for wo_b, one per 128 columns for the shared w2) whose partials are gathered and added in chunk
// order on every rank, whatever tp is; the routed experts' outputs are summed in top-k order (the
// MoeDispatcher's combine order) on every layout including a single process; and attention over compressed
// rows merges softmax partials over kCpVirtualShards fixed row sets in shard order, whatever cp is (a single
// process runs its batch as a one-rank context-parallel split).
#pragma once

#include <memory>

#include "parallel/communicator.h"
#include "parallel/mesh.h"
#include "runtime/config/model_config.h"

namespace dsv4 {

/// Deterministic mode with context parallelism: the softmax over compressed rows is merged from partials over
/// this many virtual shards (row w in shard w % kCpVirtualShards) on every layout, CP = 1 included, so CP
/// group sizes that divide it give logits bitwise equal to CP = 1 (runtime/model/context_parallel_attention.cc).
inline constexpr int kCpVirtualShards = 8;

/// The communicators one rank's model uses. Pointers are not owned (see ModelGroups); a group of size 1
/// means "not split" and its collectives are local copies.
struct ModelParallel {
  parallel::Communicator* tp = nullptr;  // required: the TP group (size 1 without TP)
  parallel::Communicator* ep = nullptr;  // required: the EP group (size 1 without EP)
  bool deterministic = false;
  /// Optional: the context-parallel group sharing each sequence (null or size 1: no CP). Its ranks receive
  /// the same chunks and each runs a contiguous sub-block of every chunk; the compressed and indexer rows are
  /// sharded round robin over it and attention partials merge across it
  /// (runtime/model/context_parallel_attention.cc). In deterministic mode its size must divide
  /// kCpVirtualShards.
  parallel::Communicator* cp = nullptr;
  /// Context parallelism on chunks long enough: run the row gather's second step, the top-k exchange and the
  /// partials' exchange of an attention layer beside the compute that does not need them, on a helper
  /// thread (runtime/model/context_parallel_attention.cc). Off: the same arithmetic in sequence (bitwise the
  /// same logits; for tests and measurements). Every rank of a CP group must pass the same value.
  bool cp_overlap = true;
  /// Two-micro-batch pipeline (runtime/model/model_pipeline.cc): a forward with a chunk of at least
  /// `pipeline_min_tokens` tokens is cut into micro-batches A (the first half of each long chunk, and the short
  /// chunks) and B (the second halves), run by two threads in lockstep through the layers: B's attention of a
  /// layer follows A's (it continues A's sequences), so each micro-batch's exchanges (row gathers, partials,
  /// top-k, TP sums, MoE dispatch and combine) run while the other computes. B uses `second`: groups with the
  /// same members as tp / ep / cp and their own communicators. Null groups, a backend without concurrent
  /// communicators (MPI below MPI_THREAD_MULTIPLE) or pipeline_min_tokens <= 0: every forward is one batch.
  /// The logits are those of the two halves run as consecutive chunks (bitwise in deterministic mode).
  struct Groups {
    parallel::Communicator* tp = nullptr;
    parallel::Communicator* ep = nullptr;
    parallel::Communicator* cp = nullptr;  // may be null when cp is
  };
  Groups second{};
  int64_t pipeline_min_tokens = 256;
  /// Set when the EP group holds ranks of other DP replicas (which pass other batches): every forward then
  /// agrees over the EP group whether to pipeline (one small all_gather), since B's MoE exchange runs on
  /// second.ep.
  bool pipeline_agree_over_ep = false;
};

/// Owns the split communicators of one rank. make_model_groups() is collective over `world`.
struct ModelGroups {
  parallel::Mesh mesh;
  int rank = 0;
  std::unique_ptr<parallel::Communicator> tp, ep, dp, cp;
  /// The second micro-batch's copies of tp, ep and cp (ModelParallel::second); null when the layout cannot
  /// pipeline (EP groups that cut a DP replica without holding it whole: the pipeline decision could not be
  /// agreed on by one EP exchange).
  std::unique_ptr<parallel::Communicator> tp2, ep2, cp2;
  ModelParallel parallel(bool deterministic) const;
};

/// The mesh dimensions of `config` (heads, output groups, routed experts, shared-expert width, FP8 block).
parallel::MeshModelDims mesh_dims(const ModelConfig& config);

/// Splits `world` into this rank's TP, EP, DP and CP groups and the pipeline's second TP, EP and CP groups
/// (collective over `world`; every rank calls it).
ModelGroups make_model_groups(parallel::Communicator& world, const parallel::Mesh& mesh);

/// A one-rank world for single-process use (in-process communicators of size 1): what Model::from_checkpoint
/// uses when no layout is given.
struct LocalGroups {
  LocalGroups();
  ~LocalGroups();
  ModelParallel parallel(bool deterministic) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsv4
