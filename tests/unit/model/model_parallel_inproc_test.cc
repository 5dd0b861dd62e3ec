// The sharded model over in-process rank-threads (N = 1, 2, 4) against the single-process Model: every
// layout tp in {1,2} x ep in {1,2,4} x dp in {1,2} that fits N and the checkpoint, prefill then decode and
// the MTP draft, within 1e-5 relative and bitwise equal in deterministic mode (tests/mp/model_layouts_core.h
// has the workload). Also: a bad request on one replica or one TP rank is refused without desynchronising
// the ranks, and the logits gather to one root.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "parallel/bootstrap.h"
#include "runtime/checkpoint/writer.h"
#include "runtime/config/model_config.h"
#include "runtime/core/error.h"
#include "tests/mp/model_layouts_core.h"
#include "tests/support/test_paths.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;
using testing::Layout;
using testing::Trace;
using testing::Workload;

// The scratch folder of random_checkpoint(), removed after the last test.
fs::path g_scratch;
class ScratchCleanup : public ::testing::Environment {
 public:
  void TearDown() override {
    if (!g_scratch.empty()) fs::remove_all(g_scratch);
  }
};
[[maybe_unused]] ::testing::Environment* const g_cleanup = ::testing::AddGlobalTestEnvironment(new ScratchCleanup);

// golden-a's architecture with a 256-wide FFN (so that tp = 2 splits FP8 blocks legally), 8 experts (more
// than ranks) and an odd vocabulary (uneven vocabulary shards), random weights.
const fs::path& random_checkpoint() {
  static const fs::path dir = [] {
    const fs::path d = testing::scratch_dir("model_parallel_inproc");
    g_scratch = d;
    std::ifstream in(testing::golden_model_dir("golden-a") / "config.json");
    nlohmann::json cfg = nlohmann::json::parse(in);
    cfg["moe_intermediate_size"] = 256;
    cfg["n_routed_experts"] = 8;
    cfg["vocab_size"] = 1001;
    std::ofstream(d / "config.json") << cfg.dump(2);
    make_random_checkpoint(load_model_config(d / "config.json"), 7, d / "ckpt", 2);
    return d / "ckpt";
  }();
  return dir;
}

Workload golden_workload(const fs::path& dir) {
  std::ifstream mf(dir / "manifest.json");
  const std::vector<int32_t> tokens = nlohmann::json::parse(mf).at("tokens").get<std::vector<int32_t>>();
  Workload w;
  w.a.assign(tokens.begin(), tokens.begin() + 27);  // past the ring wrap (16) and the indexer's first top-k (19)
  w.prompt_a = 24;
  w.b.assign(tokens.begin() + 100, tokens.begin() + 121);
  w.prompt_b = 19;
  return w;
}

// Every layout of `world` ranks that the checkpoint accepts, against the single-process model.
void check_layouts(const fs::path& dir, const Workload& w, bool deterministic, int world, size_t expect_layouts,
                   Numerics numerics = Numerics::kPlain) {
  Checkpoint ref_ckpt = Checkpoint::open(dir);
  Model ref = Model::from_checkpoint(ref_ckpt, numerics, deterministic);
  const Trace want = testing::reference_trace(ref, w);
  std::vector<std::string> refused;
  const std::vector<Layout> layouts = testing::layouts_for(ref.config(), world, &refused);
  for (const std::string& why : refused) std::printf("layout refused by the mesh: %s\n", why.c_str());
  EXPECT_EQ(layouts.size(), expect_layouts) << dir << " on " << world << " ranks";
  for (const Layout& layout : layouts) {
    std::vector<Trace> traces(world);
    parallel::run_inproc_ranks(world, [&](int rank, parallel::Bootstrap& bootstrap) {
      auto comm = parallel::make_communicator("inproc", bootstrap);
      Checkpoint ckpt = Checkpoint::open(dir);
      traces[rank] = testing::sharded_trace(*comm, ckpt, layout, numerics, deterministic, w);
    });
    for (int r = 0; r < world; ++r) {
      testing::expect_trace_matches(traces[r], want, deterministic,
                                    layout.str() + (deterministic ? " deterministic" : "") +
                                        (numerics == Numerics::kReference ? " reference" : "") + " rank " +
                                        std::to_string(r));
    }
  }
}

