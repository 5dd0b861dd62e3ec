// Context-parallel attention for DeepSeek-V4 (issue 5): one long sequence shared by the ranks of a CP group.
//
// What is where (P = CP group size, r = this rank):
//   - every CP rank runs every token of the sequence through the dense part (embeddings, mHC, projections,
//     MoE): replicated work, no exchange;
//   - the raw KV ring and the compressors' fixed windows (spec §5.1) are replicated: every rank computes the
//     same kv and compressor inputs for every token, so they stay bitwise identical without communication;
//   - the EMITTED rows grow with the sequence and are sharded round robin (parallel/context_parallel.h):
//     row w of a compressor (ratio 4 main + indexer with the same w, ratio 128 main) is pooled and stored only
//     on rank w % P, at local index w / P (compressor_append skips the rows it does not own). Per-rank state
//     is ~1/P of the rows;
//   - attention of query t is a partial softmax per rank over its own rows, merged exactly across the group
//     by log-sum-exp (merge_attention_partials). The raw window and the sink join on CP rank 0 only, so each
//     is counted once;
//   - CSA (ratio 4): once a query sees more than index_topk rows, each rank scores its own indexer rows and
//     keeps its local top-k (score, global row id); distributed_topk selects the global top-k with ties to the
//     lower row id, which is exactly the set a single rank selects (the per-row scores are the same
//     arithmetic on every layout); each rank then attends to the selected rows it holds.
//
// Numerics: the selection and every row are bitwise those of CP = 1; the attention sums are reassociated by
// the merge, so CP = 2 / 4 agree with CP = 1 to ~1e-6 relative, not bitwise. The merge order is fixed (rank
// order), so a given P is bitwise reproducible run to run and every CP rank gets bitwise the same output.
//
// Exchange per layer with compressed rows and per segment: two all_gathers of [count, heads] lse and
// [count, heads, head_dim] partial outputs, plus (CSA, queries past index_topk) two all_gathers of
// [queries, index_topk] candidates. SWA layers (ratio 0) need no exchange. The exchange is synchronous:
// no overlap with compute is implemented (docs/PERFORMANCE.md).
#include <algorithm>
#include <vector>

#include "parallel/context_parallel.h"
#include "runtime/core/error.h"
#include "runtime/model/layers.h"

namespace dsv4::model_detail {

void cp_shard_state(SequenceState& state, int rank, int size) {
  DSV4_CHECK_ARG(size >= 1 && rank >= 0 && rank < size) << "context parallel: rank " << rank << " of " << size;
  for (LayerState& ls : state.layers) {
    for (CompressorState* c : {&ls.main, &ls.index}) {
      DSV4_CHECK(c->num_rows() == 0) << "context parallel: the sequence already holds rows; shard it when it is made";
      c->cp_rank = rank;
      c->cp_size = size;
    }
  }
}

void cp_segment_attention(Ctx& ctx, const AttentionWeights& w, LayerState& ls, int64_t ratio, const Segment& seg,
                          const CpAttentionInputs& in, float* out) {
  parallel::Communicator& cp = *ctx.par.cp;
  const int P = cp.size(), rank = cp.rank();
  const CompressorState& main = ls.main;
  DSV4_CHECK(main.cp_size == P && main.cp_rank == rank)
      << "context parallel: the sequence state is sharded as rank " << main.cp_rank << " of " << main.cp_size
      << " but this model is CP rank " << rank << " of " << P << " (make states with Model::new_sequence)";
  const ModelConfig& cfg = ctx.cfg;
  const int64_t W = cfg.sliding_window, H = in.heads, d = cfg.head_dim, k = cfg.index_topk;
  const int64_t nh = cfg.index_num_heads, hd = cfg.index_head_dim, count = seg.count;
  const int64_t n_local = main.num_rows();

  // CSA: queries that see more than k rows (a suffix of the segment: n_vis grows with t) select through the
  // distributed top-k; the others take every visible row.
  int64_t first_scored = count;
  std::vector<int32_t> chosen;  // [count - first_scored, k] global row ids, -1 padding
  if (ratio == 4) {
    while (first_scored > 0 && (seg.start + first_scored) / ratio > k) --first_scored;
    const int64_t n_scored = count - first_scored;
    if (n_scored > 0) {
      std::vector<int32_t> ids(n_scored * k);
      std::vector<float> scores(n_scored * k);
      indexer_select(ctx, *w.indexer, ls.index, in.q_index + first_scored * nh * hd,
                     in.head_weights + first_scored * nh, seg.start + first_scored, n_scored, ids.data(),
                     scores.data());
      for (int32_t& id : ids) {
        if (id >= 0) id = static_cast<int32_t>(static_cast<int64_t>(id) * P + rank);  // local -> global
      }
      chosen.resize(n_scored * k);
      parallel::distributed_topk(cp, scores.data(), ids.data(), n_scored, k, chosen.data());
    }
  }

  // Index lists: [raw window (rank 0 only) | this rank's compressed rows] for each query.
  const int64_t max_comp = ratio == 4 ? std::min(k, n_local) : n_local;
  const int64_t max_idx = std::max<int64_t>(1, (rank == 0 ? W : 0) + max_comp);
  std::vector<int32_t> idx(count * max_idx, -1);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t t = seg.start + i;
    int32_t* dst = idx.data() + i * max_idx;
    int64_t n = 0;
    if (rank == 0) {
      for (int64_t p = std::max<int64_t>(0, t - W + 1); p <= t; ++p) dst[n++] = static_cast<int32_t>(p - in.raw_base);
    }
    if (i >= first_scored) {
      const int32_t* sel = chosen.data() + (i - first_scored) * k;
      for (int64_t j = 0; j < k; ++j) {
        if (sel[j] >= 0 && main.owns_row(sel[j])) dst[n++] = static_cast<int32_t>(in.n_raw + sel[j] / P);
      }
    } else {
      const int64_t local_vis = main.local_rows((t + 1) / ratio);
      for (int64_t row = 0; row < local_vis; ++row) dst[n++] = static_cast<int32_t>(in.n_raw + row);
    }
    DSV4_CHECK(n <= max_idx) << "context parallel: query " << t << " has " << n << " rows, room for " << max_idx;
  }

  std::vector<float> partial(count * H * d), lse(count * H);
  kernels::SparseAttentionParams ap;
  ap.q = in.q;
  ap.tokens = count;
  ap.heads = H;
  ap.dim = d;
  ap.kv_raw = in.raw;
  ap.n_raw = in.n_raw;
  ap.comp_pages = main.rows.pages();
  ap.comp_rows_per_page = main.rows.rows_per_page();
  ap.n_comp = n_local;
  ap.indices = idx.data();
  ap.max_indices = max_idx;
  ap.sink = rank == 0 ? w.sink.data() : nullptr;  // the sink's mass joins once
  ap.scale = in.scale;
  ap.out = partial.data();
  ap.lse = lse.data();
  ctx.be.sparse_attention(ap);
  parallel::merge_attention_partials(cp, lse.data(), partial.data(), count * H, d, out);
}

}  // namespace dsv4::model_detail
