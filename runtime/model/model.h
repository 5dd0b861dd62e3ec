// The DeepSeek-V4 forward pass (spec §3) for any config of the family, over a KernelBackend.
//
// A Model holds views into a checkpoint (which must outlive it) and no per-sequence data. Sequences carry
// their own SequenceState: prefill() runs a chunk of tokens after the state's current length, so chunked
// prefill and decode (a chunk of one token) are the same code path and give the same numbers.
//
// One Model is one rank's part of the model (model_parallel.h): a single process is the layout with groups
// of size 1, and every layout runs the same code. On a sharded model forward() and mtp_draft() are
// collectives and the logits hold this rank's vocabulary rows only (ForwardOutput::vocab_begin);
// gather_full_logits() assembles whole rows for tools and tests.
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "kernels/backend.h"
#include "parallel/moe_dispatch.h"
#include "runtime/config/model_config.h"
#include "runtime/core/tensor.h"
#include "runtime/model/model_parallel.h"
#include "runtime/model/state.h"
#include "runtime/model/weights.h"

namespace dsv4 {

class Checkpoint;
struct ShardLoadReport;
namespace model_detail {
struct Batch;
class StateHandover;
}  // namespace model_detail

/// `plain`: fp32 everywhere, no quantisation emulation (like transformers).
/// `reference`: the official numerics' QAT emulation (spec §6): FP8 activation quantisation per 128 before
/// FP8/FP4 GEMMs, FP8 round trip of KV dims, Hadamard + FP4 round trip in the indexer. Activations are NOT
/// rounded to bf16 between ops (the reference stores bf16 there; DS4 shows fp32 matches its logprobs).
enum class Numerics { kPlain, kReference };

/// "plain" / "reference"; throws Error(kInvalidArgument) otherwise.
Numerics parse_numerics(std::string_view text);

/// One sequence's part of a batched call: `tokens` run after the state's current length.
struct SequenceChunk {
  SequenceState* state = nullptr;
  std::span<const int32_t> tokens;
};

/// Which positions get logits (the LM head is the largest GEMM of a step: prompts rarely need all rows).
enum class LogitsRows { kAll, kLastOfEachChunk };

struct ForwardOutput {
  /// [rows, vocab_rows] fp32: every token of the chunks in order, or one row per chunk. On a TP-sharded model
  /// the columns are this rank's vocabulary shard, ids [vocab_begin, vocab_begin + vocab_rows).
  Tensor logits;
  int64_t vocab_begin = 0;
  Tensor hidden;  // [rows, hc_mult, D]: the pre-HC-head residual state (the MTP input), if asked for
};

class Model {
 public:
  /// A single-process model (it owns one-rank groups). `weights.shard` must be whole.
  Model(ModelConfig config, ModelWeights weights, std::unique_ptr<kernels::KernelBackend> backend,
        Numerics numerics, bool deterministic = false);
  /// One rank of a sharded model: `weights` hold this rank's shard (weights.shard), `parallel` its groups
  /// (whose sizes and ranks must match the shard's); the communicators must outlive the model. Every view
  /// is checked against the shard's shape (Error(kInvalidArgument) names the first mismatch); in
  /// deterministic mode wo_b's output groups and the shared w2's 128-column chunks must be sliceable.
  Model(ModelConfig config, ModelWeights weights, std::unique_ptr<kernels::KernelBackend> backend,
        Numerics numerics, ModelParallel parallel);
  /// Validates the checkpoint's tensor set against its config (validate_checkpoint, scales not scanned), then
  /// binds its tensors with the CPU backend. Error(kInvalidCheckpoint) names the first mismatches.
  static Model from_checkpoint(const Checkpoint& checkpoint, Numerics numerics, bool deterministic = false);
  /// One rank of a sharded model: load_shard(checkpoint, shard, report) (only the owned bytes are read, into
  /// memory the weights own), then the sharded constructor with the CPU backend. `shard` is usually
  /// model_shard_for_rank(config, mesh, rank) and `parallel` the groups of make_model_groups(world, mesh).
  static Model from_checkpoint_sharded(const Checkpoint& checkpoint, Numerics numerics, const ModelParallel& parallel,
                                       const ModelShard& shard, ShardLoadReport* report = nullptr);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  Numerics numerics() const { return numerics_; }
  bool has_mtp() const { return !weights_.mtp.empty(); }
  const ModelShard& shard() const { return weights_.shard; }
  const ModelParallel& parallel() const { return parallel_; }
  bool deterministic() const { return parallel_.deterministic; }
  /// Bytes of the weights this rank holds (every tensor view, with its scales; the whole model's in a
  /// single process). For logging "weights X MiB" next to SequenceState::memory_bytes().
  uint64_t weight_bytes() const { return weight_bytes_; }

  /// A fresh, empty sequence state sized for this model, booked to a new sequence of `pool` that reserves
  /// `reserve_bytes` (cpu_state_bytes of runtime/kv prices a length); null = a private unlimited pool. Throws
  /// Error(kResourceExhausted) when the pool cannot admit it. The pool must outlive the state.
  SequenceState new_sequence(StatePool* pool = nullptr, int64_t reserve_bytes = 0) const;

