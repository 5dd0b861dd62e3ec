// The DeepSeek-V4 forward pass (spec §3) for any config of the family, over a KernelBackend.
//
// A Model holds views into a checkpoint (which must outlive it) and no per-sequence data. Sequences carry
// their own SequenceState: prefill() runs a chunk of tokens after the state's current length, so chunked
// prefill and decode (a chunk of one token) are the same code path and give the same numbers.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "kernels/backend.h"
#include "runtime/config/model_config.h"
#include "runtime/core/tensor.h"
#include "runtime/model/state.h"
#include "runtime/model/weights.h"

namespace dsv4 {

class Checkpoint;

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
  Tensor logits;  // [rows, vocab] fp32: every token of the chunks in order, or one row per chunk
  Tensor hidden;  // [rows, hc_mult, D]: the pre-HC-head residual state (the MTP input), if asked for
};

class Model {
 public:
  Model(ModelConfig config, ModelWeights weights, std::unique_ptr<kernels::KernelBackend> backend,
        Numerics numerics);
  /// Validates the checkpoint's tensor set against its config (validate_checkpoint, scales not scanned), then
  /// binds its tensors with the CPU backend. Error(kInvalidCheckpoint) names the first mismatches.
  static Model from_checkpoint(const Checkpoint& checkpoint, Numerics numerics);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  Numerics numerics() const { return numerics_; }
  bool has_mtp() const { return !weights_.mtp.empty(); }

  /// A fresh, empty sequence state sized for this model.
  SequenceState new_sequence() const;

  /// Runs `tokens` after state.length; returns logits [T, vocab]. Throws Error(kInvalidArgument) on an
  /// empty chunk, a token id outside the vocabulary, or a length beyond max_position_embeddings.
  Tensor prefill(SequenceState& state, std::span<const int32_t> tokens);
  /// Prefill of one token.
  Tensor decode(SequenceState& state, int32_t token);
  /// Several sequences in one pass (their rows share every GEMM). Logits rows follow the chunks in order.
  /// Validates every chunk before touching any state: on an error no state has changed.
  ForwardOutput forward(std::span<const SequenceChunk> chunks, bool want_hidden = false,
                        LogitsRows logits_rows = LogitsRows::kAll);

  /// MTP draft logits (spec §3.9): hidden [T, hc_mult, D] are the main model's pre-HC-head states of
  /// positions p .. p+T-1 (p = state.mtp_length), next_tokens the tokens at p+1 .. p+T. Runs the MTP block
  /// with its own ring at positions p .. p+T-1; returns [T, vocab] logits predicting tokens p+2 .. p+T+1.
  Tensor mtp_draft(SequenceState& state, const Tensor& hidden, std::span<const int32_t> next_tokens);

 private:
  ModelConfig config_;
  ModelWeights weights_;
  std::unique_ptr<kernels::KernelBackend> backend_;
  Numerics numerics_;
};

}  // namespace dsv4
