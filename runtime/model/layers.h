// Internal to runtime/model: the pieces of the forward pass, called by model.cc.
// A Batch is several sequences' chunks laid out as consecutive rows; GEMMs run over all rows at once,
// while the attention window, compressors and indexer run per sequence.
//
// Every piece works on this rank's shard (Ctx::shard) and talks to its peers through Ctx::par: the same
// code runs a single process (groups of size 1) and every layout (model_parallel.h has the design). A
// batch of zero rows (an idle rank) skips all local work but still joins the EP exchange of every MoE.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/backend.h"
#include "parallel/moe_dispatch.h"
#include "runtime/config/model_config.h"
#include "runtime/model/model.h"
#include "runtime/model/state.h"
#include "runtime/model/weights.h"

namespace dsv4::model_detail {

struct Segment {
  SequenceState* state = nullptr;
  int64_t start = 0;  // absolute position of the first row
  int64_t count = 0;
  int64_t row = 0;  // first row in the batch
};

struct CpSplit;

struct Batch {
  std::vector<Segment> segments;
  int64_t rows = 0;
  std::vector<int64_t> positions;  // [rows]
  std::vector<int32_t> tokens;     // [rows]
  /// Set on a CP rank's part of a split batch (cp_local_batch): `segments` are then this rank's sub-blocks
  /// (in the whole batch's order, possibly empty) and the split describes the whole chunks.
  std::shared_ptr<const CpSplit> cp;
};

/// The hand-over between the two micro-batches of a pipelined forward (model_pipeline.cc): micro-batch B
/// continues the sequences of micro-batch A, so B's attention of a layer slot may touch the sequence state
/// (ring, compressors, rows) only once A's attention of that slot is done with it. Everything else of the two
/// micro-batches is independent. A throwing on A's thread calls fail(), so that B stops instead of waiting.
class StateHandover {
 public:
  /// A is done with the state of slots <= slot.
  void release(int64_t slot);
  /// A failed: every acquire() from now throws.
  void fail();
  /// Waits until A released `slot`; throws Error(kInternal) when A failed.
  void acquire(int64_t slot);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t released_ = -1;
  bool failed_ = false;
};

struct Ctx {
  const ModelConfig& cfg;
  kernels::KernelBackend& be;
  Numerics numerics;
  const ModelParallel& par;             // this rank's groups (size 1 each in a single process)
  const ModelShard& shard;              // what this rank holds
  parallel::MoeDispatcher& dispatcher;  // over par.ep; rows are [hidden | routing weight] in F32
  /// Pipelined forward only: micro-batch A releases each slot's state to B, B acquires it (null otherwise).
  StateHandover* release_state = nullptr;
  StateHandover* acquire_state = nullptr;
  bool reference() const { return numerics == Numerics::kReference; }
  bool deterministic() const { return par.deterministic; }
  /// The same context with other numerics (the plain-path projections of the reference).
  Ctx with(Numerics n) const { return Ctx{cfg, be, n, par, shard, dispatcher, release_state, acquire_state}; }
};

/// Column width of one deterministic-mode chunk of the shared expert's w2 (model_parallel.h).
inline constexpr int64_t kSharedChunk = 128;

/// In-place sum over the TP group of `count` floats (rank order); nothing when the group has one rank or
/// count is 0 (the whole group is then idle: every member has the same rows).
void tp_sum(Ctx& ctx, float* buf, int64_t count);
/// recv = every TP rank's `count` floats, in rank order (a copy when the group has one rank).
void tp_gather(Ctx& ctx, const float* send, float* recv, int64_t count);

/// y = x W^T over rows [row0, row0 + rows) of W (rows < 0: all). In reference mode an FP8 / FP4 weight
/// first gets the activations' FP8 round trip per 128 (spec §6). Nothing for m == 0.
void linear(Ctx& ctx, const kernels::WeightRef& w, const float* x, int64_t m, int64_t x_stride, float* y,
            int64_t y_stride, int64_t row0 = 0, int64_t rows = -1, bool accumulate = false);

/// RMSNorm of `rows` rows of `dim` (weight null: unweighted), x and y may alias.
void rms_norm(Ctx& ctx, const NormWeight* w, const float* x, float* y, int64_t rows, int64_t dim, int64_t x_stride,
              int64_t y_stride);

/// Inverse frequencies of the layer's RoPE (spec §1.2): main (theta, no YaRN) for ratio 0, compress
/// (compress theta, YaRN when configured) otherwise. rope_dim / 2 entries.
std::vector<float> rope_inv_freq(const ModelConfig& cfg, int64_t ratio);

/// Appends rows [row, row + count) of one sequence (positions start..) to a compressor: a, s are
/// [count, c*h] (s without APE). Emits a row at each finished window: pool, norm, RoPE at w*m, emulation.
void compressor_append(Ctx& ctx, const CompressorWeights& w, CompressorState& st, const float* a, const float* s,
                       int64_t start, int64_t count, const std::vector<float>& inv_freq, bool indexer_rows);

/// Selected compressed rows for CSA queries (spec §3.6). For each query row r of the segment, writes up to
/// `topk` row ids to out[r * topk ...] (-1 padding), best first; out_scores (optional, same layout) gets
/// their scores (+inf for rows taken because no more than topk are visible, -inf for padding). On a
/// context-parallel shard (index_rows.cp_size > 1) the ids are LOCAL row indices and the selection is this
/// rank's local top-k of its share of the visible rows (context_parallel_attention.cc merges them).
void indexer_select(Ctx& ctx, const IndexerWeights& w, const CompressorState& index_rows, const float* q_index,
                    const float* head_weights, int64_t start, int64_t count, int32_t* out, float* out_scores = nullptr);

/// Attention sublayer for layer slot `slot` (state.layers[slot]) with compress ratio `ratio`: x [rows, D]
/// (already attn_norm'ed) -> y [rows, D]. This rank's heads and output groups; y is reduced over TP.
void attention_forward(Ctx& ctx, const AttentionWeights& w, int64_t slot, int64_t ratio, const Batch& batch,
                       const float* x, float* y);

/// MoE sublayer: x [rows, D] (ffn_norm'ed) -> y [rows, D]. Hash routing when `hash` (tid2eid by token).
/// Collective over the EP group (dispatch + combine, also with zero rows) and, with rows, the TP group.
void moe_forward(Ctx& ctx, const MoeWeights& w, bool hash, const Batch& batch, const float* x, float* y);

/// One block (attention then MoE, each wrapped in mHC pre/post) on the residual state X [rows, n, D].
/// With zero rows only the MoE exchanges run (an idle rank keeps its EP peers going).
void block_forward(Ctx& ctx, const LayerWeights& w, int64_t slot, int64_t ratio, bool hash, const Batch& batch,
                   float* X);

/// HC head, final norm and LM head: X [rows, n, D] -> logits [rows, head.out] (this rank's vocabulary rows).
void head_forward(Ctx& ctx, const HcWeights& hc, const NormWeight& norm, const kernels::WeightRef& head, const float* X,
                  int64_t rows, float* logits);

// --- Context parallelism (context_parallel_attention.cc; design in its header comment) ---

/// True when ctx.par.cp splits each sequence over more than one rank.
inline bool cp_active(const Ctx& ctx) { return ctx.par.cp != nullptr && ctx.par.cp->size() > 1; }

/// How a batch's chunks are split over the CP group: rank q of `size` runs rows [begin(s, q), end(s, q)) of
/// chunk s (relative to the chunk's first token), a contiguous sub-block; the last rank always holds the last
/// token. A chunk shorter than the group (a decode step) is replicated instead: every rank runs all of its
/// rows, so it needs no row exchange and no rank idles. Row exchanges pad every rank's sub-block of a split
/// chunk s to padded(s) rows.
struct CpSplit {
  int size = 1;
  int rank = 0;
  std::vector<Segment> whole;  // the whole chunks (rows in the whole batch)
  int64_t whole_rows = 0;
  std::vector<int64_t> local_row;   // [chunks]: first row of this rank's rows of chunk s in its batch
  std::vector<int64_t> padded_row;  // [chunks]: first row of chunk s in a rank's padded block
  int64_t padded_rows = 0;          // rows of one rank's padded block
  bool replicated(size_t s) const { return whole[s].count < size; }
  int64_t begin(size_t s, int q) const { return replicated(s) ? 0 : whole[s].count * q / size; }
  int64_t end(size_t s, int q) const { return replicated(s) ? whole[s].count : whole[s].count * (q + 1) / size; }
  int64_t padded(size_t s) const { return replicated(s) ? 0 : (whole[s].count + size - 1) / size; }
};

/// This CP rank's part of `whole`: the sub-blocks of rank `rank` of `size` (positions and tokens follow),
/// with Batch::cp set. size 1 gives the whole batch with a one-rank split (deterministic mode's path).
Batch cp_local_batch(const Batch& whole, int rank, int size);

/// Collective over ctx.par.cp (a copy with one rank): every rank passes its batch's rows `local`
/// [batch rows, width]; `whole` [split.whole_rows, width] gets every rank's rows in whole-batch order (the
/// rows of a replicated chunk are copied from `local`).
void cp_gather_rows(Ctx& ctx, const CpSplit& split, const float* local, int64_t width, float* whole);

/// This rank's projections of an attention layer, rows of its part of a split batch.
struct CpLayerInputs {
  const float* q = nullptr;       // [rows, heads, head_dim], normed and rotated
  const float* kv = nullptr;      // [rows, head_dim]
  const float* main_a = nullptr;  // [rows, overlap * dim] main compressor kv / gate inputs (ratio != 0)
  const float* main_s = nullptr;
  const float* index_a = nullptr;  // indexer compressor (ratio 4)
  const float* index_s = nullptr;
  const float* q_index = nullptr;                // [rows, index heads, index dim] (ratio 4)
  const float* head_weights = nullptr;           // [rows, index heads] (ratio 4)
  const std::vector<float>* inv_freq = nullptr;  // the layer's compressor RoPE frequencies
  /// Fills q: cp_attention_layer calls it once before reading q, on a helper thread beside the first row
  /// exchange when it overlaps (it must not use a communicator).
  std::function<void()> make_q;
};

/// Attention of layer slot `slot` on a split batch (Batch::cp set): gathers the chunks' kv and compressor
/// inputs (and, with compressed rows, the queries) from the CP group, appends them to the replicated ring and
/// compressor windows (this rank pools the rows it owns), then writes the attention of this rank's queries to
/// o [rows, heads, head_dim] (before the inverse RoPE). With compressed rows the softmax is merged from
/// partials in a fixed order; for long chunks every exchange runs beside compute on a helper thread
/// (ModelParallel::cp_overlap; see the file's header). Collective over ctx.par.cp; only the calling thread
/// uses the communicator. Micro-batch B of a pipelined forward (ctx.acquire_state) waits
/// for A after its first row gather, which reads no state.
void cp_attention_layer(Ctx& ctx, const AttentionWeights& w, int64_t slot, int64_t ratio, const Batch& batch,
                        const CpLayerInputs& in, float* o);

/// Marks every compressor of `state` as rank `rank` of a CP group of `size` (before any row is emitted).
void cp_shard_state(SequenceState& state, int rank, int size);

}  // namespace dsv4::model_detail
