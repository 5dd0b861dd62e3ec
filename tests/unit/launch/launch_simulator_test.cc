// The simulator's arithmetic on hand-checked cases, through `dsv4-launch gemm / collective / simulate` with a
// test hardware profile of round numbers.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "tests/support/test_paths.h"
#include "tests/unit/launch/launch_test_util.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

using launch_test::launch;
using launch_test::launch_bin;
using launch_test::src;

nlohmann::json launch_json(const std::string& args) {
  std::string out;
  const int rc = launch(args, &out);
  EXPECT_EQ(rc, 0) << out;
  if (rc != 0) return {};
  return nlohmann::json::parse(out);
}

// 1 TB/s memory, 100 / 200 TFLOP/s bf16 / fp8, 100 GB/s + 1 us inside a node, 10 GB/s + 10 us across.
std::string test_profile() {
  static const fs::path path = [] {
    const fs::path dir = testing::scratch_dir("launch_sim");
    std::ofstream(dir / "round.yaml") << R"(name: round-numbers
device: gpu
memory_bytes: {value: 1.0e10, source: estimate}
memory_bandwidth: {value: 1.0e12, source: estimate}
bf16_flops: {value: 1.0e14, source: estimate}
fp8_flops: {value: 2.0e14, source: estimate}
intra_bandwidth: {value: 1.0e11, source: estimate}
intra_latency: {value: 1.0e-6, source: estimate}
inter_bandwidth: {value: 1.0e10, source: estimate}
inter_latency: {value: 1.0e-5, source: estimate}
a2a_intra_bandwidth: {value: 1.0e11, source: estimate}
a2a_inter_bandwidth: {value: 1.0e10, source: estimate}
a2a_latency: {value: 1.0e-5, source: estimate}
step_overhead: {value: 0, source: estimate}
)";
    return dir / "round.yaml";
  }();
  return path.string();
}

TEST(LaunchSimulator, GemmRoofline) {
  // Decode-shaped: 1 x 4096 x 4096 FP8. Bytes = 4096^2 weights + 4096 * 2 in + 4096 * 2 out = 16,793,600
  // -> 16.7936 us at 1 TB/s; flops 33,554,432 -> 0.168 us at 200 TFLOP/s: memory-bound.
  auto j = launch_json("gemm --hardware " + test_profile() + " -m 1 -n 4096 -k 4096 --dtype fp8");
  EXPECT_DOUBLE_EQ(j["bytes"].get<double>(), 16793600.0);
  EXPECT_DOUBLE_EQ(j["flops"].get<double>(), 33554432.0);
  EXPECT_NEAR(j["seconds"].get<double>(), 16.7936e-6, 1e-12);
  EXPECT_FALSE(j["compute_bound"].get<bool>());
  // Prefill-shaped: 8192^3 BF16: 2 * 8192^3 = 1.0995e12 flops -> 10.995 ms at 100 TFLOP/s; bytes 3 * 8192^2 * 2
  // = 402,653,184 -> 0.40 ms: compute-bound.
  j = launch_json("gemm --hardware " + test_profile() + " -m 8192 -n 8192 -k 8192 --dtype bf16");
  EXPECT_NEAR(j["seconds"].get<double>(), 2.0 * 8192.0 * 8192.0 * 8192.0 / 1e14, 1e-12);
  EXPECT_TRUE(j["compute_bound"].get<bool>());
}

