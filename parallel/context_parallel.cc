// Context-parallel building blocks: the log-sum-exp merge of partial softmaxes and the distributed top-k.
#include "parallel/context_parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "runtime/core/error.h"

namespace dsv4::parallel {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

std::atomic<int64_t> g_exchange_ns{0}, g_exchange_bytes{0}, g_exchange_calls{0}, g_exchange_overlapped{0},
    g_pipelined_forwards{0};

// The one candidate order used everywhere: higher score first, then lower id.
bool before(float sa, int32_t ia, float sb, int32_t ib) { return sa > sb || (sa == sb && ia < ib); }

}  // namespace

CpExchangeTimer::~CpExchangeTimer() {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0_);
  g_exchange_ns.fetch_add(ns.count(), std::memory_order_relaxed);
  g_exchange_bytes.fetch_add(bytes_, std::memory_order_relaxed);
  g_exchange_calls.fetch_add(1, std::memory_order_relaxed);
}

void merge_partials(const float* const* lse, const float* const* out, int parts, int64_t rows, int64_t dim,
                    float* merged_out, float* merged_lse) {
  DSV4_CHECK_ARG(parts > 0 && rows >= 0 && dim >= 0)
      << "merge_partials: bad sizes (parts " << parts << ", rows " << rows << ", dim " << dim << ")";
  for (int64_t r = 0; r < rows; ++r) {
    float mx = kNegInf;
    for (int p = 0; p < parts; ++p) mx = std::max(mx, lse[p][r]);
    float* dst = merged_out + r * dim;
    std::fill(dst, dst + dim, 0.0f);
    if (mx == kNegInf) {  // no rows anywhere: the kernels' empty-list convention
      if (merged_lse != nullptr) merged_lse[r] = kNegInf;
      continue;
    }
    float den = 0.0f;
    for (int p = 0; p < parts; ++p) {
      if (lse[p][r] == kNegInf) continue;  // exp(-inf) = 0, and its out is zeros anyway
      const float w = std::exp(lse[p][r] - mx);
      den += w;
      const float* src = out[p] + r * dim;
      for (int64_t c = 0; c < dim; ++c) dst[c] += w * src[c];
    }
    const float inv = 1.0f / den;
    for (int64_t c = 0; c < dim; ++c) dst[c] *= inv;
    if (merged_lse != nullptr) merged_lse[r] = mx + std::log(den);
  }
}

void merge_attention_partials(Communicator& comm, const float* lse, const float* out, int64_t rows, int64_t dim,
                              float* merged_out, Stream stream) {
  DSV4_CHECK_ARG(rows >= 0 && dim >= 0) << "merge_attention_partials: bad sizes (rows " << rows << ", dim " << dim
                                        << ")";
  if (rows == 0 || dim == 0) return;
  DSV4_CHECK_ARG(lse != nullptr && out != nullptr && merged_out != nullptr) << "merge_attention_partials: null buffer";
  const int P = comm.size();
  if (P == 1) {
    std::copy_n(out, rows * dim, merged_out);
    return;
  }
  std::vector<float> all_lse(static_cast<size_t>(P * rows)), all_out(static_cast<size_t>(P * rows * dim));
  {
    CpExchangeTimer timer(static_cast<int64_t>((all_lse.size() + all_out.size()) * sizeof(float)));
    comm.all_gather(lse, all_lse.data(), static_cast<size_t>(rows), DType::kF32, stream);
    comm.all_gather(out, all_out.data(), static_cast<size_t>(rows * dim), DType::kF32, stream);
  }
  std::vector<const float*> lp(P), op(P);
  for (int p = 0; p < P; ++p) {
    lp[p] = all_lse.data() + p * rows;
    op[p] = all_out.data() + p * rows * dim;
  }
  merge_partials(lp.data(), op.data(), P, rows, dim, merged_out);
}

void select_topk(const float* scores, const int32_t* ids, int64_t n, int64_t k, int32_t* out_ids, float* out_scores) {
  DSV4_CHECK_ARG(n >= 0 && k >= 0) << "select_topk: bad sizes (n " << n << ", k " << k << ")";
  std::vector<int64_t> order;
  order.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] >= 0) order.push_back(i);
  }
  const int64_t take = std::min<int64_t>(k, static_cast<int64_t>(order.size()));
  std::partial_sort(order.begin(), order.begin() + take, order.end(),
                    [&](int64_t a, int64_t b) { return before(scores[a], ids[a], scores[b], ids[b]); });
  for (int64_t j = 0; j < k; ++j) {
    out_ids[j] = j < take ? ids[order[j]] : -1;
    if (out_scores != nullptr) out_scores[j] = j < take ? scores[order[j]] : kNegInf;
  }
}

