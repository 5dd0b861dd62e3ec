// Context-parallel execution of DeepSeek-V4 (issue 5): one long sequence shared by the ranks of a CP group.
//
// What is where (P = CP group size, r = this rank):
//   - the work is split by tokens: every CP rank receives the same chunks, and rank r runs the contiguous
//     sub-block [count * r / P, count * (r + 1) / P) of each chunk (cp_local_batch; the last rank holds the
//     last token). A chunk of fewer than P tokens (a decode step) is REPLICATED instead: every rank runs all
//     of it, which skips the row gather and the logits gather and keeps no rank waiting for one that works
//     (on a machine whose ranks share cores, a waiting MPI rank spins on the worker's core). Everything that
//     is per token (embedding, mHC, norms, projections, wo, MoE with its EP exchange, the head) runs on the
//     rank's own rows only; Model::forward gathers the logits (and the hidden state when asked) so that
//     every CP rank returns the same ForwardOutput;
//   - per attention layer one all_gather (cp_gather_rows) brings every rank the whole chunk's kv rows and
//     compressor inputs (a, s of the main and indexer compressors) and, on layers with compressed rows, the
//     queries (q, indexer q and head weights). The raw KV ring and the compressors' fixed windows (spec §5.1)
//     are thus replicated bitwise without further exchange;
//   - the EMITTED rows grow with the sequence and are sharded round robin (parallel/context_parallel.h):
//     row w of a compressor (ratio 4 main + indexer with the same w, ratio 128 main) is pooled and stored
//     only on rank w % P, at local index w / P (compressor_append skips the rows it does not own);
//   - attention of a query is merged from softmax partials (lse, normalised output): the raw window with the
//     sink, computed by the query's owner, and partials over compressed rows, which every rank computes for
//     ALL the chunk's queries over the rows it holds; one all_to_all_v per chunk and layer sends each query's
//     partials to its owner (to every rank for a replicated chunk), which merges them
//     (parallel::merge_partials) in a fixed order;
//   - CSA (ratio 4): once a query sees more than index_topk rows, each rank scores its own indexer rows for
//     all the chunk's queries and keeps its local top-k; distributed_topk selects the global top-k with ties
//     to the lower row id, exactly the set a single rank selects;
//   - SWA layers (ratio 0) need only the kv gather: each owner attends over the replicated raw window.
//
// Partials and merge order. Plain mode: one partial per rank over all its rows, merged as [raw, rank 0 ..
// P-1]. Deterministic mode (ModelParallel::deterministic): one partial per VIRTUAL shard v of
// kCpVirtualShards = V (row w in shard w % V; rank r holds the shards v with v % P == r, which is the
// round-robin storage when P divides V), merged as [raw, shard 0 .. V-1]. Every layout, CP = 1 included
// (Model::forward gives it a one-rank split), then runs the same kernels over the same index lists in the
// same order and the same merge: logits are bitwise equal for CP in {1, 2, 4, 8}, whoever owns a query.
// Plain mode agrees with CP = 1 to ~1e-6 relative (the merge reassociates the softmax sums) and is bitwise
// reproducible for a given P; every CP rank gets bitwise the same logits in both modes.
//
// Exchange per layer and split chunk of n tokens (f32; H = this rank's heads, d = head_dim): the row gather
// (every rank receives the n rows of d + compressor inputs [+ H * d + indexer q and weights], each rank's
// block padded to ceil(n / P) rows), the partials (each rank sends (P - 1) / P * n * H * (d + 1) floats per
// partial group: 1 in plain mode, V / P in deterministic mode), and for CSA queries past index_topk the
// distributed top-k (two all_gathers of [n, index_topk]); per forward, the logits (an all_gather of the rows,
// or a broadcast of the last row of each chunk). A replicated chunk exchanges only the partials and top-k.
//
// Overlap (chunks of kCpOverlapMinTokens or more, ModelParallel::cp_overlap). Only the calling thread
// touches the communicator (MPI_THREAD_FUNNELED suffices); a helper thread (run_beside) computes meanwhile
// what does not depend on the exchange in flight, and every kernel gets the same inputs as in sequence
// (bitwise the same logits with the switch off). Per attention layer:
//   1. the first row gather: kv, and on layers with compressed rows the compressor inputs the next step
//      needs (HCA: main; CSA: indexer, with the indexer queries and head weights), beside this rank's query
//      projection (wq_b, norm, RoPE: CpLayerInputs::make_q), which no gathered row feeds;
//   2. the second row gather (the queries; on CSA also the main compressor's inputs) beside, on HCA, the
//      main compressor and the raw-window attention of this rank's queries (they read only the local
//      queries), on CSA the indexer's compressor and this rank's local top-k (indexer_select);
//   3. CSA: the distributed top-k exchange beside the main compressor and the raw-window attention;
//   4. the partials in two pieces (each owner's first and second half of queries): piece 0's all_to_all_v
//      beside piece 1's partials, then piece 1's beside the merge of piece 0.
// SWA layers (ratio 0) stop after step 1. The logits gather stays synchronous, and so does every exchange
// of a shorter chunk. What this in-layer overlap cannot hide (the part of the first gather longer than the
// query projection, the logits gather, the MoE's EP exchange) the two-micro-batch pipeline does
// (runtime/model/model_pipeline.cc): a chunk of ModelParallel::pipeline_min_tokens or more is cut into halves
// A and B that run through the layers on two threads, each on its own communicators, B's attention of a layer
// after A's; this function then runs once per micro-batch, and each micro-batch's exchanges proceed while the
// other computes.
#include <algorithm>
#include <array>
#include <cmath>
#include <exception>
#include <functional>
#include <limits>
#include <thread>
#include <vector>