TEST(LaunchSimulator, AllToAll) {
  // DeepEP's decode setting on 2 nodes x 8: 128 tokens per rank, top-8, hidden 7168, EP 16.
  // 16384 copies over 16 ranks: mean 1024, sigma = sqrt(16384 / 16 * 15 / 16) = sqrt(960) = 30.984;
  // z(16) = Phi^-1((16 - 0.375) / 16.25) = Phi^-1(0.961538) = 1.768825 -> busiest rank 1078.806 copies.
  auto j = launch_json("collective --hardware " + test_profile() +
                       " --kind dispatch --ranks 16 --gpus-per-node 8 --tokens 128 --hidden 7168 --topk 8");
  const double copies = 1024.0 + std::sqrt(960.0) * 1.768825;
  EXPECT_NEAR(j["max_copies_per_rank"].get<double>(), copies, 1e-3);
  // FP8 + one fp32 scale per 128: 7392 B a copy. 8 of 16 ranks are across the network (10 GB/s), 7 on
  // NVLink (100 GB/s): the network share dominates. Plus 10 us.
  const double bytes = copies * 7392.0;
  EXPECT_NEAR(j["seconds"].get<double>(), bytes * 8.0 / 16.0 / 1e10 + 1e-5, 1e-9);
  // Combine moves bf16: twice the hidden bytes, no scales.
  j = launch_json("collective --hardware " + test_profile() +
                  " --kind combine --ranks 16 --gpus-per-node 8 --tokens 128 --hidden 7168 --topk 8");
  EXPECT_NEAR(j["seconds"].get<double>(), copies * 14336.0 * 8.0 / 16.0 / 1e10 + 1e-5, 1e-9);
  // Inside one node: 7 of 8 ranks over NVLink. z(8) = Phi^-1(7.625 / 8.25) = Phi^-1(0.924242) = 1.434200.
  j = launch_json("collective --hardware " + test_profile() +
                  " --kind dispatch --ranks 8 --gpus-per-node 8 --tokens 128 --hidden 7168 --topk 8");
  const double copies8 = 1024.0 + std::sqrt(8192.0 / 8.0 * 7.0 / 8.0) * 1.434200;
  EXPECT_NEAR(j["seconds"].get<double>(), copies8 * 7392.0 * 7.0 / 8.0 / 1e11 + 1e-5, 1e-9);
  // A skew of 1.5 scales the mean load.
  j = launch_json("collective --hardware " + test_profile() +
                  " --kind dispatch --ranks 8 --gpus-per-node 8 --tokens 128 --hidden 7168 --topk 8 --expert-skew 1.5");
  EXPECT_NEAR(j["max_copies_per_rank"].get<double>(), 1536.0 + std::sqrt(896.0) * 1.434200, 1e-3);
  // TP all-reduce of 128 x 7168 bf16 over 8 ranks in a node: 2 * 7/8 * 1,835,008 B / 100 GB/s + 2 * 3 * 1 us.
  j = launch_json("collective --hardware " + test_profile() + " --kind allreduce --ranks 8 --tokens 128 --hidden 7168");
  EXPECT_NEAR(j["seconds"].get<double>(), 2.0 * 7.0 / 8.0 * 1835008.0 / 1e11 + 6e-6, 1e-12);
}

TEST(LaunchSimulator, SimulateTinyStep) {
  const std::string args = "simulate --json --config " + src("configs/models/tiny.json") +
                           " --layout 2,1,2,1 --nodes 1 --gpus-per-node 2 --hardware " + test_profile() +
                           " --batch 4 --context 1024 --prompt 64 --output 16";
  auto j = launch_json(args);
  ASSERT_TRUE(j.contains("decode")) << j.dump();
  const auto& d = j["decode"];
  // Sampling: 2 sequences per replica, three passes over 129280 fp32 logits at 1 TB/s, no TP gather.
  EXPECT_NEAR(d["parts"]["sampling"].get<double>(), 3.0 * 2 * 129280 * 4 / 1e12, 1e-15);
  EXPECT_EQ(d["parts"]["tp_collectives"].get<double>(), 0.0);  // tp = 1
  double compute = 0, comm = 0;
  for (const auto& [name, v] : d["parts"].items()) {
    (name == "dispatch_combine" || name == "tp_collectives" ? comm : compute) += v.get<double>();
  }
  EXPECT_NEAR(d["compute"].get<double>(), compute, 1e-15);
  EXPECT_NEAR(d["total"].get<double>(), std::max(compute, comm), 1e-15);  // overlap on
  EXPECT_NEAR(j["decode_tokens_per_s_per_gpu"].get<double>(), 4.0 / (d["total"].get<double>() * 2), 1e-6);
  // Memory: the plan's weights for this layout plus 2 sequences' state at 1024 tokens:
  // 2 * (1024 * 137.125 + ring 19200 + compressors 311296).
  EXPECT_NEAR(j["memory"]["state"].get<double>(), 2.0 * (140416 + 19200 + 311296), 1.0);
  // Without overlap the step is the sum.
  j = launch_json(args + " --no-overlap");
  EXPECT_NEAR(j["decode"]["total"].get<double>(), compute + comm, 1e-12);
}