// Layout counts: N=1: 1; N=2: tp2 x ep{1,2} and dp2 x ep{1,2}; N=4: tp2 dp2 x ep{1,2,4}. A checkpoint whose
// shared expert is one FP8 block wide refuses tp = 2 (N=2: 2 layouts, N=4: none).
size_t expected_layouts(const fs::path& dir, int world) {
  const ModelConfig cfg = Checkpoint::open(dir).config();
  const bool tp2 = shared_expert_width(cfg) % (2 * cfg.fp8_block) == 0;
  if (world == 1) return 1;
  if (world == 2) return tp2 ? 4 : 2;
  return tp2 ? 3 : 0;
}

TEST(ModelParallelInproc, RandomCheckpointEveryLayout) {
  const fs::path& dir = random_checkpoint();
  const Workload w = testing::random_workload(1001, 27, 24, 19, 17, 11);
  for (int world : {1, 2, 4}) {
    for (bool det : {false, true}) check_layouts(dir, w, det, world, expected_layouts(dir, world));
  }
  // The reference numerics' activation quantisation (per 128 along K) sees the same blocks in every split.
  check_layouts(dir, w, true, 4, expected_layouts(dir, 4), Numerics::kReference);
}

TEST(ModelParallelInproc, GoldenAEveryLayout) {
  const fs::path dir = testing::golden_model_dir("golden-a");
  for (int world : {1, 2, 4}) {
    for (bool det : {false, true}) check_layouts(dir, golden_workload(dir), det, world, expected_layouts(dir, world));
  }
}

TEST(ModelParallelInproc, GoldenBEveryLayout) {
  const fs::path dir = testing::golden_model_dir("golden-b");
  if (!fs::exists(dir / "manifest.json")) GTEST_SKIP() << "golden-b not generated";
  for (int world : {2, 4}) check_layouts(dir, golden_workload(dir), false, world, expected_layouts(dir, world));
}

// One replica's bad request (a token outside the vocabulary) is refused on its ranks while the other
// replica's step completes with the right logits, and both replicas go on in step afterwards; a TP group
// whose ranks disagree refuses on every member. Logits also gather to one root.
TEST(ModelParallelInproc, BadRequestDoesNotDesynchronise) {
  const fs::path& dir = random_checkpoint();
  const Workload w = testing::random_workload(1001, 20, 20, 12, 12, 5);
  Checkpoint ref_ckpt = Checkpoint::open(dir);
  Model ref = Model::from_checkpoint(ref_ckpt, Numerics::kPlain, true);
  const Trace want = testing::reference_trace(ref, w);
  const Layout layout{2, 4, 2};
  const ModelConfig& cfg = ref.config();
  std::vector<std::string> errors(layout.world());
  std::vector<std::vector<float>> got(layout.world());
  parallel::run_inproc_ranks(layout.world(), [&](int rank, parallel::Bootstrap& bootstrap) {
    auto world = parallel::make_communicator("inproc", bootstrap);
    Checkpoint ckpt = Checkpoint::open(dir);
    const parallel::Mesh mesh = parallel::Mesh::create(layout.mesh_config(), mesh_dims(cfg));
    ModelGroups groups = make_model_groups(*world, mesh);
    Model model = Model::from_checkpoint_sharded(ckpt, Numerics::kPlain, groups.parallel(true),
                                                 model_shard_for_rank(cfg, mesh, rank));
    const int replica = mesh.coord(rank).dp_rank, tp_rank = mesh.coord(rank).tp_rank;
    SequenceState st = model.new_sequence();
    const std::vector<int32_t>& tokens = replica == 0 ? w.a : w.b;
    std::vector<int32_t> bad = tokens;
    bad[3] = static_cast<int32_t>(cfg.vocab_size);
    auto run = [&](const std::vector<int32_t>& t) {
      SequenceChunk c{&st, t};
      return model.forward(std::span<const SequenceChunk>(&c, 1));
    };
    // Step 1: replica 1 sends a bad prompt; replica 0's prompt must still come out right.
    try {
      ForwardOutput o = run(replica == 1 ? bad : tokens);
      const Tensor full = gather_full_logits(model, o.logits, o.vocab_begin, /*root=*/0);
      EXPECT_EQ(full.numel() == 0, tp_rank != 0) << "only the root receives the gathered logits";
      if (tp_rank == 0) got[rank].assign(full.as<const float>(), full.as<const float>() + full.numel());
    } catch (const Error& e) {
      errors[rank] = e.what();
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    }
    // Step 2: replica 1 retries (its state was not touched), replica 0 idles.
    if (replica == 1) {
      ForwardOutput o = run(tokens);
      const Tensor full = gather_full_logits(model, o.logits, o.vocab_begin);
      got[rank].assign(full.as<const float>(), full.as<const float>() + full.numel());
    } else {
      model.forward({});
    }
    // Step 3: the TP ranks of replica 0 disagree (only TP rank 1 sees a bad token); replica 1 idles.
    if (replica == 0) {
      std::vector<int32_t> next{tokens.back()};
      if (tp_rank == 1) next[0] = -1;
      SequenceChunk c{&st, next};
      EXPECT_THROW(model.forward(std::span<const SequenceChunk>(&c, 1)), Error) << "rank " << rank;
      EXPECT_EQ(st.length, static_cast<int64_t>(tokens.size()));
    } else {
      model.forward({});
    }
  });
  for (int r = 0; r < layout.world(); ++r) {
    const int replica = r / layout.tp;
    if (replica == 1) {
      EXPECT_NE(errors[r].find("outside the vocabulary"), std::string::npos) << "rank " << r << ": " << errors[r];
    } else {
      EXPECT_TRUE(errors[r].empty()) << "rank " << r << ": " << errors[r];
    }
    if (replica == 0 && r % layout.tp != 0) continue;  // not the root of the step-1 gather
    const std::vector<float>& ref_rows = replica == 0 ? want.a.logits : want.b.logits;
    ASSERT_EQ(got[r].size(), ref_rows.size()) << "rank " << r;
    EXPECT_TRUE(got[r] == ref_rows) << "rank " << r << ": deterministic logits differ, max rel "
                                    << testing::max_rel_diff(got[r], ref_rows);
  }
}

