// Context parallelism of the model over the in-process backend, 2 and 4 rank-threads (cases in
// tests/mp/model_cp_core.h): CP logits equal CP = 1 within 1e-5 relative (bitwise in deterministic mode),
// bitwise equal across the CP ranks, each rank holding its round-robin share of the compressed rows; a
// deterministic CP size that does not divide the virtual shards is refused when the model is made; and the
// overlapped exchanges (ModelParallel::cp_overlap) are taken on long chunks only and change no bit; and the
// two-micro-batch pipeline is taken on long chunks only and matches the single-batch forward.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "parallel/bootstrap.h"
#include "parallel/context_parallel.h"
#include "tests/mp/model_cp_core.h"

namespace dsv4 {
namespace {

using namespace std::chrono_literals;

// The case's schedule on `model`, on every rank-thread of `world`; *counted gets how much `counter` (a field of
// the process-wide CpExchangeStats, which the rank-threads share) grew meanwhile: read before any rank starts
// (the barrier after the read) and after every rank is done.
std::vector<float> run_counted(parallel::Communicator& world, Model& model, const testing::CpCase& c,
                               int64_t parallel::CpExchangeStats::*counter, int64_t* counted) {
  auto barrier = [&] {
    int64_t one = 1;
    std::vector<int64_t> all(static_cast<size_t>(world.size()));
    world.all_gather(&one, all.data(), 1, DType::kI64, parallel::kDefaultStream);
  };
  const int64_t before = parallel::cp_exchange_stats().*counter;
  barrier();
  std::vector<float> logits = testing::run_cp_schedule(model, c);
  barrier();
  *counted = parallel::cp_exchange_stats().*counter - before;
  barrier();
  return logits;
}

class ModelCpInProc : public ::testing::TestWithParam<int> {};

TEST_P(ModelCpInProc, MatchesSingleRank) {
  const int n = GetParam();
  parallel::run_inproc_ranks(n, 120s, [](int, parallel::Bootstrap& bootstrap) {
    auto world = parallel::make_communicator("inproc", bootstrap);
    for (bool det : {false, true}) {
      for (const auto& c : testing::cp_cases()) testing::case_model_cp(*world, c, det);
      testing::case_model_cp_batches(*world, det);
    }
  });
}

INSTANTIATE_TEST_SUITE_P(Ranks, ModelCpInProc, ::testing::Values(2, 4));

TEST(ModelCpInProc, DeterministicRefusesCpNotDividingVirtualShards) {
  parallel::run_inproc_ranks(3, 60s, [](int, parallel::Bootstrap& bootstrap) {
    auto world = parallel::make_communicator("inproc", bootstrap);
    const ModelConfig cfg = testing::tiny_config({4, 128});
    const testing::TinyWeights weights(cfg, 11);
    auto tp = world->split(world->rank(), 0);
    auto ep = world->split(world->rank(), 0);
    auto cp = world->split(0, world->rank());
    ModelParallel par{tp.get(), ep.get(), true, cp.get()};
    try {
      Model model(cfg, bind_weights(cfg, weights.lookup()), kernels::make_cpu_backend(), Numerics::kPlain, par);
      ADD_FAILURE() << "a deterministic CP group of 3 was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("divides 8"), std::string::npos) << e.what();
    }
    par.deterministic = false;  // plain mode takes any CP size
    Model plain(cfg, bind_weights(cfg, weights.lookup()), kernels::make_cpu_backend(), Numerics::kPlain, par);
  });
}

// Overlap on against overlap off, 2 rank-threads, plain, deterministic and reference: bitwise the same logits and
// exactly the expected overlapped steps. Per rank and chunk of 64 tokens or more (130, 250, 358 here; the
// others are shorter), every layer overlaps its first row gather with the query projection, ratio-4 layers
// then the second gather, the top-k exchange and the two partial exchanges (5 steps each), the ratio-128
// layer the second gather and the partials (4), the SWA layer nothing more (1): 15 per chunk, none with
// the switch off. The rank-threads share the process counters.
TEST(ModelCpInProc, OverlapTakenOnLongChunksAndBitwiseSequential) {
  constexpr int kRanks = 2;
  parallel::run_inproc_ranks(kRanks, 120s, [](int, parallel::Bootstrap& bootstrap) {
    auto world = parallel::make_communicator("inproc", bootstrap);
    const testing::CpCase c = testing::cp_cases()[0];  // window 128, ratios {0, 4, 128, 4}, top-16
    ASSERT_EQ(c.ratios, (std::vector<int64_t>{0, 4, 128, 4}));
    int64_t long_chunks = 0;
    for (int64_t n : c.chunks) long_chunks += n >= 64 ? 1 : 0;
    ASSERT_EQ(long_chunks, 3);
    // Plain and deterministic mode, and the reference numerics (FP8 / FP4 emulation in the projections the
    // helper thread runs).
    const std::pair<bool, Numerics> modes[] = {
        {false, Numerics::kPlain}, {true, Numerics::kPlain}, {false, Numerics::kReference}};
    for (const auto& [det, numerics] : modes) {
      SCOPED_TRACE(std::string(det ? "deterministic" : "plain") +
                   (numerics == Numerics::kReference ? ", reference numerics" : ""));
      ModelConfig cfg = testing::tiny_config(c.ratios, c.window, c.topk);
      if (det) cfg.o_lora_rank = 128;
      const testing::TinyWeights weights(cfg, 11);
      auto tp = world->split(world->rank(), 0);
      auto ep = world->split(world->rank(), 0);
      auto cp = world->split(0, world->rank());
      std::vector<float> logits[2];
      int64_t steps[2] = {0, 0};
      for (bool overlap : {false, true}) {
        ModelParallel par{tp.get(), ep.get(), det, cp.get()};
        par.cp_overlap = overlap;
        Model model(cfg, bind_weights(cfg, weights.lookup()), kernels::make_cpu_backend(), numerics, par);
        logits[overlap] = run_counted(*world, model, c, &parallel::CpExchangeStats::overlapped, &steps[overlap]);
      }
      EXPECT_EQ(steps[0], 0) << "overlapped steps with cp_overlap off";
      EXPECT_EQ(steps[1], 15 * long_chunks * kRanks) << "overlapped steps with cp_overlap on";
      EXPECT_TRUE(logits[1] == logits[0]) << "overlap changed the logits (relative difference "
                                          << testing::cp_relative_error(logits[1], logits[0]) << ")";
    }
  });
}

// The two-micro-batch pipeline against the single-batch forward on the same CP groups, 2 rank-threads: taken
// on the chunks of at least pipeline_min_tokens (61, 130, 250, 358 of the schedule: 4 per rank; the rank-threads
// share the counter) and on none with the pipeline off; bitwise the same logits in deterministic mode (the
// halves are consecutive chunks, and deterministic results do not depend on the chunking), within 1e-5
// relative in plain mode; both with the in-layer overlap on and off.
TEST(ModelCpInProc, PipelineTakenOnLongChunksAndMatchesSingleBatch) {
  constexpr int kRanks = 2;
  parallel::run_inproc_ranks(kRanks, 180s, [](int, parallel::Bootstrap& bootstrap) {
    auto world = parallel::make_communicator("inproc", bootstrap);
    const testing::CpCase c = testing::cp_cases()[0];
    int64_t long_chunks = 0;
    for (int64_t n : c.chunks) long_chunks += n >= testing::kCpTestPipelineMinTokens ? 1 : 0;
    ASSERT_EQ(long_chunks, 4);
    testing::CpGroups groups(*world);
    for (bool det : {false, true}) {
      for (bool overlap : {false, true}) {
        SCOPED_TRACE(std::string(det ? "deterministic" : "plain") + (overlap ? ", overlap" : ", no overlap"));
        ModelConfig cfg = testing::tiny_config(c.ratios, c.window, c.topk);
        if (det) cfg.o_lora_rank = 128;
        const testing::TinyWeights weights(cfg, 11);
        std::vector<float> logits[2];
        int64_t forwards[2] = {0, 0};
        for (bool pipeline : {false, true}) {
          ModelParallel par = groups.parallel(det, pipeline ? testing::kCpTestPipelineMinTokens : 0);
          par.cp_overlap = overlap;
          Model model(cfg, bind_weights(cfg, weights.lookup()), kernels::make_cpu_backend(), Numerics::kPlain, par);
          logits[pipeline] =
              run_counted(*world, model, c, &parallel::CpExchangeStats::pipelined_forwards, &forwards[pipeline]);
        }
        EXPECT_EQ(forwards[0], 0) << "pipelined forwards with the pipeline off";
        EXPECT_EQ(forwards[1], long_chunks * kRanks) << "pipelined forwards with the pipeline on";
        ASSERT_EQ(logits[1].size(), logits[0].size());
        if (det) {
          EXPECT_TRUE(logits[1] == logits[0]) << "the pipeline changed deterministic logits (relative difference "
                                              << testing::cp_relative_error(logits[1], logits[0]) << ")";
        } else {
          EXPECT_LE(testing::cp_relative_error(logits[1], logits[0]), 1e-5);
        }
      }
    }
  });
}

// A batch only one CP rank cannot take (its state pool has room for a few row pages, its peer's is unlimited)
// is refused on every rank of the CP group (they compare verdicts), not run by one and refused by the other (the
// runner would wait in the row gather forever). No state changes, and the sequence goes on on both ranks with
// a chunk that fits, bitwise the same logits on both.
TEST(ModelCpInProc, BatchOneCpRankCannotHoldIsRefusedOnEveryRank) {
  constexpr int kRanks = 2;
  std::vector<std::string> errors(kRanks);
  std::vector<std::vector<float>> logits(kRanks);
  parallel::run_inproc_ranks(kRanks, 60s, [&](int rank, parallel::Bootstrap& bootstrap) {
    auto world = parallel::make_communicator("inproc", bootstrap);
    const ModelConfig cfg = testing::tiny_config({4, 8, 0}, 8, 3);
    const testing::TinyWeights weights(cfg, 11);
    testing::CpGroups groups(*world);
    Model model(cfg, bind_weights(cfg, weights.lookup()), kernels::make_cpu_backend(), Numerics::kPlain,
                groups.parallel(false));
    // Rank 1's pool: the sequence's fixed buffers and four row pages.
    int64_t fixed = 0;
    {
      StatePool probe({testing::kCpTestPageBytes, kUnlimitedStateBudget});
      fixed = model.new_sequence(&probe).memory_bytes();
    }
    StatePool pool({testing::kCpTestPageBytes,
                    rank == 1 ? fixed + 4 * testing::kCpTestPageBytes : kUnlimitedStateBudget});
    SequenceState st = model.new_sequence(&pool);
    const std::vector<int32_t> tokens = testing::cp_tokens(300, cfg.vocab_size, 3);
    try {
      model.prefill(st, std::span<const int32_t>(tokens.data(), 300));
      ADD_FAILURE() << "rank " << rank << " ran a batch CP rank 1 cannot hold";
    } catch (const Error& e) {
      errors[rank] = e.what();
    }
    EXPECT_EQ(st.length, 0) << "a refused batch changed the state";
    const Tensor l = model.prefill(st, std::span<const int32_t>(tokens.data(), 6));
    logits[rank].assign(l.as<const float>(), l.as<const float>() + l.numel());
  });
  EXPECT_NE(errors[1].find("exhausted"), std::string::npos) << errors[1];
  EXPECT_NE(errors[0].find("CP rank 1 refused the batch"), std::string::npos) << errors[0];
  EXPECT_FALSE(logits[0].empty());
  EXPECT_TRUE(logits[0] == logits[1]) << "the CP ranks disagree after the refusal";
}

// The pipeline's switches come from each rank's environment: CP ranks that disagree are refused when the model
// is made (every rank of the group, with a message naming the variables), not left waiting mid-forward.
TEST(ModelCpInProc, RanksDisagreeingOnPipelineAreRefused) {
  parallel::run_inproc_ranks(2, 60s, [](int rank, parallel::Bootstrap& bootstrap) {
    auto world = parallel::make_communicator("inproc", bootstrap);
    const ModelConfig cfg = testing::tiny_config({4, 8, 0}, 8, 3);
    const testing::TinyWeights weights(cfg, 11);
    testing::CpGroups groups(*world);
    try {
      Model model(cfg, bind_weights(cfg, weights.lookup()), kernels::make_cpu_backend(), Numerics::kPlain,
                  groups.parallel(false, rank == 0 ? 256 : 512));
      ADD_FAILURE() << "rank " << rank << " accepted a CP group whose ranks pipeline differently";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("DSV4_PIPELINE_MIN_TOKENS"), std::string::npos) << e.what();
    }
  });
}

}  // namespace
}  // namespace dsv4
