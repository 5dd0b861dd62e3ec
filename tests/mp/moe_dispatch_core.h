// Backend-agnostic EP dispatch/combine cases: random routing (ranks with zero tokens, experts with zero
// tokens, unused -1 slots), checked against a single-rank reference that every rank computes itself.
//
// Every rank can regenerate every rank's tokens and routing from (seed, rank), so the expected received
// rows and the combined outputs are known exactly: the combine is bitwise equal to the reference because
// the reference sums in the same order (k ascending, f32, one rounding).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/moe_dispatch.h"
#include "runtime/core/float_formats.h"

namespace dsv4::parallel::testing {

/// splitmix64: the same stream on every rank and platform.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int below(int n) { return static_cast<int>(next() % static_cast<uint64_t>(n)); }
  float uniform() { return static_cast<float>(next() >> 40) / static_cast<float>(1ull << 24); }  // [0, 1)

 private:
  uint64_t state_;
};

struct RankTokens {
  int64_t num_tokens = 0;
  std::vector<int32_t> ids;    // [tokens, k]
  std::vector<float> weights;  // [tokens, k]
  std::vector<float> x;        // [tokens, hidden] (exactly representable in bf16 when dtype is bf16)
};

struct MoeCase {
  int num_experts;
  int64_t hidden;
  int top_k;
  DType dtype;
  uint64_t seed;
  MoeExchange exchange = MoeExchange::kAuto;
};

/// Rank r's tokens: rank 1 has none; distinct experts per token; the last expert is never chosen (when
/// there is more than one); about
/// one slot in 7 is unused (-1).
inline RankTokens make_tokens(const MoeCase& c, int rank) {
  Rng rng(c.seed * 1000003 + static_cast<uint64_t>(rank));
  RankTokens t;
  t.num_tokens = rank == 1 ? 0 : 1 + rng.below(23);
  for (int64_t i = 0; i < t.num_tokens; ++i) {
    std::vector<int32_t> chosen;
    while (static_cast<int>(chosen.size()) < c.top_k) {
      const int32_t e = rng.below(7) == 0 ? -1 : rng.below(std::max(1, c.num_experts - 1));
      bool repeat = false;
      for (int32_t p : chosen) repeat |= (p == e && e != -1);
      if (!repeat) chosen.push_back(e);
    }
    for (int32_t e : chosen) {
      t.ids.push_back(e);
      t.weights.push_back(0.25f + rng.uniform());
    }
  }
  for (int64_t i = 0; i < t.num_tokens * c.hidden; ++i) {
    float v = rng.uniform() * 4.0f - 2.0f;
    t.x.push_back(c.dtype == DType::kBF16 ? round_bf16(v) : v);
  }
  return t;
}

/// A toy expert: out = v * (1 + e / 8) + e / 16, rounded to the row dtype.
inline float expert_fn(int expert, float v, DType dtype) {
  const float out = v * (1.0f + static_cast<float>(expert) / 8.0f) + static_cast<float>(expert) / 16.0f;
  return dtype == DType::kBF16 ? round_bf16(out) : out;
}

inline std::vector<std::byte> encode(const std::vector<float>& values, DType dtype) {
  std::vector<std::byte> out(dtype_bytes(dtype, static_cast<int64_t>(values.size())));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(out.data() + 4 * i, &values[i], 4);
    } else {
      const uint16_t b = f32_to_bf16(values[i]);
      std::memcpy(out.data() + 2 * i, &b, 2);
    }
  }
  return out;
}

inline float decode(const std::byte* data, size_t i, DType dtype) {
  if (dtype == DType::kF32) {
    float v;
    std::memcpy(&v, data + 4 * i, 4);
    return v;
  }
  uint16_t b;
  std::memcpy(&b, data + 2 * i, 2);
  return bf16_to_f32(b);
}

