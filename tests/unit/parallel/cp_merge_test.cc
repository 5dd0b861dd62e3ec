// Context-parallel building blocks over the in-process backend: the log-sum-exp merge of partial softmaxes
// equals a one-shot softmax (sink included, empty shards included), and the distributed top-k equals a
// single top-k over all candidates, ties included.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/ops/attention.h"
#include "parallel/bootstrap.h"
#include "parallel/context_parallel.h"

namespace dsv4::parallel {
namespace {

using namespace std::chrono_literals;

TEST(CpShard, RoundRobinCounts) {
  for (int P = 1; P <= 4; ++P) {
    for (int64_t n = 0; n < 20; ++n) {
      int64_t total = 0;
      for (int r = 0; r < P; ++r) {
        RoundRobinShard s{r, P};
        int64_t owned = 0;
        for (int64_t w = 0; w < n; ++w) {
          if (s.owns(w)) {
            EXPECT_EQ(s.local_index(w), owned);
            EXPECT_EQ(s.global_index(owned), w);
            ++owned;
          }
        }
        EXPECT_EQ(s.local_count(n), owned) << "P " << P << " rank " << r << " n " << n;
        EXPECT_LE(owned, n / P + 1);
        total += owned;
      }
      EXPECT_EQ(total, n);
    }
  }
}

// Random q, rows, sink; one-shot attention over all rows vs. P partials over a round-robin split of the
// rows (the sink only in rank 0's partial) merged over the communicator.
void check_merge(int P, int rank, Communicator& comm, int64_t n_rows_total, uint32_t seed) {
  const int64_t T = 3, H = 2, d = 16;
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> q(T * H * d), kv(n_rows_total * d), sink(H);
  for (float& v : q) v = 2.0f * nd(rng);
  for (float& v : kv) v = nd(rng);
  for (float& v : sink) v = nd(rng);

  // One shot: every row for every query.
  std::vector<int32_t> all(T * n_rows_total);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < n_rows_total; ++j) all[t * n_rows_total + j] = static_cast<int32_t>(j);
  kernels::SparseAttentionParams p;
  p.q = q.data();
  p.tokens = T;
  p.heads = H;
  p.dim = d;
  p.kv_raw = kv.data();
  p.n_raw = n_rows_total;
  p.indices = all.data();
  p.max_indices = n_rows_total;
  p.sink = sink.data();
  p.scale = 0.25f;
  std::vector<float> want(T * H * d), want_lse(T * H);
  p.out = want.data();
  p.lse = want_lse.data();
  kernels::cpu::sparse_attention(p);

  // This rank's rows only.
  RoundRobinShard shard{rank, P};
  std::vector<int32_t> mine(T * std::max<int64_t>(1, n_rows_total), -1);
  for (int64_t t = 0; t < T; ++t) {
    int64_t n = 0;
    for (int64_t j = 0; j < n_rows_total; ++j)
      if (shard.owns(j)) mine[t * std::max<int64_t>(1, n_rows_total) + n++] = static_cast<int32_t>(j);
  }
  p.indices = mine.data();
  p.max_indices = std::max<int64_t>(1, n_rows_total);
  p.sink = rank == 0 ? sink.data() : nullptr;
  std::vector<float> part(T * H * d), part_lse(T * H), merged(T * H * d);
  p.out = part.data();
  p.lse = part_lse.data();
  kernels::cpu::sparse_attention(p);
  merge_attention_partials(comm, part_lse.data(), part.data(), T * H, d, merged.data());
  for (int64_t i = 0; i < T * H * d; ++i) {
    EXPECT_NEAR(merged[i], want[i], 1e-6f * std::max(1.0f, std::fabs(want[i])))
        << "P " << P << " rows " << n_rows_total << " element " << i;
  }
}

TEST(CpMerge, EqualsOneShotSoftmax) {
  for (int P : {1, 2, 3, 4}) {
    run_inproc_ranks(P, 30s, [P](int rank, Bootstrap& bootstrap) {
      auto comm = make_communicator("inproc", bootstrap);
      // 1 row: ranks > 0 hold nothing (lse -inf); 2..: uneven shares.
      for (int64_t n : {1, 2, 5, 37, 200}) check_merge(P, rank, *comm, n, static_cast<uint32_t>(n * 7 + 1));
    });
  }
}

TEST(CpMerge, EmptyEverywhereGivesZeros) {
  const float neg = -std::numeric_limits<float>::infinity();
  const float lse0[1] = {neg}, lse1[1] = {neg}, out0[2] = {0, 0}, out1[2] = {0, 0};
  const float* l[2] = {lse0, lse1};
  const float* o[2] = {out0, out1};
  float m[2] = {7, 7}, ml = 0;
  merge_partials(l, o, 2, 1, 2, m, &ml);
  EXPECT_EQ(m[0], 0.0f);
  EXPECT_EQ(m[1], 0.0f);
  EXPECT_EQ(ml, neg);
}

TEST(CpMerge, BitwiseReproducible) {
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    std::vector<float> got;
    run_inproc_ranks(3, 30s, [&](int rank, Bootstrap& bootstrap) {
      auto comm = make_communicator("inproc", bootstrap);
      std::mt19937 rng(11 + rank);
      std::normal_distribution<float> nd(0.0f, 3.0f);
      std::vector<float> lse(8), out(8 * 5), merged(8 * 5);
      for (float& v : lse) v = nd(rng);
      for (float& v : out) v = nd(rng);
      merge_attention_partials(*comm, lse.data(), out.data(), 8, 5, merged.data());
      if (rank == 2) got = merged;
    });
    if (run == 0) {
      first = got;
    } else {
      EXPECT_EQ(got, first);
    }
  }
}

