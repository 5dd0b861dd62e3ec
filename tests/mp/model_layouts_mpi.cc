// The sharded model under mpirun (np 1, 2, 4) against the single-process Model, every layout of
// tp in {1,2} x ep in {1,2,4} x dp in {1,2} that fits the job (tests/mp/model_layouts_core.h): within 1e-5
// relative, bitwise in deterministic mode, prefill, decode and MTP; and the gathered logits of golden-a against
// the transformers oracle with the single-process golden test's tolerance.
//
// Each test body runs under run_rank_main: an exception on one rank prints "[rank R] fatal: ..." and ends the
// job (MPI_Abort), which tests/mp/CMakeLists.txt uses with DSV4_FAULT_INJECT to prove that a rank failing in
// the middle of a sharded forward ends every rank within seconds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/rank_main.h"
#include "runtime/checkpoint/writer.h"
#include "runtime/config/model_config.h"
#include "tests/mp/model_layouts_core.h"
#include "tests/support/mpi_test_env.h"
#include "tests/support/test_paths.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;
using testing::Layout;
using testing::Trace;
using testing::Workload;

// Runs `body` with the world communicator; a throwing rank ends the job with its message.
void on_every_rank(const std::function<void(parallel::Communicator&)>& body) {
  parallel::Bootstrap& bootstrap = dsv4::testing::mpi_world_bootstrap();
  auto world = parallel::make_communicator("mpi", bootstrap);
  const int rc = parallel::run_rank_main(bootstrap, world.get(), [&] { body(*world); });
  ASSERT_EQ(rc, 0);
}

// Every layout of the job's size against the single-process model (computed on each rank).
void check_layouts(parallel::Communicator& world, const fs::path& dir, const Workload& w, bool deterministic,
                   Trace* first_a = nullptr) {
  Checkpoint ckpt = Checkpoint::open(dir);
  Model ref = Model::from_checkpoint(ckpt, Numerics::kPlain, deterministic);
  const Trace want = testing::reference_trace(ref, w);
  const std::vector<Layout> layouts = testing::layouts_for(ref.config(), world.size(), nullptr);
  for (const Layout& layout : layouts) {
    const Trace got = testing::sharded_trace(world, ckpt, layout, Numerics::kPlain, deterministic, w);
    testing::expect_trace_matches(
        got, want, deterministic,
        layout.str() + (deterministic ? " deterministic" : "") + " rank " + std::to_string(world.rank()));
    if (first_a && got.has_a && first_a->a.logits.empty()) *first_a = got;
  }
  if (world.rank() == 0) {
    std::printf("%s: %zu layout(s) on %d rank(s)%s\n", dir.filename().c_str(), layouts.size(), world.size(),
                deterministic ? ", deterministic" : "");
  }
}

TEST(ModelLayoutsMpi, RandomCheckpointMoreExpertsThanRanks) {
  on_every_rank([](parallel::Communicator& world) {
    // Rank 0 writes the checkpoint (golden-a's architecture, a 256-wide FFN so that tp = 2 is legal, 8
    // experts, an odd vocabulary); the others learn its path.
    char path[512] = {};
    if (world.rank() == 0) {
      const fs::path d = testing::scratch_dir("model_layouts_mpi");
      std::ifstream in(testing::golden_model_dir("golden-a") / "config.json");
      nlohmann::json cfg = nlohmann::json::parse(in);
      cfg["moe_intermediate_size"] = 256;
      cfg["n_routed_experts"] = 8;
      cfg["vocab_size"] = 1001;
      std::ofstream(d / "config.json") << cfg.dump(2);
      make_random_checkpoint(load_model_config(d / "config.json"), 7, d / "ckpt", 2);
      std::strncpy(path, (d / "ckpt").c_str(), sizeof(path) - 1);
    }
    world.broadcast(path, sizeof(path), DType::kU8, 0, parallel::kDefaultStream);
    const Workload w = testing::random_workload(1001, 27, 24, 19, 17, 11);
    for (bool det : {false, true}) check_layouts(world, path, w, det);
    dsv4::testing::mpi_world_bootstrap().barrier();
    if (world.rank() == 0) fs::remove_all(fs::path(path).parent_path());
  });
}

// golden-a's first tokens: every layout against the single-process model, and rank 0's gathered logits of
// sequence A against the transformers logits (max|diff| <= 1e-4 max|ref|, same argmax).
TEST(ModelLayoutsMpi, GoldenAAgainstTransformers) {
  on_every_rank([](parallel::Communicator& world) {
    const fs::path dir = testing::golden_model_dir("golden-a");
    std::ifstream mf(dir / "manifest.json");
    const nlohmann::json m = nlohmann::json::parse(mf);
    const std::vector<int32_t> tokens = m.at("tokens").get<std::vector<int32_t>>();
    const int64_t V = m.at("vocab_size").get<int64_t>();
    Workload w;
    w.a.assign(tokens.begin(), tokens.begin() + 27);  // past the ring wrap (16) and the first indexer top-k (19)
    w.prompt_a = 24;
    w.b.assign(tokens.begin() + 100, tokens.begin() + 121);
    w.prompt_b = 19;
    Trace sharded;
    check_layouts(world, dir, w, false, &sharded);
    if (sharded.a.logits.empty()) return;  // no layout of this size fits golden-a
    const int64_t rows = static_cast<int64_t>(w.a.size());
    std::vector<float> ref(rows * V);
    std::ifstream lf(dir / m.at("prefill_logits").at("file").get<std::string>(), std::ios::binary);
    lf.read(reinterpret_cast<char*>(ref.data()), static_cast<std::streamsize>(ref.size() * sizeof(float)));
    ASSERT_TRUE(lf.good());
    float max_ref = 0.0f, max_diff = 0.0f;
    for (size_t i = 0; i < ref.size(); ++i) {
      max_ref = std::max(max_ref, std::fabs(ref[i]));
      max_diff = std::max(max_diff, std::fabs(sharded.a.logits[i] - ref[i]));
    }
    EXPECT_LE(max_diff, 1e-4f * max_ref) << "rank " << world.rank();
    for (int64_t r = 0; r < rows; ++r) {
      const float* g = sharded.a.logits.data() + r * V;
      const float* f = ref.data() + r * V;
      EXPECT_EQ(std::max_element(g, g + V) - g, std::max_element(f, f + V) - f) << "argmax at position " << r;
    }
  });
}

}  // namespace
}  // namespace dsv4