TEST(LaunchSimulator, ProfileErrorsNameTheField) {
  const fs::path dir = testing::scratch_dir("launch_profile");
  std::string text;
  {
    std::ifstream in(test_profile());
    std::stringstream s;
    s << in.rdbuf();
    text = s.str();
  }
  std::string out;
  std::string typo = text;
  typo.replace(typo.find("memory_bandwidth"), 16, "memory_bandwith");
  std::ofstream(dir / "typo.yaml") << typo;
  EXPECT_NE(launch("gemm -m 1 -n 1 -k 1 --hardware " + (dir / "typo.yaml").string(), &out), 0);
  EXPECT_NE(out.find("typo.yaml: memory_bandwith: unknown key"), std::string::npos) << out;
  std::string nosource = text;
  nosource.replace(nosource.find("value: 1.0e12, source: estimate"), 31, "value: 1.0e12");
  std::ofstream(dir / "nosource.yaml") << nosource;
  EXPECT_NE(launch("gemm -m 1 -n 1 -k 1 --hardware " + (dir / "nosource.yaml").string(), &out), 0);
  EXPECT_NE(out.find("memory_bandwidth.source: missing"), std::string::npos) << out;
}

TEST(LaunchSimulator, RefusalsAndSweep) {
  std::string out;
  EXPECT_NE(launch("simulate --config " + src("configs/models/pro.json") +
                       " --layout 8,16,128,1 --nodes 16 --gpus-per-node 8 --hardware " + test_profile(),
                   &out),
            0);
  EXPECT_NE(out.find("192 columns per rank"), std::string::npos) << out;
  EXPECT_NE(launch("simulate --config " + src("configs/models/tiny.json") +
                       " --layout 2,1,2,1 --nodes 1 --gpus-per-node 2 --batch 2 --hardware " +
                       src("configs/hardware/cpu-2core.yaml"),
                   &out),
            0);
  EXPECT_NE(out.find("is not measured yet"), std::string::npos) << out;
  // --deployment takes model, layout and nodes from a deployment YAML: 4096 sequences over dp = 16 replicas.
  auto j = launch_json("simulate --json --deployment " + src("configs/deployments/pro-16x8xh100.yaml") +
                       " --hardware " + src("configs/hardware/h100.yaml") + " --batch 4096");
  EXPECT_EQ(j["decode"]["tokens_per_replica"].get<double>(), 256.0);
  EXPECT_TRUE(j["fits"].get<bool>());
  const fs::path csv = testing::scratch_dir("launch_sweep") / "curve.csv";
  ASSERT_EQ(launch("simulate --config " + src("configs/models/pro.json") +
                       " --layout 1,8,8,1 --gpus-per-node 8 --batch 64 --hardware " +
                       src("configs/hardware/h100.yaml") + " --sweep 8..32 --csv " + csv.string(),
                   &out),
            0)
      << out;
  std::ifstream in(csv);
  std::string line;
  std::vector<std::string> lines;
  while (std::getline(in, line)) lines.push_back(line);
  ASSERT_EQ(lines.size(), 4u) << out;                      // header + 8, 16, 32 GPUs
  EXPECT_EQ(lines[1].substr(0, 13), "8,1,1,8,8,1,6");      // 8 GPUs: dp 1, tp 8, ep 8, batch 64
  EXPECT_EQ(lines[3].substr(0, 17), "32,4,4,8,32,1,256");  // 32 GPUs: 4 replicas of 64 sequences, ep 32
}

}  // namespace
}  // namespace dsv4
