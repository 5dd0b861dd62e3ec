// Context parallelism of the model (shared by model_cp_inproc_test.cc and model_cp_mpi.cc): a tiny random
// model run with its sequences sharded over a CP group (each rank running a sub-block of every chunk) must
// give the logits of the single-process model (CP = 1) within 1e-5 relative, and bitwise in deterministic
// mode, across the raw-ring wrap, the first compressed row of each ratio, the start of indexer selection,
// many ratio-128 rows, chunk boundaries not aligned to 4 or 128, chunks shorter than the group (replicated on
// every rank) or barely longer (sub-blocks of one or two tokens), and decode after the CP prefill; and two
// sequences batched per forward with every LogitsRows mode, the hidden state and an MTP draft. Chunks of 64
// tokens or more take the overlapped exchanges (a helper thread), shorter ones the sequential ones; a batch
// with one chunk of each takes the overlapped ones for both. Chunks of 40 tokens or more run as two
// micro-batches (the pipeline: two threads, each on its own groups), shorter ones as one.
// Every CP rank must get bitwise the same logits, a second run bitwise the first, and a CP sequence must hold
// about 1/CP of the compressed rows.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "runtime/kv/cpu_state_bytes.h"
#include "tests/unit/model/tiny_model.h"

namespace dsv4::testing {

struct CpCase {
  std::string name;
  std::vector<int64_t> ratios;
  int64_t window = 8;
  int64_t topk = 2;
  std::vector<int64_t> chunks;  // prefill chunk sizes, then `decode` single tokens
  int64_t decode = 0;
  Numerics numerics = Numerics::kPlain;
};

inline std::vector<CpCase> cp_cases() {
  return {
      // Real window and HCA ratio (128): the ring wraps at 128, HCA rows from token 127 on (6 of them), CSA
      // selection (top-16) from token 67; chunk ends at 61, 64, 194, 444, 445, 803 (none a multiple of 4).
      {"window128_hca128", {0, 4, 128, 4}, 128, 16, {61, 3, 130, 250, 1, 358}, 3, Numerics::kPlain},
      // Small ratios so that many rows (and indexer selection from token 11) fit in a short run.
      // (chunks of 1 and 2 tokens are shorter than 4 ranks and run replicated; 5 and 6 split into 1 or 2 each).
      {"window8_ratio8", {4, 8, 0}, 8, 3, {1, 2, 6, 29, 47, 5}, 4, Numerics::kPlain},
      // The reference numerics (FP8 / FP4 emulation) on the same schedule.
      {"reference", {4, 8, 0}, 8, 3, {3, 10, 41, 17}, 3, Numerics::kReference},
  };
}

inline std::vector<int32_t> cp_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& v : t) v = static_cast<int32_t>(rng() % vocab);
  return t;
}

/// Chunks of this many tokens or more run as two micro-batches in the CP tests (ModelParallel::
/// pipeline_min_tokens): 41, 47, 61, 130, 250 and 358 of cp_cases(), and the long steps of run_cp_batches.
inline constexpr int64_t kCpTestPipelineMinTokens = 40;

/// TP = 1, EP = 1 and a CP group of all of `world`'s ranks, with the pipeline's second groups.
struct CpGroups {
  explicit CpGroups(parallel::Communicator& world)
      : tp(world.split(world.rank(), 0)),
        ep(world.split(world.rank(), 0)),
        cp(world.split(0, world.rank())),
        tp2(world.split(world.rank(), 0)),
        ep2(world.split(world.rank(), 0)),
        cp2(world.split(0, world.rank())) {}
  ModelParallel parallel(bool deterministic, int64_t pipeline_min_tokens = kCpTestPipelineMinTokens) const {
    ModelParallel par{tp.get(), ep.get(), deterministic, cp.get()};
    par.second = {tp2.get(), ep2.get(), cp2.get()};
    par.pipeline_min_tokens = pipeline_min_tokens;
    return par;
  }
  std::unique_ptr<parallel::Communicator> tp, ep, cp, tp2, ep2, cp2;
};

/// State pages of the CP tests: one main row of the tiny model (64 floats) per page, so that the pages a rank
/// books follow its share of the rows exactly.
inline constexpr int64_t kCpTestPageBytes = 256;

