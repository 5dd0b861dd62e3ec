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
  };
}

}  // namespace dsv4::parallel::testing