  /// Runs `tokens` after state.length; returns logits [T, vocab_rows] (all of the vocabulary without TP).
  /// Throws Error(kInvalidArgument) on an empty chunk, a token id outside the vocabulary, or a length beyond
  /// max_position_embeddings.
  Tensor prefill(SequenceState& state, std::span<const int32_t> tokens);
  /// Prefill of one token.
  Tensor decode(SequenceState& state, int32_t token);
  /// Several sequences in one pass (their rows share every GEMM). Logits rows follow the chunks in order.
  /// Validates every chunk before touching any state: on an error no state has changed.
  /// Sharded: a collective. The ranks of a TP group pass the same chunks (each with its own states); every
  /// rank of the EP group calls it the same number of times, with no chunks when it has no work (it still
  /// joins the MoE exchange of every layer and returns 0 rows). An invalid batch is refused before any
  /// state changes, on every rank of the TP and CP groups (they compare verdicts first); on a sharded model the
  /// refusing ranks still run an idle step before throwing, so that their EP peers are not left waiting.
  /// Context parallelism (ModelParallel::cp): the ranks of a CP group pass the same chunks (each with its own
  /// states from new_sequence); each runs its sub-block of every chunk and all get the same ForwardOutput.
  /// A chunk of ModelParallel::pipeline_min_tokens or more runs as two micro-batches on two threads, each on
  /// its own groups, one's exchanges beside the other's compute (model_pipeline.cc); the same ForwardOutput.
  ForwardOutput forward(std::span<const SequenceChunk> chunks, bool want_hidden = false,
                        LogitsRows logits_rows = LogitsRows::kAll);

  /// MTP draft logits (spec §3.9): hidden [T, hc_mult, D] are the main model's pre-HC-head states of
  /// positions p .. p+T-1 (p = state.mtp_length), next_tokens the tokens at p+1 .. p+T. Runs the MTP block
  /// with its own ring at positions p .. p+T-1; returns [T, vocab_rows] logits predicting tokens
  /// p+2 .. p+T+1 (columns from shard().vocab_begin). Sharded: a collective like forward(); a rank without
  /// work passes T = 0 (hidden [0, hc_mult, D], no tokens; `state` is not touched) and gets 0 rows.
  Tensor mtp_draft(SequenceState& state, const Tensor& hidden, std::span<const int32_t> next_tokens);

 private:
  /// Shared by both constructors: group/shard consistency, view shapes, the MoE dispatcher, weight bytes.
  void finish_construction();
  void check_weights() const;
  /// The batch of `chunks` after validation agreed on by the TP and CP groups; on a refusal `error` is set and the
  /// batch is empty.
  struct Prepared;
  Prepared prepare(std::span<const SequenceChunk> chunks) const;
  /// Turns a local verdict into the replica's: an error on any member of the TP or the CP group (or differing
  /// row counts) becomes an error on every member. Collectives over TP and CP when they have more than one rank.
  void agree_on_replica(std::exception_ptr& error, int64_t rows) const;
  void agree_on_group(parallel::Communicator* group, const char* name, std::exception_ptr& error,
                      int64_t rows) const;
  /// Throws `error` when set, after an idle step (forward, pipelined when `pipelined`, or the MTP block) when EP
  /// peers expect this rank.
  void refuse(const std::exception_ptr& error, bool mtp, bool pipelined = false);
  /// One batch through the embedding, the layers and the head on the groups of `par` (model.cc); the
  /// sequences' lengths are not advanced. The handovers are set on the micro-batches of a pipelined forward.
  ForwardOutput run_batch(const ModelParallel& par, parallel::MoeDispatcher& dispatcher,
                          const model_detail::Batch& whole, bool want_hidden, LogitsRows logits_rows,
                          model_detail::StateHandover* release_state, model_detail::StateHandover* acquire_state);
  /// The two-micro-batch pipeline (model_pipeline.cc; ModelParallel::pipeline_min_tokens).
  void prepare_pipeline();
  /// Whether this forward pipelines: a chunk long enough here, or on any rank of the EP group when it spans
  /// replicas (then a collective over it, also with `batch` empty). Every rank of a TP, CP and EP group decides
  /// the same.
  bool decide_pipeline(const model_detail::Batch& batch) const;
  ForwardOutput run_pipelined(const model_detail::Batch& whole, bool want_hidden, LogitsRows logits_rows);

  ModelConfig config_;
  ModelWeights weights_;
  std::unique_ptr<kernels::KernelBackend> backend_;
  Numerics numerics_;
  std::shared_ptr<LocalGroups> local_;  // set for a single-process model: owns what parallel_ points to
  ModelParallel parallel_;
  std::unique_ptr<parallel::MoeDispatcher> dispatcher_;  // over parallel_.ep, one for all MoE layers
  // The pipeline's micro-batch B: parallel_ with the second groups, and its own dispatcher over them.
  bool pipeline_ready_ = false;
  ModelParallel second_parallel_;
  std::unique_ptr<parallel::MoeDispatcher> second_dispatcher_;
  uint64_t weight_bytes_ = 0;
};

/// Bytes of every tensor view of `weights` (data and scales, at the shard's shapes).
uint64_t model_weight_bytes(const ModelConfig& config, const ModelWeights& weights);

/// Full logits rows from a TP-sharded ForwardOutput (or mtp_draft logits with vocab_begin =
/// model.shard().vocab_begin): [rows, vocab] on every rank of the TP group (root < 0) or on the TP rank
/// `root` only (the others get [0, vocab]). Collective over the TP group. For tools and tests
/// (`dsv4 forward` writes full logits); sampling must not use it (it merges per-shard candidates instead).
Tensor gather_full_logits(const Model& model, const Tensor& logits, int64_t vocab_begin, int root = -1);

}  // namespace dsv4