/// Runs the case's schedule on `model`; returns every logit row (prefill chunks, then decode steps), the
/// number of compressed rows the sequence holds (main + indexer, all layers) and the bytes its pool booked.
inline std::vector<float> run_cp_schedule(Model& model, const CpCase& c, int64_t* rows_held = nullptr,
                                          int64_t* state_bytes = nullptr) {
  int64_t total = c.decode;
  for (int64_t n : c.chunks) total += n;
  const std::vector<int32_t> tokens = cp_tokens(total, model.config().vocab_size, 5);
  StatePool pool({kCpTestPageBytes, kUnlimitedStateBudget});
  SequenceState st = model.new_sequence(&pool);
  std::vector<float> all;
  int64_t at = 0;
  auto run = [&](int64_t n) {
    Tensor l = model.prefill(st, std::span<const int32_t>(tokens.data() + at, n));
    all.insert(all.end(), l.as<float>(), l.as<float>() + l.numel());
    at += n;
  };
  for (int64_t n : c.chunks) run(n);
  for (int64_t i = 0; i < c.decode; ++i) run(1);
  if (rows_held != nullptr) {
    *rows_held = 0;
    for (const LayerState& ls : st.layers) *rows_held += ls.main.num_rows() + ls.index.num_rows();
  }
  if (state_bytes != nullptr) *state_bytes = st.memory_bytes();
  return all;
}

/// max |got - want| / max |want| (the relative error of the whole logit set).
inline double cp_relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0.0, mag = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(got[i]) - want[i]));
    mag = std::max(mag, std::fabs(static_cast<double>(want[i])));
  }
  return diff / std::max(mag, 1e-30);
}

/// One rank's part: `world` is split into TP = 1, EP = 1 and a CP group of all ranks; the CP model's logits
/// must match the single-process model's (the same mode) within 1e-5 relative, bitwise in deterministic
/// mode, and be bitwise equal on every rank.
inline void case_model_cp(parallel::Communicator& world, const CpCase& c, bool deterministic) {
  SCOPED_TRACE("case " + c.name + ", cp " + std::to_string(world.size()) + (deterministic ? ", deterministic" : ""));
  ModelConfig cfg = tiny_config(c.ratios, c.window, c.topk);
  // Deterministic mode slices the FP8 wo_b per output group: each group's columns must fill scale blocks.
  if (deterministic) cfg.o_lora_rank = 128;
  const TinyWeights weights(cfg, 11);
  int64_t rows_whole = 0, rows_mine = 0, bytes_mine = 0;
  std::vector<float> want;
  {
    Model single(cfg, bind_weights(cfg, weights.lookup()), kernels::make_cpu_backend(), c.numerics, deterministic);
    want = run_cp_schedule(single, c, &rows_whole);
  }
  CpGroups groups(world);
  ModelParallel par = groups.parallel(deterministic);
  Model model(cfg, bind_weights(cfg, weights.lookup()), kernels::make_cpu_backend(), c.numerics, par);
  const std::vector<float> got = run_cp_schedule(model, c, &rows_mine, &bytes_mine);
  ASSERT_EQ(got.size(), want.size());
  for (float v : got) ASSERT_TRUE(std::isfinite(v));
  // Fixed merge order: a second run of the same layout is bitwise the first.
  EXPECT_TRUE(run_cp_schedule(model, c) == got) << "CP run not bitwise reproducible";
  if (deterministic) {
    EXPECT_TRUE(got == want) << "deterministic CP logits are not bitwise those of CP = 1 (relative difference "
                             << cp_relative_error(got, want) << ")";
  } else {
    const double rel = cp_relative_error(got, want);
    EXPECT_LE(rel, 1e-5) << "CP logits differ from CP = 1 by " << rel << " relative";
  }

  // Every CP rank holds the same logits bit for bit (the merge runs in rank order everywhere).
  const int P = world.size();
  std::vector<float> everyone(got.size() * P);
  world.all_gather(got.data(), everyone.data(), got.size(), DType::kF32, parallel::kDefaultStream);
  for (int p = 0; p < P; ++p) {
    EXPECT_TRUE(std::equal(got.begin(), got.end(), everyone.begin() + static_cast<int64_t>(p * got.size())))
        << "rank " << world.rank() << " and rank " << p << " disagree";
  }
  // Round robin: each rank keeps its share, within one row per compressor of rows / P.
  std::vector<int64_t> held(P);
  world.all_gather(&rows_mine, held.data(), 1, DType::kI64, parallel::kDefaultStream);
  int64_t sum = 0;
  for (int64_t h : held) sum += h;
  EXPECT_EQ(sum, rows_whole);
  const int64_t compressors = 2 * cfg.num_layers;
  EXPECT_LE(rows_mine, rows_whole / P + compressors)
      << "rank " << world.rank() << " holds " << rows_mine << " of " << rows_whole << " rows";
  // What the scheduler admits a CP sequence by (cpu_state_bytes of the busiest rank) is what CP rank 0's pool
  // booked, and no rank booked more.
  int64_t length = c.decode;
  for (int64_t n : c.chunks) length += n;
  const int64_t admitted =
      cpu_state_bytes(cfg, length, kCpTestPageBytes, static_cast<int64_t>(model.weights().mtp.size()), P)
          .total();
  if (world.rank() == 0) EXPECT_EQ(bytes_mine, admitted) << "CP rank 0's state against cpu_state_bytes(cp " << P << ")";
  EXPECT_LE(bytes_mine, admitted) << "CP rank " << world.rank() << " booked more than the busiest rank's share";
}

