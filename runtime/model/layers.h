// Internal to runtime/model: the pieces of the forward pass, called by model.cc and mtp.cc.
// A Batch is several sequences' chunks laid out as consecutive rows; GEMMs run over all rows at once,
// while the attention window, compressors and indexer run per sequence.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "runtime/config/model_config.h"
#include "runtime/model/model.h"
#include "runtime/model/state.h"
#include "runtime/model/weights.h"

namespace dsv4::model_detail {

struct Segment {
  SequenceState* state = nullptr;
  int64_t start = 0;  // absolute position of the first row
  int64_t count = 0;
  int64_t row = 0;    // first row in the batch
};

struct Batch {
  std::vector<Segment> segments;
  int64_t rows = 0;
  std::vector<int64_t> positions;  // [rows]
  std::vector<int32_t> tokens;     // [rows]
};

struct Ctx {
  const ModelConfig& cfg;
  kernels::KernelBackend& be;
  Numerics numerics;
  bool reference() const { return numerics == Numerics::kReference; }
};

/// y = x W^T over rows [row0, row0 + rows) of W (rows < 0: all). In reference mode an FP8 / FP4 weight
/// first gets the activations' FP8 round trip per 128 (spec §6).
void linear(Ctx& ctx, const kernels::WeightRef& w, const float* x, int64_t m, int64_t x_stride, float* y,
            int64_t y_stride, int64_t row0 = 0, int64_t rows = -1, bool accumulate = false);

/// RMSNorm of `rows` rows of `dim` (weight null: unweighted), x and y may alias.
void rms_norm(Ctx& ctx, const NormWeight* w, const float* x, float* y, int64_t rows, int64_t dim,
              int64_t x_stride, int64_t y_stride);

/// Inverse frequencies of the layer's RoPE (spec §1.2): main (theta, no YaRN) for ratio 0, compress
/// (compress theta, YaRN when configured) otherwise. rope_dim / 2 entries.
std::vector<float> rope_inv_freq(const ModelConfig& cfg, int64_t ratio);

/// Appends rows [row, row + count) of one sequence (positions start..) to a compressor: a, s are
/// [count, c*h] (s without APE). Emits a row at each finished window: pool, norm, RoPE at w*m, emulation.
void compressor_append(Ctx& ctx, const CompressorWeights& w, CompressorState& st, const float* a, const float* s,
                       int64_t start, int64_t count, const std::vector<float>& inv_freq, bool indexer_rows);

/// Selected compressed rows for CSA queries (spec §3.6). For each query row r of the segment, writes up to
/// `topk` row ids to out[r * topk ...] (-1 padding).
void indexer_select(Ctx& ctx, const IndexerWeights& w, const CompressorState& index_rows, const float* q_index,
                    const float* head_weights, int64_t start, int64_t count, int32_t* out);

/// Attention sublayer for layer slot `slot` (state.layers[slot]) with compress ratio `ratio`: x [rows, D]
/// (already attn_norm'ed) -> y [rows, D].
void attention_forward(Ctx& ctx, const AttentionWeights& w, int64_t slot, int64_t ratio, const Batch& batch,
                       const float* x, float* y);

/// MoE sublayer: x [rows, D] (ffn_norm'ed) -> y [rows, D]. Hash routing when `hash` (tid2eid by token).
void moe_forward(Ctx& ctx, const MoeWeights& w, bool hash, const Batch& batch, const float* x, float* y);

/// One block (attention then MoE, each wrapped in mHC pre/post) on the residual state X [rows, n, D].
void block_forward(Ctx& ctx, const LayerWeights& w, int64_t slot, int64_t ratio, bool hash, const Batch& batch,
                   float* X);

/// HC head, final norm and LM head: X [rows, n, D] -> logits [rows, V].
void head_forward(Ctx& ctx, const HcWeights& hc, const NormWeight& norm, const kernels::WeightRef& head,
                  const float* X, int64_t rows, float* logits);

}  // namespace dsv4::model_detail