// Scores with many exact ties (small integer values) so the id tie-break decides membership.
TEST(CpTopk, DistributedEqualsSingleIncludingTies) {
  const int64_t n_total = 97, queries = 4;
  for (int P : {1, 2, 3, 4}) {
    for (int64_t k : {1, 5, 16, 40, 120}) {
      std::mt19937 rng(static_cast<uint32_t>(P * 1000 + k));
      std::uniform_int_distribution<int> small(0, 6);
      std::vector<float> scores(queries * n_total);
      for (float& s : scores) s = static_cast<float>(small(rng));
      std::vector<int32_t> want(queries * k);
      std::vector<int32_t> ids(n_total);
      for (int64_t i = 0; i < n_total; ++i) ids[i] = static_cast<int32_t>(i);
      for (int64_t q = 0; q < queries; ++q) {
        select_topk(scores.data() + q * n_total, ids.data(), n_total, k, want.data() + q * k);
      }
      run_inproc_ranks(P, 30s, [&](int rank, Bootstrap& bootstrap) {
        auto comm = make_communicator("inproc", bootstrap);
        RoundRobinShard shard{rank, P};
        const int64_t local = shard.local_count(n_total);
        std::vector<float> ls(queries * k), ms(local);
        std::vector<int32_t> li(queries * k), mi(local), got(queries * k);
        for (int64_t q = 0; q < queries; ++q) {
          for (int64_t j = 0; j < local; ++j) {
            mi[j] = static_cast<int32_t>(shard.global_index(j));
            ms[j] = scores[q * n_total + mi[j]];
          }
          select_topk(ms.data(), mi.data(), local, k, li.data() + q * k, ls.data() + q * k);
        }
        distributed_topk(*comm, ls.data(), li.data(), queries, k, got.data());
        EXPECT_EQ(got, want) << "P " << P << " k " << k << " rank " << rank;
        // The same candidates in a shuffled order (padding anywhere): the unsorted path, the same answer.
        std::mt19937 shuffle(static_cast<uint32_t>(rank + 7));
        for (int64_t q = 0; q < queries; ++q) {
          for (int64_t j = k - 1; j > 0; --j) {
            const int64_t o = static_cast<int64_t>(shuffle() % static_cast<uint32_t>(j + 1));
            std::swap(li[q * k + j], li[q * k + o]);
            std::swap(ls[q * k + j], ls[q * k + o]);
          }
        }
        distributed_topk(*comm, ls.data(), li.data(), queries, k, got.data());
        EXPECT_EQ(got, want) << "shuffled, P " << P << " k " << k << " rank " << rank;
      });
    }
  }
}

TEST(CpTopk, OrderAndPadding) {
  const float s[5] = {1.0f, 3.0f, 3.0f, 2.0f, 9.0f};
  const int32_t ids[5] = {4, 8, 2, 6, -1};  // the 9.0 is padding
  int32_t out[6];
  float os[6];
  select_topk(s, ids, 5, 6, out, os);
  const std::vector<int32_t> want = {2, 8, 6, 4, -1, -1};
  EXPECT_EQ(std::vector<int32_t>(out, out + 6), want);
  EXPECT_EQ(os[0], 3.0f);
  EXPECT_EQ(os[5], -std::numeric_limits<float>::infinity());
}

}  // namespace
}  // namespace dsv4::parallel
