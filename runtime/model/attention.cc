// Attention sublayer (spec §3.4): low-rank query with per-head norm, the shared K = V head, the raw window
// (a ring of `sliding_window` rows, the current token included), compressed rows (all of them for HCA,
// the indexer's top-k for CSA), sink softmax, inverse RoPE and the grouped output projection.
//
// Tensor parallelism: this rank computes its heads [head_begin, +num_heads) and output groups only; the
// single KV head, the compressors and the indexer run on every TP rank (the sequence state stays whole on
// each). wo_b holds the columns of the rank's groups, so y is a partial sum reduced over the TP group, or,
// in deterministic mode, one partial per output group gathered and added in group order on every rank.
//
// A split batch (Batch::cp: context parallelism, and deterministic mode on every layout) computes the
// projections of its own rows here and hands the sequence state and the softmax to cp_attention_layer
// (context_parallel_attention.cc); a batch of whole sequences attends here, one softmax per query.
#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/model/layers.h"

namespace dsv4::model_detail {
namespace {

void rope_rows(Ctx& ctx, float* x, int64_t rows, int64_t heads, int64_t head_dim, const std::vector<float>& inv,
               const int64_t* positions, bool inverse) {
  const int64_t r = ctx.cfg.rope_dim;
  ctx.be.rope({x, rows, heads, head_dim, heads * head_dim, head_dim - r, inv.data(), r / 2, positions, inverse});
}

// a (kv) and s (gate scores) of one compressor for the batch's rows.
void compressor_inputs(Ctx& ctx, const CompressorWeights& cw, const float* x, int64_t rows, std::vector<float>& a,
                       std::vector<float>& s) {
  const int64_t width = cw.overlap * cw.dim, D = ctx.cfg.hidden_size;
  a.resize(rows * width);
  s.resize(rows * width);
  linear(ctx, cw.wkv, x, rows, D, a.data(), width);
  linear(ctx, cw.wgate, x, rows, D, s.data(), width);
}

// Appends every segment's rows to one compressor (main or indexer) of its sequence.
void append_segments(Ctx& ctx, const CompressorWeights& cw, const Batch& b, int64_t slot, bool indexer,
                     const std::vector<float>& a, const std::vector<float>& s, const std::vector<float>& inv) {
  const int64_t width = cw.overlap * cw.dim;
  for (const Segment& seg : b.segments) {
    LayerState& ls = seg.state->layers[slot];
    compressor_append(ctx, cw, indexer ? ls.index : ls.main, a.data() + seg.row * width, s.data() + seg.row * width,
                      seg.start, seg.count, inv, indexer);
  }
}

// Attention of every segment on one rank holding whole sequences: [raw rows: ring history | this chunk] and
// the compressed rows (all visible ones for HCA, the indexer's top-k for CSA), one softmax with the sink.
void attend_segments(Ctx& ctx, const AttentionWeights& w, int64_t slot, int64_t ratio, const Batch& b,
                     const std::vector<float>& q, const std::vector<float>& kv, const std::vector<float>& q_index,
                     const std::vector<float>& beta, std::vector<float>& o) {
  const ModelConfig& cfg = ctx.cfg;
  const int64_t H = ctx.shard.num_heads, d = cfg.head_dim, W = cfg.sliding_window;
  const int64_t nh = cfg.index_num_heads, hd = cfg.index_head_dim;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  for (const Segment& seg : b.segments) {
    LayerState& ls = seg.state->layers[slot];
    const int64_t n_prev = std::min(seg.start, W - 1), base = seg.start - n_prev;
    std::vector<float> ext((n_prev + seg.count) * d);
    for (int64_t p = base; p < seg.start; ++p) {
      std::copy_n(ls.ring.data() + (p % W) * d, d, ext.data() + (p - base) * d);
    }
    std::copy_n(kv.data() + seg.row * d, seg.count * d, ext.data() + n_prev * d);
    const int64_t n_raw = n_prev + seg.count;
    const int64_t n_rows = ratio == 0 ? 0 : ls.main.num_rows();
    int64_t n_comp_idx = ratio == 0 ? 0 : (ratio == 4 ? std::min<int64_t>(cfg.index_topk, n_rows) : n_rows);
    std::vector<int32_t> selected;
    if (ratio == 4) {
      selected.resize(seg.count * cfg.index_topk);
      indexer_select(ctx, *w.indexer, ls.index, q_index.data() + seg.row * nh * hd, beta.data() + seg.row * nh,
                     seg.start, seg.count, selected.data());
    }
    const int64_t max_idx = W + n_comp_idx;
    std::vector<int32_t> idx(seg.count * max_idx, -1);
    for (int64_t i = 0; i < seg.count; ++i) {
      const int64_t t = seg.start + i;
      int32_t* dst = idx.data() + i * max_idx;
      int64_t n = 0;
      for (int64_t p = std::max<int64_t>(0, t - W + 1); p <= t; ++p) dst[n++] = static_cast<int32_t>(p - base);
      if (ratio == 4) {
        for (int64_t j = 0; j < cfg.index_topk && j < n_comp_idx; ++j) {
          const int32_t row = selected[i * cfg.index_topk + j];
          if (row >= 0) dst[n++] = static_cast<int32_t>(n_raw + row);
        }
      } else if (ratio != 0) {
        const int64_t n_vis = (t + 1) / ratio;
        for (int64_t row = 0; row < n_vis; ++row) dst[n++] = static_cast<int32_t>(n_raw + row);
      }
    }
    kernels::SparseAttentionParams ap;
    ap.q = q.data() + seg.row * H * d;
    ap.tokens = seg.count;
    ap.heads = H;
    ap.dim = d;
    ap.kv_raw = ext.data();
    ap.n_raw = n_raw;
    ap.comp_pages = ratio == 0 ? nullptr : ls.main.rows.pages();
    ap.comp_rows_per_page = ratio == 0 ? 1 : ls.main.rows.rows_per_page();
    ap.n_comp = n_rows;
    ap.indices = idx.data();
    ap.max_indices = max_idx;
    ap.sink = w.sink.data();
    ap.scale = scale;
    ap.out = o.data() + seg.row * H * d;
    ctx.be.sparse_attention(ap);
    for (int64_t i = std::max<int64_t>(0, seg.count - W); i < seg.count; ++i) {
      std::copy_n(kv.data() + (seg.row + i) * d, d, ls.ring.data() + ((seg.start + i) % W) * d);
    }
  }
}

}  // namespace

void attention_forward(Ctx& ctx, const AttentionWeights& w, int64_t slot, int64_t ratio, const Batch& b,
                       const float* x, float* y) {
  const ModelConfig& cfg = ctx.cfg;
  // H: this rank's heads (all of them without TP); their q rows and sink entries are the shard's.
  const int64_t D = cfg.hidden_size, H = ctx.shard.num_heads, d = cfg.head_dim, r = cfg.rope_dim, nope = d - r;
  const int64_t qr = cfg.q_lora_rank, T = b.rows;
  const std::vector<float> inv = rope_inv_freq(cfg, ratio);
  const int64_t* pos = b.positions.data();

  // Query: c_q = q_norm(W_qa x); q = W_qb c_q; unweighted norm per head; RoPE. A split batch computes q
  // beside its first row exchange (cp_attention_layer calls make_q, possibly on a helper thread).
  std::vector<float> cq(T * qr), q(T * H * d), kv(T * d);
  auto make_q = [&] {
    if (T == 0) return;
    linear(ctx, w.wq_b, cq.data(), T, qr, q.data(), H * d);
    rms_norm(ctx, nullptr, q.data(), q.data(), T * H, d, d, d);
    rope_rows(ctx, q.data(), T, H, d, inv, pos, false);
  };
  if (T > 0) {
    linear(ctx, w.wq_a, x, T, D, cq.data(), qr);
    rms_norm(ctx, &w.q_norm, cq.data(), cq.data(), T, qr, qr, qr);
    if (b.cp == nullptr) make_q();

    // Shared KV: kv_norm(W_kv x), RoPE, and the reference's FP8 round trip of the non-rotary dims.
    linear(ctx, w.wkv, x, T, D, kv.data(), d);
    rms_norm(ctx, &w.kv_norm, kv.data(), kv.data(), T, d, d, d);
    rope_rows(ctx, kv.data(), T, 1, d, inv, pos, false);
    if (ctx.reference()) ctx.be.fp8_round_trip({kv.data(), T, nope, d, 64});
  }

  // Compressor inputs, and the indexer's query and head weights.
  std::vector<float> main_a, main_s, index_a, index_s, q_index, beta;
  if (ratio != 0) {
    DSV4_CHECK(w.compressor.has_value()) << "layer slot " << slot << " has ratio " << ratio << " but no compressor";
    compressor_inputs(ctx, *w.compressor, x, T, main_a, main_s);
  }
  const int64_t nh = cfg.index_num_heads, hd = cfg.index_head_dim;
  if (ratio == 4) {
    const IndexerWeights& iw = *w.indexer;
    compressor_inputs(ctx, iw.compressor, x, T, index_a, index_s);
    q_index.resize(T * nh * hd);
    beta.resize(T * nh);
    if (T > 0) {
      linear(ctx, iw.wq_b, cq.data(), T, qr, q_index.data(), nh * hd);
      rope_rows(ctx, q_index.data(), T, nh, hd, inv, pos, false);
      if (ctx.reference()) {
        ctx.be.hadamard({q_index.data(), T * nh, hd, hd});
        ctx.be.fp4_round_trip({q_index.data(), T * nh, hd, hd, 32});
      }
      linear(ctx, iw.weights_proj, x, T, D, beta.data(), nh);
    }
    const float head_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd * nh)));
    for (float& v : beta) v *= head_scale;
  }

  std::vector<float> o(T * H * d);
  // The state section: micro-batch B of a pipelined forward waits for A's attention of this slot (a split batch
  // in cp_attention_layer, after its first row gather, which reads no state).
  if (b.cp != nullptr) {
    // A split batch (context parallelism, or deterministic mode): context_parallel_attention.cc.
    const CpLayerInputs in{q.data(),       kv.data(),      main_a.data(), main_s.data(), index_a.data(),
                           index_s.data(), q_index.data(), beta.data(),   &inv,          make_q};
    cp_attention_layer(ctx, w, slot, ratio, b, in, o.data());
  } else {
    if (ctx.acquire_state != nullptr) ctx.acquire_state->acquire(slot);
    DSV4_CHECK(ratio == 0 || !cp_active(ctx))
        << "layer slot " << slot << ": a context-parallel model attends over compressed rows on split batches only";
    // Compressors run before attention: a row finished by token p is visible to p.
    if (ratio != 0) append_segments(ctx, *w.compressor, b, slot, false, main_a, main_s, inv);
    if (ratio == 4) append_segments(ctx, w.indexer->compressor, b, slot, true, index_a, index_s, inv);
    attend_segments(ctx, w, slot, ratio, b, q, kv, q_index, beta, o);
  }
  if (ctx.release_state != nullptr) ctx.release_state->release(slot);
  // V = K carried the absolute phase: rotate it back at the query position.
  if (T > 0) rope_rows(ctx, o.data(), T, H, d, inv, pos, true);

  // Grouped output projection: z_g = W_oa[g] o_g, then y = W_ob z. The reference runs wo_a as a bf16
  // einsum (no activation quantisation), so it always goes through the plain path.
  const int64_t G = ctx.shard.num_groups, Ro = cfg.o_lora_rank, hpg = cfg.num_heads / cfg.o_groups;
  std::vector<float> z(T * G * Ro);
  Ctx plain = ctx.with(Numerics::kPlain);
  for (int64_t g = 0; g < G; ++g) {
    linear(plain, w.wo_a, o.data() + g * hpg * d, T, H * d, z.data() + g * Ro, G * Ro, g * Ro, Ro);
  }
  if (!ctx.deterministic()) {
    linear(ctx, w.wo_b, z.data(), T, G * Ro, y, D);
    tp_sum(ctx, y, T * D);
    return;
  }
  // One partial per output group, in group order: the same additions whatever the TP split.
  std::vector<float> part(G * T * D), all(cfg.o_groups * T * D);
  for (int64_t g = 0; g < G; ++g) {
    linear(ctx, kernels::column_slice(w.wo_b, g * Ro, Ro), z.data() + g * Ro, T, G * Ro, part.data() + g * T * D, D);
  }
  tp_gather(ctx, part.data(), all.data(), G * T * D);
  std::copy_n(all.data(), T * D, y);
  for (int64_t g = 1; g < cfg.o_groups; ++g) {
    const float* p = all.data() + g * T * D;
    for (int64_t i = 0; i < T * D; ++i) y[i] += p[i];
  }
}

}  // namespace dsv4::model_detail