/// Two sequences batched in every forward (a chunk of one split while the other's is replicated or split
/// too), every LogitsRows mode and want_hidden, and an MTP draft from the gathered hidden state: every output
/// (logits, hidden rows, draft logits) concatenated.
inline std::vector<float> run_cp_batches(Model& model) {
  struct Step {
    int64_t a, b;
    LogitsRows rows;
    bool hidden;
  };
  const std::vector<Step> steps{{13, 2, LogitsRows::kAll, true},
                                {1, 30, LogitsRows::kAll, false},
                                {7, 1, LogitsRows::kLastOfEachChunk, true},
                                {22, 9, LogitsRows::kLastOfEachChunk, false},
                                {70, 9, LogitsRows::kAll, false},  // A's chunk takes the overlapped exchanges
                                {1, 1, LogitsRows::kAll, true},
                                {45, 41, LogitsRows::kLastOfEachChunk, true},  // both chunks cut (pipeline)
                                {2, 66, LogitsRows::kAll, true}};
  const std::vector<int32_t> ta = cp_tokens(256, model.config().vocab_size, 21);
  const std::vector<int32_t> tb = cp_tokens(256, model.config().vocab_size, 22);
  SequenceState sa = model.new_sequence(), sb = model.new_sequence();
  std::vector<float> all;
  auto keep = [&](const Tensor& t) { all.insert(all.end(), t.as<float>(), t.as<float>() + t.numel()); };
  int64_t at_a = 0, at_b = 0;
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& st = steps[i];
    const SequenceChunk chunks[2] = {{&sa, std::span<const int32_t>(ta.data() + at_a, st.a)},
                                     {&sb, std::span<const int32_t>(tb.data() + at_b, st.b)}};
    const ForwardOutput out = model.forward(std::span<const SequenceChunk>(chunks, 2), st.hidden, st.rows);
    keep(out.logits);
    if (st.hidden) keep(out.hidden);
    if (i == 0) {  // draft for A's first tokens from the hidden rows of A (rows 0 .. 12 of the batch)
      const int64_t n = st.a - 1, per = out.hidden.shape()[1] * out.hidden.shape()[2];
      Tensor h(DType::kF32, Shape{n, out.hidden.shape()[1], out.hidden.shape()[2]});
      std::copy_n(out.hidden.as<const float>(), n * per, h.as<float>());
      keep(model.mtp_draft(sa, h, std::span<const int32_t>(ta.data() + 1, n)));
    }
    at_a += st.a;
    at_b += st.b;
  }
  return all;
}

/// run_cp_batches on a CP group of all of `world`'s ranks against the single-process model: 1e-5 relative,
/// bitwise in deterministic mode, and bitwise the same on every rank.
inline void case_model_cp_batches(parallel::Communicator& world, bool deterministic) {
  SCOPED_TRACE(std::string("two-sequence batches, cp ") + std::to_string(world.size()) +
               (deterministic ? ", deterministic" : ""));
  ModelConfig cfg = tiny_config({4, 8, 0}, 8, 3);
  if (deterministic) cfg.o_lora_rank = 128;  // wo_b's group slices fill FP8 scale blocks
  const TinyWeights weights(cfg, 13);
  std::vector<float> want;
  {
    Model single(cfg, bind_weights(cfg, weights.lookup()), kernels::make_cpu_backend(), Numerics::kPlain,
                 deterministic);
    want = run_cp_batches(single);
  }
  CpGroups groups(world);
  Model model(cfg, bind_weights(cfg, weights.lookup()), kernels::make_cpu_backend(), Numerics::kPlain,
              groups.parallel(deterministic));
  const std::vector<float> got = run_cp_batches(model);
  ASSERT_EQ(got.size(), want.size());
  if (deterministic) {
    EXPECT_TRUE(got == want) << "not bitwise CP = 1 (relative difference " << cp_relative_error(got, want) << ")";
  } else {
    EXPECT_LE(cp_relative_error(got, want), 1e-5);
  }
  std::vector<float> everyone(got.size() * world.size());
  world.all_gather(got.data(), everyone.data(), got.size(), DType::kF32, parallel::kDefaultStream);
  for (int p = 0; p < world.size(); ++p) {
    EXPECT_TRUE(std::equal(got.begin(), got.end(), everyone.begin() + static_cast<int64_t>(p * got.size())))
        << "rank " << world.rank() << " and rank " << p << " disagree";
  }
}

}  // namespace dsv4::testing