// A rank that fails while its peers are inside a sharded forward (waiting in the TP reduction or the MoE
// exchange) wakes them: the whole run ends with its error within seconds, far before the world's timeout.
TEST(ModelParallelInproc, AFailingRankEndsEveryRank) {
  const fs::path& dir = random_checkpoint();
  const Workload w = testing::random_workload(1001, 8, 8, 8, 8, 3);
  const Layout layout{2, 4, 2};
  const auto start = std::chrono::steady_clock::now();
  try {
    parallel::run_inproc_ranks(
        layout.world(), std::chrono::seconds(30), [&](int rank, parallel::Bootstrap& bootstrap) {
          auto world = parallel::make_communicator("inproc", bootstrap);
          Checkpoint ckpt = Checkpoint::open(dir);
          const ModelConfig& cfg = ckpt.config();
          const parallel::Mesh mesh = parallel::Mesh::create(layout.mesh_config(), mesh_dims(cfg));
          ModelGroups groups = make_model_groups(*world, mesh);
          Model model = Model::from_checkpoint_sharded(ckpt, Numerics::kPlain, groups.parallel(false),
                                                       model_shard_for_rank(cfg, mesh, rank));
          SequenceState st = model.new_sequence();
          for (int step = 0; step < 3; ++step) {
            if (rank == 3 && step == 1) DSV4_THROW(kInternal) << "rank 3 fails at step 1";
            SequenceChunk c{&st, std::span<const int32_t>(w.a.data() + step, 1)};
            model.forward(std::span<const SequenceChunk>(&c, 1));
          }
        });
    ADD_FAILURE() << "the run succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 3 fails at step 1"), std::string::npos) << e.what();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 20.0) << "a peer waited for the world timeout instead of being woken by the abort";
}

// A shard that does not match the groups it is given is refused at construction, naming both.
TEST(ModelParallelInproc, ShardAndGroupsMustAgree) {
  const fs::path& dir = random_checkpoint();
  Checkpoint ckpt = Checkpoint::open(dir);
  const ModelConfig& cfg = ckpt.config();
  const parallel::Mesh mesh = parallel::Mesh::create(Layout{2, 2, 1}.mesh_config(), mesh_dims(cfg));
  LocalGroups local;  // tp and ep groups of one rank
  try {
    Model::from_checkpoint_sharded(ckpt, Numerics::kPlain, local.parallel(false), model_shard_for_rank(cfg, mesh, 1));
    ADD_FAILURE() << "a tp2/ep2 shard was accepted with one-rank groups";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("do not match the shard (tp rank 1 of 2, ep rank 1 of 2)"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace dsv4
