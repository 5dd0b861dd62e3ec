// Attention sublayer (spec §3.4): low-rank query with per-head norm, the shared K = V head, the raw window
// (a ring of `sliding_window` rows, the current token included), compressed rows (all of them for HCA,
// the indexer's top-k for CSA), sink softmax, inverse RoPE and the grouped output projection.
//
// Tensor parallelism: this rank computes its heads [head_begin, +num_heads) and output groups only; the
// single KV head, the compressors and the indexer run on every TP rank (the sequence state stays whole on
// each). wo_b holds the columns of the rank's groups, so y is a partial sum reduced over the TP group, or,
// in deterministic mode, one partial per output group gathered and added in group order on every rank.
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

// a (kv) and s (gate scores) of one compressor for all rows, appended per sequence.
void run_compressor(Ctx& ctx, const CompressorWeights& cw, const Batch& b, int64_t slot, bool indexer,
                    const float* x, const std::vector<float>& inv) {
  const int64_t width = cw.overlap * cw.dim, D = ctx.cfg.hidden_size;
  std::vector<float> a(b.rows * width), s(b.rows * width);
  linear(ctx, cw.wkv, x, b.rows, D, a.data(), width);
  linear(ctx, cw.wgate, x, b.rows, D, s.data(), width);
  for (const Segment& seg : b.segments) {
    LayerState& ls = seg.state->layers[slot];
    compressor_append(ctx, cw, indexer ? ls.index : ls.main, a.data() + seg.row * width, s.data() + seg.row * width,
                      seg.start, seg.count, inv, indexer);
  }
}

}  // namespace

void attention_forward(Ctx& ctx, const AttentionWeights& w, int64_t slot, int64_t ratio, const Batch& b,
                       const float* x, float* y) {
  const ModelConfig& cfg = ctx.cfg;
  // H: this rank's heads (all of them without TP); their q rows and sink entries are the shard's.
  const int64_t D = cfg.hidden_size, H = ctx.shard.num_heads, d = cfg.head_dim, r = cfg.rope_dim, nope = d - r;
  const int64_t qr = cfg.q_lora_rank, W = cfg.sliding_window, T = b.rows;
  const std::vector<float> inv = rope_inv_freq(cfg, ratio);
  const int64_t* pos = b.positions.data();

  // Query: c_q = q_norm(W_qa x); q = W_qb c_q; unweighted norm per head; RoPE.
  std::vector<float> cq(T * qr), q(T * H * d);
  linear(ctx, w.wq_a, x, T, D, cq.data(), qr);
  rms_norm(ctx, &w.q_norm, cq.data(), cq.data(), T, qr, qr, qr);
  linear(ctx, w.wq_b, cq.data(), T, qr, q.data(), H * d);
  rms_norm(ctx, nullptr, q.data(), q.data(), T * H, d, d, d);
  rope_rows(ctx, q.data(), T, H, d, inv, pos, false);

  // Shared KV: kv_norm(W_kv x), RoPE, and the reference's FP8 round trip of the non-rotary dims.
  std::vector<float> kv(T * d);
  linear(ctx, w.wkv, x, T, D, kv.data(), d);
  rms_norm(ctx, &w.kv_norm, kv.data(), kv.data(), T, d, d, d);
  rope_rows(ctx, kv.data(), T, 1, d, inv, pos, false);
  if (ctx.reference()) ctx.be.fp8_round_trip({kv.data(), T, nope, d, 64});

  // Compressors run before attention: a row finished by token p is visible to p.
  std::vector<float> q_index, beta;
  if (ratio != 0) {
    DSV4_CHECK(w.compressor.has_value()) << "layer slot " << slot << " has ratio " << ratio << " but no compressor";
    run_compressor(ctx, *w.compressor, b, slot, false, x, inv);
  }
  const int64_t nh = cfg.index_num_heads, hd = cfg.index_head_dim;
  if (ratio == 4) {
    const IndexerWeights& iw = *w.indexer;
    run_compressor(ctx, iw.compressor, b, slot, true, x, inv);
    q_index.resize(T * nh * hd);
    linear(ctx, iw.wq_b, cq.data(), T, qr, q_index.data(), nh * hd);
    rope_rows(ctx, q_index.data(), T, nh, hd, inv, pos, false);
    if (ctx.reference()) {
      ctx.be.hadamard({q_index.data(), T * nh, hd, hd});
      ctx.be.fp4_round_trip({q_index.data(), T * nh, hd, hd, 32});
    }
    beta.resize(T * nh);
    linear(ctx, iw.weights_proj, x, T, D, beta.data(), nh);
    const float head_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd * nh)));
    for (float& v : beta) v *= head_scale;
  }

  // Attention per sequence over [raw rows: ring history | this chunk] and the compressed rows.
  std::vector<float> o(T * H * d);
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
    if (ratio != 0 && cp_active(ctx)) {  // context parallelism: compressed rows are sharded over ctx.par.cp
      const CpAttentionInputs in{q.data() + seg.row * H * d,
                                 H,
                                 ratio == 4 ? q_index.data() + seg.row * nh * hd : nullptr,
                                 ratio == 4 ? beta.data() + seg.row * nh : nullptr,
                                 ext.data(),
                                 n_raw,
                                 base,
                                 scale};
      cp_segment_attention(ctx, w, ls, ratio, seg, in, o.data() + seg.row * H * d);
      for (int64_t i = std::max<int64_t>(0, seg.count - W); i < seg.count; ++i) {
        std::copy_n(kv.data() + (seg.row + i) * d, d, ls.ring.data() + ((seg.start + i) % W) * d);
      }
      continue;
    }

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
  // V = K carried the absolute phase: rotate it back at the query position.
  rope_rows(ctx, o.data(), T, H, d, inv, pos, true);

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