void distributed_topk(Communicator& comm, const float* scores, const int32_t* ids, int64_t queries, int64_t k,
                      int32_t* out_ids, Stream stream) {
  DSV4_CHECK_ARG(queries >= 0 && k >= 0) << "distributed_topk: bad sizes (queries " << queries << ", k " << k << ")";
  if (queries == 0 || k == 0) return;
  const int P = comm.size();
  const size_t per_rank = static_cast<size_t>(queries * k);
  std::vector<float> all_scores(P * per_rank);
  std::vector<int32_t> all_ids(P * per_rank);
  if (P == 1) {
    std::copy_n(scores, per_rank, all_scores.data());
    std::copy_n(ids, per_rank, all_ids.data());
  } else {
    CpExchangeTimer timer(static_cast<int64_t>(P * per_rank * (sizeof(float) + sizeof(int32_t))));
    comm.all_gather(scores, all_scores.data(), per_rank, DType::kF32, stream);
    comm.all_gather(ids, all_ids.data(), per_rank, DType::kI32, stream);
  }
  std::vector<float> cand_s(static_cast<size_t>(P * k));
  std::vector<int32_t> cand_i(static_cast<size_t>(P * k));
  std::vector<int64_t> head(static_cast<size_t>(P));
  for (int64_t q = 0; q < queries; ++q) {
    // Usually every rank's list is already in the candidate order with its padding last (a local top-k):
    // then a P-way merge of the list heads gives the same ids in the same order as select_topk, in O(P k).
    bool sorted = true;
    for (int p = 0; p < P && sorted; ++p) {
      const float* sc = all_scores.data() + p * per_rank + q * k;
      const int32_t* id = all_ids.data() + p * per_rank + q * k;
      for (int64_t j = 1; j < k && sorted; ++j) {
        if (id[j] < 0) continue;
        sorted = id[j - 1] >= 0 && before(sc[j - 1], id[j - 1], sc[j], id[j]);
      }
    }
    if (sorted) {
      std::fill(head.begin(), head.end(), 0);
      for (int64_t j = 0; j < k; ++j) {
        int best = -1;
        float best_s = 0.0f;
        int32_t best_i = -1;
        for (int p = 0; p < P; ++p) {
          if (head[p] >= k) continue;
          const int64_t at = p * per_rank + q * k + head[p];
          if (all_ids[at] < 0) continue;
          if (best < 0 || before(all_scores[at], all_ids[at], best_s, best_i)) {
            best = p;
            best_s = all_scores[at];
            best_i = all_ids[at];
          }
        }
        out_ids[q * k + j] = best_i;
        if (best >= 0) ++head[best];
      }
      continue;
    }
    for (int p = 0; p < P; ++p) {
      std::copy_n(all_scores.data() + p * per_rank + q * k, k, cand_s.data() + p * k);
      std::copy_n(all_ids.data() + p * per_rank + q * k, k, cand_i.data() + p * k);
    }
    select_topk(cand_s.data(), cand_i.data(), P * k, k, out_ids + q * k);
  }
}

CpExchangeStats cp_exchange_stats() {
  CpExchangeStats s;
  s.seconds = 1e-9 * static_cast<double>(g_exchange_ns.load(std::memory_order_relaxed));
  s.bytes = g_exchange_bytes.load(std::memory_order_relaxed);
  s.calls = g_exchange_calls.load(std::memory_order_relaxed);
  s.overlapped = g_exchange_overlapped.load(std::memory_order_relaxed);
  s.pipelined_forwards = g_pipelined_forwards.load(std::memory_order_relaxed);
  return s;
}

void reset_cp_exchange_stats() {
  g_exchange_ns.store(0, std::memory_order_relaxed);
  g_exchange_bytes.store(0, std::memory_order_relaxed);
  g_exchange_calls.store(0, std::memory_order_relaxed);
  g_exchange_overlapped.store(0, std::memory_order_relaxed);
  g_pipelined_forwards.store(0, std::memory_order_relaxed);
}

void note_cp_overlap() { g_exchange_overlapped.fetch_add(1, std::memory_order_relaxed); }
void note_pipelined_forward() { g_pipelined_forwards.fetch_add(1, std::memory_order_relaxed); }

}  // namespace dsv4::parallel