#include "parallel/context_parallel.h"
#include "runtime/core/error.h"
#include "runtime/model/layers.h"

namespace dsv4::model_detail {
namespace {

int cp_size(const Ctx& ctx) { return ctx.par.cp == nullptr ? 1 : ctx.par.cp->size(); }

// The global top-k of every rank's candidates. With one rank that is the local selection itself, already in
// the candidate order (indexer_select sorts by score, then row).
void global_topk(Ctx& ctx, const float* scores, const int32_t* ids, int64_t queries, int64_t k, int32_t* out) {
  if (cp_size(ctx) > 1) {
    parallel::distributed_topk(*ctx.par.cp, scores, ids, queries, k, out);
    return;
  }
  std::copy_n(ids, queries * k, out);
}

// Chunks of at least this many tokens overlap their exchanges with compute (run_beside; the header has the
// steps); shorter ones are not worth a thread.
constexpr int64_t kCpOverlapMinTokens = 64;

// Runs `work` on a helper thread while this thread runs `talk`; returns when both are done, rethrowing the
// first error (talk's first). The helper must not use the communicator.
void run_beside(const std::function<void()>& work, const std::function<void()>& talk) {
  parallel::note_cp_overlap();
  std::exception_ptr work_error, talk_error;
  std::thread helper([&] {
    try {
      work();
    } catch (...) {
      work_error = std::current_exception();
    }
  });
  try {
    talk();
  } catch (...) {
    talk_error = std::current_exception();
  }
  helper.join();
  if (talk_error) std::rethrow_exception(talk_error);
  if (work_error) std::rethrow_exception(work_error);
}

// Copies `rows` rows of `width` floats.
void copy_rows(const float* src, int64_t rows, int64_t width, float* dst) {
  if (rows > 0 && width > 0) std::copy_n(src, rows * width, dst);
}

}  // namespace

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

Batch cp_local_batch(const Batch& whole, int rank, int size) {
  DSV4_CHECK(size >= 1 && rank >= 0 && rank < size) << "context parallel: rank " << rank << " of " << size;
  auto split = std::make_shared<CpSplit>();
  split->size = size;
  split->rank = rank;
  split->whole = whole.segments;
  split->whole_rows = whole.rows;
  Batch b;
  for (size_t s = 0; s < whole.segments.size(); ++s) {
    const Segment& ws = whole.segments[s];
    const int64_t lo = split->begin(s, rank), hi = split->end(s, rank);
    split->local_row.push_back(b.rows);
    split->padded_row.push_back(split->padded_rows);
    split->padded_rows += split->padded(s);
    b.segments.push_back(Segment{ws.state, ws.start + lo, hi - lo, b.rows});
    for (int64_t i = lo; i < hi; ++i) {
      b.positions.push_back(whole.positions[ws.row + i]);
      b.tokens.push_back(whole.tokens[ws.row + i]);
    }
    b.rows += hi - lo;
  }
  // Split chunks have at least `size` tokens and replicated ones are whole: no rank is left without rows.
  DSV4_CHECK(whole.rows == 0 || b.rows > 0) << "context parallel: CP rank " << rank << " got no rows";
  b.cp = std::move(split);
  return b;
}

void cp_gather_rows(Ctx& ctx, const CpSplit& split, const float* local, int64_t width, float* whole) {
  const int P = split.size;
  if (P == 1) {
    copy_rows(local, split.whole_rows, width, whole);
    return;
  }
  DSV4_CHECK(ctx.par.cp != nullptr && ctx.par.cp->size() == P && ctx.par.cp->rank() == split.rank)
      << "context parallel: the batch is split for rank " << split.rank << " of " << P << " but the CP group differs";
  for (size_t s = 0; s < split.whole.size(); ++s) {
    if (split.replicated(s)) {
      copy_rows(local + split.local_row[s] * width, split.whole[s].count, width, whole + split.whole[s].row * width);
    }
  }
  const int64_t block = split.padded_rows * width;
  if (block == 0) return;
  // Each rank's sub-blocks padded to the same size per chunk, so one all_gather moves them all.
  std::vector<float> mine(static_cast<size_t>(block), 0.0f), all(static_cast<size_t>(P * block));
  for (size_t s = 0; s < split.whole.size(); ++s) {
    if (split.replicated(s)) continue;
    const int64_t n = split.end(s, split.rank) - split.begin(s, split.rank);
    copy_rows(local + split.local_row[s] * width, n, width, mine.data() + split.padded_row[s] * width);
  }
  {
    parallel::CpExchangeTimer timer(static_cast<int64_t>(all.size() * sizeof(float)));
    ctx.par.cp->all_gather(mine.data(), all.data(), static_cast<size_t>(block), DType::kF32, parallel::kDefaultStream);
  }
  for (int q = 0; q < P; ++q) {
    for (size_t s = 0; s < split.whole.size(); ++s) {
      if (split.replicated(s)) continue;
      const int64_t lo = split.begin(s, q), n = split.end(s, q) - lo;
      copy_rows(all.data() + q * block + split.padded_row[s] * width, n, width,
                whole + (split.whole[s].row + lo) * width);
    }
  }
}

void cp_attention_layer(Ctx& ctx, const AttentionWeights& w, int64_t slot, int64_t ratio, const Batch& b,
                        const CpLayerInputs& in, float* o) {
  DSV4_CHECK(b.cp != nullptr) << "cp_attention_layer needs a split batch";
  const CpSplit& sp = *b.cp;
  const ModelConfig& cfg = ctx.cfg;
  const int P = sp.size, rank = sp.rank;
  DSV4_CHECK(P == cp_size(ctx)) << "context parallel: the batch is split over " << P << " ranks, the CP group has "
                                << cp_size(ctx);
  const int64_t H = ctx.shard.num_heads, d = cfg.head_dim, W = cfg.sliding_window, k = cfg.index_topk;
  const int64_t nh = cfg.index_num_heads, hd = cfg.index_head_dim, T = b.rows;
  DSV4_CHECK(ratio == 0 || w.compressor.has_value())
      << "layer slot " << slot << " has ratio " << ratio << " but no compressor";
  const int64_t wm = ratio != 0 ? w.compressor->overlap * w.compressor->dim : 0;
  const int64_t wi = ratio == 4 ? w.indexer->compressor.overlap * w.indexer->compressor.dim : 0;

  // The layer's rows: [kv | main a | main s | index a | index s | q | index q | index weights] per row.
  enum Field { kKv, kMainA, kMainS, kIndexA, kIndexS, kQ, kQIndex, kBeta, kFields };
  const std::array<const float*, kFields> src{in.kv,      in.main_a, in.main_s,  in.index_a,
                                              in.index_s, in.q,      in.q_index, in.head_weights};
  const std::array<int64_t, kFields> fw{
      d, wm, wm, wi, wi, ratio != 0 ? H * d : 0, ratio == 4 ? nh * hd : 0, ratio == 4 ? nh : 0};

  // Overlap (the file's header): the first gather runs beside the query projection, and layers with
  // compressed rows gather in two steps, the second (the queries, and on CSA layers the main compressor's
  // inputs) beside the compute that needs only the first. Every rank takes the same decisions (they depend
  // on the split and ModelParallel::cp_overlap only).
  bool long_chunk = false;
  for (size_t s = 0; s < sp.whole.size(); ++s) {
    long_chunk = long_chunk || (!sp.replicated(s) && sp.whole[s].count >= kCpOverlapMinTokens);
  }
  const bool overlap_q = P > 1 && ctx.par.cp_overlap && long_chunk;  // the queries beside the first gather
  const bool overlap = overlap_q && ratio != 0;
  auto late = [&](int f) { return overlap && (f == kQ || (ratio == 4 && (f == kMainA || f == kMainS))); };
  std::array<std::vector<float>, kFields> all;  // the whole batch's rows of each field
  std::array<std::vector<float>, 2> packed;     // this rank's rows of each gather
  // One all_gather of the fields with late(f) == second, packed per row.
  auto gather = [&](bool second) {
    std::array<int64_t, kFields> off{};
    int64_t width = 0;
    for (int f = 0; f < kFields; ++f) {
      if (late(f) != second) continue;
      off[f] = width;
      width += fw[f];
    }
    if (width == 0) return;
    std::vector<float>& mine = packed[second];
    mine.resize(T * width);
    std::vector<float> gathered(sp.whole_rows * width);
    for (int64_t r = 0; r < T; ++r) {
      for (int f = 0; f < kFields; ++f) {
        if (late(f) == second) std::copy_n(src[f] + r * fw[f], fw[f], mine.data() + r * width + off[f]);
      }
    }
    cp_gather_rows(ctx, sp, mine.data(), width, gathered.data());
    for (int f = 0; f < kFields; ++f) {
      if (late(f) != second) continue;
      all[f].resize(sp.whole_rows * fw[f]);
      for (int64_t r = 0; r < sp.whole_rows; ++r) {
        std::copy_n(gathered.data() + r * width + off[f], fw[f], all[f].data() + r * fw[f]);
      }
    }
  };

  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const bool det = ctx.deterministic();
  const int V = kCpVirtualShards;
  DSV4_CHECK(!det || V % P == 0) << "deterministic context parallelism needs a CP size dividing " << V;
  // Partial groups of this rank: its virtual shards (deterministic) or all its rows (plain). Group g holds
  // the rows w with w % step == first(g).
  const int G = det ? V / P : 1;
  const int64_t step = det ? V : P;
  auto first = [&](int g) -> int64_t { return det ? rank + static_cast<int64_t>(g) * P : rank; };
  const int64_t per_query = H * (d + 1);  // one partial of one query: lse [H] and out [H, d]

  // What each chunk carries from one step to the next.
  struct ChunkWork {
    std::vector<float> ext;               // the raw rows: ring history, then the chunk's kv
    std::vector<float> raw_out, raw_lse;  // this rank's queries' raw-window partials (ratio != 0)
    int64_t first_scored = 0;             // CSA: queries [first_scored, count) select through the top-k
    std::vector<int32_t> ids;             // [count - first_scored, k] this rank's candidates (global ids)
    std::vector<float> scores;
    std::vector<int32_t> chosen;  // [count - first_scored, k] the global top-k, -1 padding
  };
  std::vector<ChunkWork> cw(sp.whole.size());
  // The steps' buffers, taken here on this thread before any step runs: allocated by the steps themselves
  // (in their order, some on the helper thread's malloc arena) they doubled the page faults of a CP = 2
  // prefill and cost ~5% of its time (measured).
  for (size_t s = 0; s < sp.whole.size(); ++s) {
    const Segment& seg = sp.whole[s];
    ChunkWork& c = cw[s];
    const int64_t n_own = sp.end(s, rank) - sp.begin(s, rank);
    c.ext.resize((std::min(seg.start, W - 1) + seg.count) * d);
    if (ratio != 0) {
      c.raw_out.resize(n_own * H * d);
      c.raw_lse.resize(n_own * H);
    }
    // CSA: queries that see more than k rows (a suffix of the chunk) select through the global top-k.
    c.first_scored = seg.count;
    if (ratio == 4) {
      while (c.first_scored > 0 && (seg.start + c.first_scored) / ratio > k) --c.first_scored;
    }
    const int64_t n_scored = seg.count - c.first_scored;
    c.ids.resize(n_scored * k);
    c.scores.resize(n_scored * k);
    c.chosen.resize(n_scored * k);
  }

  // The indexer's compressor (before its selection: a row finished by token p is visible to p; every rank
  // appends every token and pools only the rows it owns), then this rank's local top-k.
  auto index_step = [&](size_t s) {
    const Segment& seg = sp.whole[s];
    LayerState& ls = seg.state->layers[slot];
    ChunkWork& c = cw[s];
    if (ratio != 4) return;
    compressor_append(ctx, w.indexer->compressor, ls.index, all[kIndexA].data() + seg.row * wi,
                      all[kIndexS].data() + seg.row * wi, seg.start, seg.count, *in.inv_freq, true);
    const int64_t n_scored = seg.count - c.first_scored;
    if (n_scored == 0) return;
    indexer_select(ctx, *w.indexer, ls.index, all[kQIndex].data() + (seg.row + c.first_scored) * nh * hd,
                   all[kBeta].data() + (seg.row + c.first_scored) * nh, seg.start + c.first_scored, n_scored,
                   c.ids.data(), c.scores.data());
    for (int32_t& id : c.ids) {
      if (id >= 0) id = static_cast<int32_t>(static_cast<int64_t>(id) * P + rank);  // local -> global
    }
  };
  // The main compressor, then the raw window with the sink for this rank's queries (into o directly on SWA
  // layers, as a partial otherwise). Reads the ring, which changes only once the whole layer is done.
  auto main_step = [&](size_t s) {
    const Segment& seg = sp.whole[s];
    LayerState& ls = seg.state->layers[slot];
    ChunkWork& c = cw[s];
    if (ratio != 0) {
      compressor_append(ctx, *w.compressor, ls.main, all[kMainA].data() + seg.row * wm,
                        all[kMainS].data() + seg.row * wm, seg.start, seg.count, *in.inv_freq, false);
    }
    // Raw rows: ring history, then the whole chunk's kv.
    const int64_t n_prev = std::min(seg.start, W - 1), base = seg.start - n_prev, n_raw = n_prev + seg.count;
    std::vector<float>& ext = c.ext;
    for (int64_t p = base; p < seg.start; ++p) {
      std::copy_n(ls.ring.data() + (p % W) * d, d, ext.data() + (p - base) * d);
    }
    std::copy_n(all[kKv].data() + seg.row * d, seg.count * d, ext.data() + n_prev * d);
    const int64_t lo = sp.begin(s, rank), n_own = sp.end(s, rank) - lo;
    std::vector<int32_t> ridx(n_own * W, -1);
    for (int64_t i = 0; i < n_own; ++i) {
      const int64_t t = seg.start + lo + i;
      int64_t n = 0;
      for (int64_t p = std::max<int64_t>(0, t - W + 1); p <= t; ++p) ridx[i * W + n++] = static_cast<int32_t>(p - base);
    }
    if (n_own == 0) return;
    kernels::SparseAttentionParams rp;
    rp.q = in.q + sp.local_row[s] * H * d;
    rp.tokens = n_own;
    rp.heads = H;
    rp.dim = d;
    rp.kv_raw = ext.data();
    rp.n_raw = n_raw;
    rp.indices = ridx.data();
    rp.max_indices = W;
    rp.sink = w.sink.data();
    rp.scale = scale;
    rp.out = ratio == 0 ? o + sp.local_row[s] * H * d : c.raw_out.data();
    rp.lse = ratio == 0 ? nullptr : c.raw_lse.data();
    ctx.be.sparse_attention(rp);
  };
  // The global top-k of the chunk's scored queries (collective over the CP group when P > 1).
  auto topk_step = [&](size_t s) {
    ChunkWork& c = cw[s];
    const int64_t n_scored = sp.whole[s].count - c.first_scored;
    if (ratio != 4 || n_scored == 0) return;
    global_topk(ctx, c.scores.data(), c.ids.data(), n_scored, k, c.chosen.data());
  };
  auto for_chunks = [&](auto&& step) {
    for (size_t s = 0; s < sp.whole.size(); ++s) step(s);
  };

  // Attention over the compressed rows. The chunk's queries go in two pieces: piece h holds the h-th half of
  // every owner's queries. Each piece's partials are computed, exchanged (one all_to_all_v: to rank q, for
  // each group g, lse [n, H] then out [n, H, d] of q's queries in the piece) and merged by the owners; with
  // overlap the next piece is computed (or the last merged) on a helper thread while this thread runs the
  // exchange.
  auto partials_step = [&](size_t s) {
    const Segment& seg = sp.whole[s];
    const CompressorState& main = seg.state->layers[slot].main;
    const ChunkWork& c = cw[s];
    const int64_t count = seg.count, first_scored = c.first_scored;
    const int64_t lo = sp.begin(s, rank);
    float* o_seg = o + sp.local_row[s] * H * d;
    auto piece = [&](int q, int h, int64_t* lo_q) {  // owner q's queries of piece h: [*lo_q, return)
      const int64_t b0 = sp.begin(s, q), n = sp.end(s, q) - b0;
      *lo_q = b0 + n * h / 2;
      return b0 + n * (h + 1) / 2;
    };
    auto visit = [&](int g, int64_t i, auto&& take) {  // rows w = first(g) (mod step) query i attends to
      const int64_t w0 = first(g);
      if (i >= first_scored) {
        const int32_t* sel = c.chosen.data() + (i - first_scored) * k;
        for (int64_t j = 0; j < k; ++j) {
          if (sel[j] >= 0 && sel[j] % step == w0) take(sel[j]);
        }
      } else {
        const int64_t n_vis = (seg.start + i + 1) / ratio;
        for (int64_t row = w0; row < n_vis; row += step) take(row);
      }
    };
    struct Piece {
      std::vector<size_t> send_counts, send_displs, recv_counts, recv_displs;
      std::vector<float> send, recv;
      int64_t own_lo = 0, own_n = 0;  // this rank's queries of the piece, relative to the chunk
    };
    std::array<Piece, 2> pieces;
    auto compute = [&](int h) {
      Piece& pc = pieces[h];
      pc.send_counts.assign(P, 0);
      pc.send_displs.assign(P, 0);
      pc.recv_counts.assign(P, 0);
      pc.recv_displs.assign(P, 0);
      int64_t own_hi = piece(rank, h, &pc.own_lo);
      pc.own_n = own_hi - pc.own_lo;
      size_t send_total = 0, recv_total = 0;
      for (int q = 0; q < P; ++q) {
        int64_t lo_q = 0;
        const int64_t nq = piece(q, h, &lo_q) - lo_q;
        pc.send_displs[q] = send_total;
        pc.send_counts[q] = static_cast<size_t>(nq * G * per_query);
        send_total += pc.send_counts[q];
        pc.recv_displs[q] = recv_total;
        pc.recv_counts[q] = static_cast<size_t>(pc.own_n * G * per_query);
        recv_total += pc.recv_counts[q];
      }
      pc.send.assign(send_total, 0.0f);
      pc.recv.assign(P == 1 ? 0 : recv_total, 0.0f);
      std::vector<int32_t> idx;
      std::vector<float> part, plse;
      for (int q = 0; q < P; ++q) {
        int64_t lo_q = 0;
        const int64_t hi_q = piece(q, h, &lo_q), nq = hi_q - lo_q;
        if (nq == 0) continue;
        part.resize(nq * H * d);
        plse.resize(nq * H);
        for (int g = 0; g < G; ++g) {
          int64_t max_idx = 1;
          for (int64_t i = lo_q; i < hi_q; ++i) {
            int64_t n = 0;
            visit(g, i, [&](int64_t) { ++n; });
            max_idx = std::max(max_idx, n);
          }
          idx.assign(nq * max_idx, -1);
          for (int64_t i = lo_q; i < hi_q; ++i) {
            int64_t n = 0;
            visit(g, i, [&](int64_t row) { idx[(i - lo_q) * max_idx + n++] = static_cast<int32_t>(row / P); });
          }
          kernels::SparseAttentionParams ap;
          ap.q = all[kQ].data() + (seg.row + lo_q) * H * d;
          ap.tokens = nq;
          ap.heads = H;
          ap.dim = d;
          ap.comp_pages = main.rows.pages();
          ap.comp_rows_per_page = main.rows.rows_per_page();
          ap.n_comp = main.num_rows();
          ap.indices = idx.data();
          ap.max_indices = max_idx;
          ap.sink = nullptr;  // the sink joins once, in the raw partial
          ap.scale = scale;
          ap.out = part.data();
          ap.lse = plse.data();
          ctx.be.sparse_attention(ap);
          float* dst = pc.send.data() + pc.send_displs[q] + g * nq * per_query;
          copy_rows(plse.data(), nq, H, dst);
          copy_rows(part.data(), nq, H * d, dst + nq * H);
        }
      }
    };
    auto exchange = [&](int h) {
      Piece& pc = pieces[h];
      if (P == 1) {
        pc.recv = std::move(pc.send);
        return;
      }
      parallel::CpExchangeTimer timer(static_cast<int64_t>(pc.recv.size() * sizeof(float)));
      parallel::AllToAllVArgs args;
      args.send = pc.send.data();
      args.send_counts = pc.send_counts;
      args.send_displs = pc.send_displs;
      args.recv = pc.recv.data();
      args.recv_counts = pc.recv_counts;
      args.recv_displs = pc.recv_displs;
      args.dtype = DType::kF32;
      ctx.par.cp->all_to_all_v(args, parallel::kDefaultStream);
    };
    // Merge in the fixed order: raw, then the groups (virtual shards 0 .. V-1, or ranks 0 .. P-1).
    auto merge = [&](int h) {
      const Piece& pc = pieces[h];
      if (pc.own_n == 0) return;
      const int64_t r0 = pc.own_lo - lo;  // first of the piece's queries in this rank's block
      std::vector<const float*> lp{c.raw_lse.data() + r0 * H}, op{c.raw_out.data() + r0 * H * d};
      for (int j = 0; j < (det ? V : P); ++j) {
        const int p = det ? j % P : j, g = det ? j / P : 0;
        const float* block = pc.recv.data() + pc.recv_displs[p] + g * pc.own_n * per_query;
        lp.push_back(block);
        op.push_back(block + pc.own_n * H);
      }
      parallel::merge_partials(lp.data(), op.data(), static_cast<int>(lp.size()), pc.own_n * H, d, o_seg + r0 * H * d);
    };
    compute(0);
    if (P > 1 && ctx.par.cp_overlap && count >= kCpOverlapMinTokens) {
      // Only this thread talks to the communicator (MPI_THREAD_FUNNELED is enough); the helper runs kernels.
      run_beside([&] { compute(1); }, [&] { exchange(0); });
      run_beside([&] { merge(0); }, [&] { exchange(1); });
    } else {
      compute(1);
      exchange(0);
      merge(0);
      exchange(1);
    }
    merge(1);
  };

  // This rank's queries (read by the raw window and, on layers with compressed rows, gathered late) beside
  // the first gather, which does not carry them.
  DSV4_CHECK(in.make_q != nullptr) << "cp_attention_layer needs make_q";
  if (overlap_q) {
    run_beside(in.make_q, [&] { gather(false); });
  } else {
    in.make_q();
    gather(false);
  }
  // Nothing above touched the sequence state: a pipelined forward's micro-batch B waits only now for A.
  if (ctx.acquire_state != nullptr) ctx.acquire_state->acquire(slot);
  // Before the queries arrive: HCA runs its main compressor and raw window (neither needs another rank's
  // queries), CSA its indexer compressor and local top-k (the indexer queries came with the first gather)
  // and SWA its raw window.
  auto before_queries = [&] {
    for (size_t s = 0; s < sp.whole.size(); ++s) {
      index_step(s);
      if (ratio != 4) main_step(s);
    }
  };
  if (overlap) {
    run_beside(before_queries, [&] { gather(true); });
  } else {
    before_queries();
  }
  if (ratio == 4) {
    // The top-k exchange beside the main compressor and the raw window (neither needs the selection).
    bool scored = false;
    for (size_t s = 0; s < sp.whole.size(); ++s) scored = scored || cw[s].first_scored < sp.whole[s].count;
    if (overlap && scored) {
      run_beside([&] { for_chunks(main_step); }, [&] { for_chunks(topk_step); });
    } else {
      for_chunks(main_step);
      for_chunks(topk_step);
    }
  }
  for (size_t s = 0; s < sp.whole.size(); ++s) {
    const Segment& seg = sp.whole[s];
    if (ratio != 0) partials_step(s);
    // The chunk's newest kv rows into the ring, once nothing reads the old ones.
    LayerState& ls = seg.state->layers[slot];
    for (int64_t i = std::max<int64_t>(0, seg.count - W); i < seg.count; ++i) {
      std::copy_n(all[kKv].data() + (seg.row + i) * d, d, ls.ring.data() + ((seg.start + i) % W) * d);
    }
  }
}

}  // namespace dsv4::model_detail
