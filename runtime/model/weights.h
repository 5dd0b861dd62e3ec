// Views of a checkpoint's tensors, bound by their official names (spec §7.2) and validated against the
// config: every weight is a zero-copy view into the mapped files (FP8 / FP4 blocks stay quantised); only
// small fp32 parameters stored in another dtype are converted.
#pragma once

#include <cstdint>
#include <functional>
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
  ExpertWeights shared;
  std::vector<ExpertWeights> experts;
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

struct ModelWeights {
  TensorView embed;  // BF16 (or F32) [V, D]
  kernels::WeightRef head;
  NormWeight norm;
  HcWeights hc_head;
  std::vector<LayerWeights> layers;
  std::vector<MtpWeights> mtp;  // empty when the checkpoint carries no mtp.* tensors
};

/// Binds every tensor of `config` through `lookup`. Throws Error(kInvalidCheckpoint) naming the tensor on a
/// missing tensor, a wrong dtype or a shape that does not match the config. MTP is bound when the config
/// has MTP layers and `mtp.0.e_proj.weight` exists.
ModelWeights bind_weights(const ModelConfig& config, const TensorLookup& lookup);

}  // namespace dsv4