inline void case_moe_dispatch_combine(Communicator& ep, const MoeCase& c) {
  const int n = ep.size(), r = ep.rank();
  const int local = c.num_experts / n;
  const MoeDispatchConfig config{c.num_experts, c.hidden, c.dtype, c.exchange};
  std::vector<RankTokens> all;
  for (int p = 0; p < n; ++p) all.push_back(make_tokens(c, p));
  const RankTokens& mine = all[r];
  const std::vector<std::byte> x = encode(mine.x, c.dtype);

  MoeDispatcher dispatcher(ep, config);
  const MoeDispatchResult& d = dispatcher.dispatch({mine.num_tokens, c.top_k, mine.ids.data(), x.data()});

  // Expected rows: for each local expert, by source rank, then by source slot order.
  std::vector<float> expected;
  std::vector<int64_t> expected_per_expert(static_cast<size_t>(local), 0);
  for (int e = 0; e < local; ++e) {
    const int expert = r * local + e;
    for (int p = 0; p < n; ++p)
      for (size_t s = 0; s < all[p].ids.size(); ++s)
        if (all[p].ids[s] == expert) {
          ++expected_per_expert[e];
          const int64_t t = static_cast<int64_t>(s) / c.top_k;
          for (int64_t i = 0; i < c.hidden; ++i) expected.push_back(all[p].x[t * c.hidden + i]);
        }
  }
  EXPECT_EQ(d.num_tokens_per_expert, expected_per_expert) << "rank " << r;
  EXPECT_EQ(d.first_local_expert, r * local);
  EXPECT_EQ(d.num_rows * c.hidden, static_cast<int64_t>(expected.size()));
  if (d.num_rows * c.hidden == static_cast<int64_t>(expected.size())) {
    for (size_t i = 0; i < expected.size(); ++i) {
      if (decode(d.rows, i, c.dtype) != expected[i]) {
        ADD_FAILURE() << "rank " << r << ": dispatched element " << i << " is " << decode(d.rows, i, c.dtype)
                      << ", expected " << expected[i];
        break;
      }
    }
  }

  // Run the toy experts on the grouped rows.
  std::vector<float> results(static_cast<size_t>(d.num_rows * c.hidden));
  for (int e = 0; e < local; ++e)
    for (int64_t row = d.expert_offsets[e]; row < d.expert_offsets[e + 1]; ++row)
      for (int64_t i = 0; i < c.hidden; ++i)
        results[row * c.hidden + i] = expert_fn(r * local + e, decode(d.rows, row * c.hidden + i, c.dtype), c.dtype);
  const std::vector<std::byte> expert_out = encode(results, c.dtype);
  std::vector<std::byte> y(dtype_bytes(c.dtype, mine.num_tokens * c.hidden));
  dispatcher.combine(expert_out.data(), mine.weights.data(), y.data());

  // Single-rank reference for my tokens.
  for (int64_t t = 0; t < mine.num_tokens; ++t) {
    for (int64_t i = 0; i < c.hidden; ++i) {
      float acc = 0.0f;
      for (int k = 0; k < c.top_k; ++k) {
        const int32_t e = mine.ids[t * c.top_k + k];
        if (e < 0) continue;
        acc += mine.weights[t * c.top_k + k] * expert_fn(e, mine.x[t * c.hidden + i], c.dtype);
      }
      const float want = c.dtype == DType::kBF16 ? round_bf16(acc) : acc;
      const float got = decode(y.data(), static_cast<size_t>(t * c.hidden + i), c.dtype);
      if (got != want) {
        ADD_FAILURE() << "rank " << r << ": combined token " << t << " element " << i << " is " << got
                      << ", reference " << want;
        return;
      }
    }
  }
}

