// Deployment YAML parsing and validation, and the layout rules (issue 6 "Launch", issue 4 "Mesh").
#include <gtest/gtest.h>

#include <string>

#include "parallel/mesh.h"
#include "runtime/config/deployment_config.h"
#include "runtime/config/model_config.h"
#include "runtime/core/error.h"
#include "tests/support/test_paths.h"

namespace dsv4 {
namespace {

const char* kMinimal = R"(
model: {config: m.json}
layout: {dp: 2, tp: 1, ep: 2}
gpus_per_node: 0
ranks_per_node: 2
memory: {budget_per_rank: 1GiB}
)";

// Parses `text` and returns the error message ("" when it parsed).
std::string error_of(const std::string& text) {
  try {
    parse_deployment_config(text, "t.yaml");
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    return e.what();
  }
  return "";
}

TEST(LaunchDeploymentConfig, MinimalGetsDefaults) {
  DeploymentConfig c = parse_deployment_config(kMinimal, "t.yaml", "/base");
  EXPECT_EQ(c.model_config, std::filesystem::path("/base/m.json"));
  EXPECT_TRUE(c.checkpoint.empty());
  EXPECT_EQ(c.layout, (ParallelLayout{2, 1, 2, 1}));
  EXPECT_EQ(c.world_size(), 2);
  EXPECT_FALSE(c.uses_gpus());
  EXPECT_EQ(c.memory_budget_per_rank, int64_t{1} << 30);
  EXPECT_EQ(c.server.address, "127.0.0.1:50051");
  EXPECT_EQ(c.scheduler, SchedulerLimits{});
  EXPECT_EQ(c.log_level, LogLevel::kInfo);
}

TEST(LaunchDeploymentConfig, ShippedDeploymentsLoad) {
  const auto dir = testing::source_dir() / "configs" / "deployments";
  DeploymentConfig tiny = load_deployment_config(dir / "tiny-cpu.yaml");
  EXPECT_EQ(tiny.name, "tiny-cpu");
  EXPECT_EQ(tiny.world_size(), 4);
  EXPECT_EQ(tiny.model_config, (testing::source_dir() / "configs/models/tiny.json").lexically_normal());
  DeploymentConfig pro = load_deployment_config(dir / "pro-16x8xh100.yaml");
  EXPECT_EQ(pro.layout, (ParallelLayout{16, 8, 128, 1}));
  EXPECT_EQ(pro.world_size(), 128);
  EXPECT_TRUE(pro.server.tls_enabled());
  DeploymentConfig flash = load_deployment_config(dir / "flash-8xh100.yaml");
  EXPECT_EQ(flash.world_size(), 8);
  // Every shipped layout must be one the model accepts.
  for (const auto* d : {&tiny, &pro, &flash}) {
    EXPECT_TRUE(layout_problems(load_model_config(d->model_config), d->layout).empty()) << d->name;
  }
}

TEST(LaunchDeploymentConfig, ErrorsNameTheKey) {
  const std::string base = kMinimal;
  // A typo in a nested key: unknown, named with its full path.
  EXPECT_NE(error_of(base + "scheduler: {max_runing: 4}").find("scheduler.max_runing: unknown key"), std::string::npos);
  EXPECT_NE(error_of(base + "colour: blue").find("colour: unknown key"), std::string::npos);
  EXPECT_NE(error_of(base + "scheduler: {max_running: 0}").find("scheduler.max_running: must be >= 1"),
            std::string::npos);
  EXPECT_NE(error_of(base + "scheduler: {max_queue: lots}").find("scheduler.max_queue: expected an integer"),
            std::string::npos);
  EXPECT_NE(error_of(base + "server: {address: localhost}").find("server.address"), std::string::npos);
  EXPECT_NE(error_of(base + "server: {address: 'h:70000'}").find("server.address: port"), std::string::npos);
  EXPECT_NE(error_of(base + "server: {tls: {cert: a.pem}}").find("server.tls.key: missing"), std::string::npos);
  EXPECT_NE(error_of(base + "logging: {level: loud}").find("logging.level"), std::string::npos);
  EXPECT_NE(error_of(R"(
model: {config: m.json}
layout: {dp: 2, ep: 2}
gpus_per_node: 0
ranks_per_node: 2
memory: {budget_per_rank: 12 parsecs}
)")
                .find("memory.budget_per_rank: unknown size unit 'parsecs'"),
            std::string::npos);
  EXPECT_NE(error_of("layout: {dp: 1}\ngpus_per_node: 1\nmemory: {budget_per_rank: 1GB}").find("model: missing"),
            std::string::npos);
  EXPECT_NE(
      error_of("model: {config: m.json}\nlayout: {}\nmemory: {budget_per_rank: 1GB}").find("gpus_per_node: missing"),
      std::string::npos);
  EXPECT_NE(error_of("model: {config: m.json}\nlayout: {}\ngpus_per_node: 0\nmemory: {budget_per_rank: 1GB}")
                .find("ranks_per_node: missing"),
            std::string::npos);
  EXPECT_NE(error_of("model: [").find("YAML syntax error"), std::string::npos);
}

TEST(LaunchDeploymentConfig, WorldMustMatchLayout) {
  // 2 nodes x 8 GPUs = 16 ranks, but dp*tp*cp = 8.
  std::string e = error_of(R"(
model: {config: m.json}
layout: {dp: 8, tp: 1, ep: 8}
nodes: 2
gpus_per_node: 8
memory: {budget_per_rank: 70GiB}
)");
  EXPECT_NE(e.find("layout: dp*tp*cp = 8*1*1 = 8 ranks, but nodes*ranks_per_node = 2*8 = 16"), std::string::npos) << e;
  e = error_of(R"(
model: {config: m.json}
layout: {dp: 4, ep: 3}
gpus_per_node: 4
memory: {budget_per_rank: 70GiB}
)");
  EXPECT_NE(e.find("layout.ep: 3 does not divide the world of 4"), std::string::npos) << e;
  e = error_of(R"(
model: {config: m.json}
layout: {dp: 4}
gpus_per_node: 4
ranks_per_node: 2
memory: {budget_per_rank: 70GiB}
)");
  EXPECT_NE(e.find("ranks_per_node: GPU deployments run one rank per GPU"), std::string::npos) << e;
}

TEST(LaunchDeploymentConfig, ByteSizes) {
  EXPECT_EQ(parse_byte_size("80GiB", "k"), 80LL << 30);
  EXPECT_EQ(parse_byte_size("512 MiB", "k"), 512LL << 20);
  EXPECT_EQ(parse_byte_size("4GB", "k"), 4000000000LL);
  EXPECT_EQ(parse_byte_size("1.5KiB", "k"), 1536);
  EXPECT_EQ(parse_byte_size("1073741824", "k"), 1073741824LL);
  EXPECT_THROW(parse_byte_size("GiB", "k"), Error);
  EXPECT_THROW(parse_byte_size("0", "k"), Error);
}

TEST(LaunchDeploymentConfig, ProLayoutRules) {
  const ModelConfig pro = load_model_config(testing::source_dir() / "configs/models/pro.json");
  EXPECT_TRUE(layout_problems(pro, {16, 8, 128, 1}).empty());
  // The known trap: TP = 16 on the 3072-wide FFN gives 192 columns per rank.
  const auto tp16 = layout_problems(pro, {8, 16, 128, 1});
  ASSERT_EQ(tp16.size(), 1u);
  EXPECT_EQ(tp16[0],
            "shared expert FFN width (moe_intermediate_size): 3072 / tp=16 = 192 columns per rank, not a multiple "
            "of the 128-wide FP8 scale block");
  try {
    check_layout(pro, {8, 16, 128, 1});
    FAIL() << "TP=16 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layout dp=8 tp=16 ep=128 cp=1 cannot shard this model"), std::string::npos);
  }
  // 384 experts over ep=256: not divisible. 128 heads and 16 output groups over tp=3: not divisible (the FFN
  // splits into 3 x 1024, which is fine).
  const auto ep256 = layout_problems(pro, {256, 1, 256, 1});
  ASSERT_EQ(ep256.size(), 1u);
  EXPECT_EQ(ep256[0], "routed experts (n_routed_experts) = 384 is not divisible by ep=256");
  const auto tp3 = layout_problems(pro, {1, 3, 3, 1});
  ASSERT_EQ(tp3.size(), 2u);
  EXPECT_EQ(tp3[0], "attention heads (num_attention_heads) = 128 is not divisible by tp=3");
}

