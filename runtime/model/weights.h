// Views of a checkpoint's tensors, bound by their official names (spec §7.2) and validated against the
// config: every weight is a zero-copy view into the mapped files (FP8 / FP4 blocks stay quantised); only
// small fp32 parameters stored in another dtype are converted.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernels/ops/linear.h"
#include "runtime/config/model_config.h"
#include "runtime/core/tensor.h"

namespace dsv4 {

/// Finds a tensor by official name; nullopt when absent.
using TensorLookup = std::function<std::optional<TensorView>(const std::string& name)>;

/// A small parameter as fp32: points into the checkpoint when stored as F32, else owns a converted copy.
struct F32Param {
  const float* mapped = nullptr;
  std::vector<float> owned;
  int64_t size = 0;
  /// Safe after copies and moves: owned storage is looked up, not cached.
  const float* data() const { return owned.empty() ? mapped : owned.data(); }
};

/// A norm weight (BF16 or F32), applied by kernels::RmsNormParams.
struct NormWeight {
  const void* data = nullptr;
  DType dtype = DType::kBF16;
  int64_t dim = 0;
};

struct HcWeights {
  F32Param fn;     // [outputs, n * D]
  F32Param base;   // [outputs]
  F32Param scale;  // [3] (sublayer) or [1] (head)
};

struct CompressorWeights {
  int64_t ratio = 0;
  int64_t dim = 0;       // h: 512 (attention) or 128 (indexer)
  int64_t overlap = 1;   // c: 2 for ratio 4, else 1
  kernels::WeightRef wkv;    // [c*h, D]
  kernels::WeightRef wgate;  // [c*h, D]
  F32Param ape;              // [ratio, c*h]
  NormWeight norm;           // [h]
};

struct IndexerWeights {
  kernels::WeightRef wq_b;          // [heads * head_dim, q_lora]
  kernels::WeightRef weights_proj;  // [heads, D]
  CompressorWeights compressor;
};

struct AttentionWeights {
  kernels::WeightRef wq_a, wq_b, wkv, wo_a, wo_b;
  NormWeight q_norm, kv_norm;
  F32Param sink;  // [H]
  std::optional<CompressorWeights> compressor;
  std::optional<IndexerWeights> indexer;
};

struct ExpertWeights {
  kernels::WeightRef w1, w2, w3;
};

struct MoeWeights {
  kernels::WeightRef gate;        // [E, D]
  F32Param bias;                  // [E] (empty on hash layers)
  const int64_t* tid2eid = nullptr;  // [vocab, k] on hash layers
  ExpertWeights shared;                 // w1, w3 [shared_width, D]; w2 [D, shared_width]
  std::vector<ExpertWeights> experts;   // the held experts only: experts[i] is expert shard.first_expert + i
};

struct LayerWeights {
  NormWeight attn_norm, ffn_norm;
  HcWeights hc_attn, hc_ffn;
  AttentionWeights attn;
  MoeWeights moe;
};

struct MtpWeights {
  kernels::WeightRef e_proj, h_proj;
  NormWeight enorm, hnorm, norm;
  HcWeights hc_head;
  LayerWeights block;
};

/// Which part of the model one rank holds (spec-independent arithmetic lives in parallel::Mesh; this is its
/// answer for one rank). The whole model is ModelShard::whole(config). Tensor-parallel slices are contiguous
/// blocks in tp-rank order; experts are contiguous blocks in ep-rank order.
struct ModelShard {
  int tp_rank = 0, tp_size = 1;
  int ep_rank = 0, ep_size = 1;
  int64_t vocab_begin = 0, vocab_end = 0;      // rows of embed and head held: [begin, end) (ceil-sized shards)
  int64_t head_begin = 0, num_heads = 0;       // attention heads held: wq_b rows, sink entries, o columns
  int64_t group_begin = 0, num_groups = 0;     // output groups held: wo_a rows [g*Ro...], wo_b columns
  int64_t shared_begin = 0, shared_width = 0;  // shared-expert intermediate columns held (w1/w3 rows, w2 columns)
  int64_t first_expert = 0, num_experts = 0;   // routed experts held (MoeWeights::experts[i] is expert first+i)

  static ModelShard whole(const ModelConfig& config);
  bool is_whole() const { return tp_size == 1 && ep_size == 1; }
  int64_t vocab_rows() const { return vocab_end - vocab_begin; }
};

struct ModelWeights {
  /// What this rank holds; every view below has the shard's shape (e.g. wq_b is [num_heads * head_dim,
  /// q_lora], wo_b is [D, num_groups * o_lora], embed and head are [vocab_rows, D]).
  ModelShard shard;
  TensorView embed;  // BF16 (or F32) [vocab_rows, D]
  kernels::WeightRef head;
  NormWeight norm;
  HcWeights hc_head;
  std::vector<LayerWeights> layers;
  std::vector<MtpWeights> mtp;  // empty when the checkpoint carries no mtp.* tensors
  /// Memory the views above point into when they do not point into the mapped checkpoint (a sharded load
  /// copies the owned bytes into buffers of its own); null for zero-copy binding.
  std::shared_ptr<const void> storage;
};

/// Binds every tensor of `config` through `lookup`. Throws Error(kInvalidCheckpoint) naming the tensor on a
/// missing tensor, a wrong dtype or a shape that does not match the config. MTP is bound when the config
/// has MTP layers and `mtp.0.e_proj.weight` exists.
ModelWeights bind_weights(const ModelConfig& config, const TensorLookup& lookup);

/// Binds one rank's shard: `lookup` returns the shard's tensors with the shard's shapes (wq_b
/// [num_heads * head_dim, q_lora], attn_sink [num_heads], wo_a [num_groups * o_lora, (H / o_groups) * head_dim],
/// wo_b [D, num_groups * o_lora], shared w1/w3 [shared_width, D], w2 [D, shared_width], embed / head
/// [vocab_rows, D], experts first_expert .. first_expert + num_experts - 1 under their global names; scales
/// of split FP8 weights are the matching slices of the scale grids). Same errors as above; Error(kInvalidArgument)
/// when the shard lies outside the model.
ModelWeights bind_weights(const ModelConfig& config, const TensorLookup& lookup, const ModelShard& shard);

/// Width of the shared experts' intermediate layer (num_shared_experts * moe_intermediate_size).
int64_t shared_expert_width(const ModelConfig& config);

}  // namespace dsv4