/// Every exchange (kSingle, kPerExpert, kShared, kAuto), one dispatcher each, over the same sequence of batches
/// whose sizes rise (so the shared window grows between calls) with a batch where every rank has zero tokens
/// and rank 1 always has none: the dispatched rows and the combined outputs must be bitwise equal to kSingle's,
/// with the expert output in a separate buffer and (identity experts, second combine) result().rows itself.
/// `expect_shared`: the backend offers a window, so kAuto must have taken kShared.
inline void case_moe_exchanges_agree(Communicator& ep, DType dtype, int64_t hidden, bool expect_shared) {
  const int n = ep.size(), r = ep.rank(), experts = 4 * n, top_k = 3;
  const MoeExchange exchanges[] = {MoeExchange::kSingle, MoeExchange::kPerExpert, MoeExchange::kShared,
                                   MoeExchange::kAuto};
  std::vector<std::unique_ptr<MoeDispatcher>> dispatchers;
  for (MoeExchange e : exchanges)
    dispatchers.push_back(std::make_unique<MoeDispatcher>(ep, MoeDispatchConfig{experts, hidden, dtype, e}));
  const int64_t batches[] = {2, 0, 7, 30, 3, 90};
  for (size_t b = 0; b < std::size(batches); ++b) {
    Rng rng(977 * b + 13 * static_cast<uint64_t>(r) + 5);
    const int64_t tokens = r == 1 ? 0 : batches[b] * (1 + r % 3);
    std::vector<int32_t> ids;
    std::vector<float> weights, x;
    for (int64_t t = 0; t < tokens * top_k; ++t) {
      int32_t e;
      bool repeat;
      do {
        e = rng.below(6) == 0 ? -1 : rng.below(experts);
        repeat = false;
        for (int64_t j = t - t % top_k; j < t; ++j) repeat |= e != -1 && ids[j] == e;
      } while (repeat);
      ids.push_back(e);
      weights.push_back(0.25f + rng.uniform());
    }
    for (int64_t i = 0; i < tokens * hidden; ++i) {
      const float v = rng.uniform() * 4.0f - 2.0f;
      x.push_back(dtype == DType::kBF16 ? round_bf16(v) : v);
    }
    const std::vector<std::byte> xb = encode(x, dtype);
    const size_t y_bytes = dtype_bytes(dtype, tokens * hidden);
    std::vector<std::byte> want_rows, want_y, want_identity;
    std::vector<int64_t> want_per_expert;
    for (size_t i = 0; i < dispatchers.size(); ++i) {
      const MoeDispatchResult& d = dispatchers[i]->dispatch({tokens, top_k, ids.data(), xb.data()});
      const std::vector<std::byte> rows(d.rows, d.rows + dtype_bytes(dtype, d.num_rows * hidden));
      std::vector<float> results(static_cast<size_t>(d.num_rows * hidden));
      for (int e = 0; e < static_cast<int>(d.num_tokens_per_expert.size()); ++e)
        for (int64_t row = d.expert_offsets[e]; row < d.expert_offsets[e + 1]; ++row)
          for (int64_t j = 0; j < hidden; ++j)
            results[row * hidden + j] =
                expert_fn(d.first_local_expert + e, decode(d.rows, row * hidden + j, dtype), dtype);
      const std::vector<std::byte> expert_out = encode(results, dtype);
      std::vector<std::byte> y(y_bytes), identity(y_bytes);
      dispatchers[i]->combine(expert_out.data(), weights.data(), y.data());
      EXPECT_EQ(std::vector<std::byte>(d.rows, d.rows + rows.size()), rows)
          << "combine changed result().rows (" << moe_exchange_name(exchanges[i]) << ")";
      dispatchers[i]->combine(d.rows, weights.data(), identity.data());
      if (i == 0) {
        want_rows = rows;
        want_y = y;
        want_identity = identity;
        want_per_expert = d.num_tokens_per_expert;
        continue;
      }
      const char* name = moe_exchange_name(exchanges[i]);
      EXPECT_EQ(d.num_tokens_per_expert, want_per_expert) << name << ", rank " << r << ", batch " << b;
      EXPECT_TRUE(rows == want_rows) << name << ": dispatched rows differ from single's, rank " << r << ", batch " << b;
      EXPECT_TRUE(y == want_y) << name << ": combined outputs differ from single's, rank " << r << ", batch " << b;
      EXPECT_TRUE(identity == want_identity)
          << name << ": combine of result().rows differs from single's, rank " << r << ", batch " << b;
    }
    EXPECT_EQ(dispatchers[2]->last_exchange(), MoeExchange::kShared);
    EXPECT_EQ(dispatchers[3]->last_exchange() == MoeExchange::kShared, expect_shared);
  }
}

/// A node-shared window: every rank writes a pattern into every segment (its own stripe), fences, and reads
/// all stripes of its own segment; twice, with windows of two sizes (64-byte aligned segments).
inline void case_shared_window(Communicator& comm) {
  const int n = comm.size(), r = comm.rank();
  for (size_t stripe : {size_t{8}, size_t{4096}}) {
    std::unique_ptr<SharedWindow> w = comm.make_shared_window(stripe * n);
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(w->rank(), r);
    EXPECT_EQ(w->size(), n);
    EXPECT_EQ(w->capacity(), stripe * n);
    for (int p = 0; p < n; ++p) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(w->segment(p)) % 64, 0u) << "segment " << p;
      std::memset(w->segment(p) + r * stripe, 16 * r + p, stripe);
    }
    w->fence();
    for (int q = 0; q < n; ++q)
      for (size_t i = 0; i < stripe; ++i)
        if (w->segment(r)[q * stripe + i] != static_cast<std::byte>(16 * q + r)) {
          ADD_FAILURE() << "rank " << r << ": byte " << i << " of rank " << q << "'s stripe";
          break;
        }
    w->fence();  // no rank frees (MPI) or rewrites before all have read
  }
}

/// The case table every front end runs.
inline std::vector<MoeCase> moe_cases(int ranks) {
  return {
      {4 * ranks, 8, 2, DType::kF32, 1, MoeExchange::kSingle},
      {4 * ranks, 16, 3, DType::kBF16, 2, MoeExchange::kPerExpert},
      {2 * ranks, 5, 1, DType::kBF16, 3, MoeExchange::kSingle},     // odd width, top-1
      {1 * ranks, 6, 1, DType::kF32, 5, MoeExchange::kAuto},        // one expert per rank
      {8 * ranks, 32, 6, DType::kF32, 4, MoeExchange::kPerExpert},  // top-6 like V4
      {8 * ranks, 32, 6, DType::kBF16, 4, MoeExchange::kSingle},
      {4 * ranks, 4096, 4, DType::kBF16, 6, MoeExchange::kAuto},    // wide rows under kAuto's choice
      {8 * ranks, 32, 6, DType::kF32, 4, MoeExchange::kShared},
      {2 * ranks, 5, 1, DType::kBF16, 3, MoeExchange::kShared},
  };
}

}  // namespace dsv4::parallel::testing