TEST(LaunchDeploymentConfig, TinyLayoutRules) {
  const ModelConfig tiny = load_model_config(testing::source_dir() / "configs/models/tiny.json");
  EXPECT_TRUE(layout_problems(tiny, {4, 1, 4, 1}).empty());
  EXPECT_TRUE(layout_problems(tiny, {1, 1, 8, 8}).empty());
  // tiny: F = 256, so tp = 2 leaves one whole FP8 block (128 columns) of the shared expert per rank; the
  // other split widths (heads*d = 512, o_groups*o_lora = 256) give 128-multiples at tp=2 too.
  EXPECT_TRUE(layout_problems(tiny, {2, 2, 4, 1}).empty());
  const auto tp4 = layout_problems(tiny, {1, 4, 4, 1});
  ASSERT_EQ(tp4.size(), 2u);  // o_groups 2 % 4, FFN 64 columns
  EXPECT_EQ(tp4[0], "output groups (o_groups) = 2 is not divisible by tp=4");
  EXPECT_NE(tp4[1].find("256 / tp=4 = 64 columns per rank"), std::string::npos) << tp4[1];
}

// The layout rules exist twice: here (so the deployment config can be checked without the parallel library)
// and in parallel::Mesh (which the runtime builds). They must accept and refuse the same layouts.
TEST(LaunchDeploymentConfig, AgreesWithMesh) {
  for (const char* name : {"tiny", "flash", "pro"}) {
    const ModelConfig m = load_model_config(testing::source_dir() / "configs/models" / (std::string(name) + ".json"));
    const parallel::MeshModelDims dims{static_cast<int>(m.num_heads), static_cast<int>(m.o_groups),
                                       static_cast<int>(m.num_routed_experts),
                                       m.moe_intermediate_size * m.num_shared_experts, static_cast<int>(m.fp8_block)};
    for (int tp : {1, 2, 3, 4, 8, 16, 32}) {
      for (int ep : {1, 2, 3, 4, 8, 16, 32, 64, 128, 256}) {
        for (int cp : {1, 2}) {
          const int world = 128 * tp * cp;  // dp = 128 keeps ep | world for every ep here
          const ParallelLayout l{128, tp, ep, cp};
          const parallel::MeshConfig mc{world, 128, tp, ep, cp};
          EXPECT_EQ(layout_problems(m, l).empty(), parallel::Mesh::violations(mc, dims).empty())
              << name << " " << to_string(l);
        }
      }
    }
  }
}

}  // namespace
}  // namespace dsv4
