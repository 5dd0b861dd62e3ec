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

// A CPU host of round numbers: 10 GB/s; per format a pass rate (weights per s per 8 tokens) and a per-token
// FLOP rate (hardware.h, cpu_hardware_fields).
std::string cpu_profile_text() {
  return R"(name: round-cpu
device: cpu
memory_bytes: {value: 1.0e10, source: estimate}
memory_bandwidth: {value: 1.0e10, source: estimate}
bf16_flops: {value: 1.0e10, source: estimate}
fp8_flops: {value: 1.0e10, source: estimate}
cpu_fp8_pass: {value: 1.0e9, source: estimate}
cpu_fp8_flops: {value: 1.0e10, source: estimate}
cpu_fp4_pass: {value: 5.0e8, source: estimate}
cpu_fp4_flops: {value: 5.0e9, source: estimate}
cpu_bf16_pass: {value: 2.0e9, source: estimate}
cpu_bf16_flops: {value: 1.0e10, source: estimate}
cpu_f32_pass: {value: 1.0e9, source: estimate}
cpu_f32_flops: {value: 1.0e10, source: estimate}
intra_bandwidth: {value: 1.0e9, source: estimate}
intra_latency: {value: 1.0e-6, source: estimate}
inter_bandwidth: {value: null, source: unmeasured}
inter_latency: {value: null, source: unmeasured}
a2a_intra_bandwidth: {value: 1.0e9, source: estimate}
a2a_inter_bandwidth: {value: null, source: unmeasured}
a2a_latency: {value: 1.0e-5, source: estimate}
step_overhead: {value: 0, source: estimate}
)";
}

std::string cpu_profile() {
  static const fs::path path = [] {
    const fs::path p = testing::scratch_dir("launch_sim_cpu") / "cpu.yaml";
    std::ofstream(p) << cpu_profile_text();
    return p;
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
  // Overlap on: two micro-batches of one sequence each in a ping-pong, 2 x max(compute, communication) of the half
  // step (step_overhead is 0 here), used only when it beats the serial step. Half the tokens do not halve a
  // memory-bound step: the half step's compute is more than half of the whole.
  ASSERT_TRUE(d.contains("micro_batch")) << d.dump();
  const double mc = d["micro_batch"]["compute"].get<double>(), mm = d["micro_batch"]["communication"].get<double>();
  EXPECT_GT(mc, 0.5 * compute);
  EXPECT_LT(mc, compute);
  EXPECT_NEAR(d["total"].get<double>(), std::min(compute + comm, 2.0 * std::max(mc, mm)), 1e-15);
  EXPECT_EQ(d["overlapped"].get<bool>(), 2.0 * std::max(mc, mm) < compute + comm);
  EXPECT_NEAR(j["decode_tokens_per_s_per_gpu"].get<double>(), 4.0 / (d["total"].get<double>() * 2), 1e-6);
  // Memory: the plan's weights for this layout plus 2 sequences' state at 1024 tokens:
  // 2 * (1024 * 137.125 + ring 19200 + compressors 311296).
  EXPECT_NEAR(j["memory"]["state"].get<double>(), 2.0 * (140416 + 19200 + 311296), 1.0);
  // Without overlap the step is the sum.
  j = launch_json(args + " --no-overlap");
  EXPECT_NEAR(j["decode"]["total"].get<double>(), compute + comm, 1e-12);
}

TEST(LaunchSimulator, CpuLinearKernelModel) {
  // 1024 x 1024 FP8 weights, one token: one pass (1,048,576 / 1e9 s) + 2 * 1,048,576 flops / 1e10.
  auto j = launch_json("gemm --hardware " + cpu_profile() + " -m 1 -n 1024 -k 1024 --dtype fp8");
  EXPECT_NEAR(j["seconds"].get<double>(), 1048576.0 * (1.0 / 1e9 + 2.0 / 1e10), 1e-12);
  // 9 tokens take two passes (8 + 1) and 9 tokens' FMAs; FP4 has its own rates.
  j = launch_json("gemm --hardware " + cpu_profile() + " -m 9 -n 1024 -k 1024 --dtype fp4");
  EXPECT_EQ(j["passes"].get<double>(), 2.0);
  EXPECT_NEAR(j["seconds"].get<double>(), 1048576.0 * (2.0 / 5e8 + 18.0 / 5e9), 1e-12);
  // A GPU profile has no FP4 linear of its own (FP4 is dequantised inside the FP8 GEMM).
  std::string out;
  EXPECT_NE(launch("gemm --hardware " + test_profile() + " -m 1 -n 8 -k 8 --dtype fp4", &out), 0);
  EXPECT_NE(out.find("--dtype fp4 is for cpu profiles"), std::string::npos) << out;
}

TEST(LaunchSimulator, CpuRanksShareTheHost) {
  // One rank alone, then two ranks on the same host each with one sequence (dp = 2): every GEMM of a rank sees
  // half the host's pass and FLOP rates, so the dense part of a step takes exactly twice as long; CPU ranks do
  // not overlap communication (total = compute + communication) and each gets half of the host memory.
  auto one = launch_json("simulate --json --config " + src("configs/models/tiny.json") +
                         " --layout 1,1,1,1 --nodes 1 --gpus-per-node 1 --hardware " + cpu_profile() +
                         " --batch 1 --context 64 --prompt 16 --output 4");
  auto two = launch_json("simulate --json --config " + src("configs/models/tiny.json") +
                         " --layout 2,1,1,1 --nodes 1 --gpus-per-node 2 --hardware " + cpu_profile() +
                         " --batch 2 --context 64 --prompt 16 --output 4");
  ASSERT_TRUE(one.contains("decode") && two.contains("decode"));
  EXPECT_NEAR(two["decode"]["parts"]["dense_gemm"].get<double>(),
              2.0 * one["decode"]["parts"]["dense_gemm"].get<double>(), 1e-12);
  EXPECT_NEAR(two["memory"]["capacity"].get<double>(), 0.5e10, 1.0);
  // The LM head alone, by hand: 129280 x 256 BF16 weights, one token: 33,095,680 * (1/2e9 + 2/1e10).
  auto head = launch_json("gemm --hardware " + cpu_profile() + " -m 1 -n 129280 -k 256 --dtype bf16");
  EXPECT_NEAR(head["seconds"].get<double>(), 33095680.0 * (1.0 / 2e9 + 2.0 / 1e10), 1e-12);
  // With experts spread over the two ranks (ep = 2) the step gains dispatch/combine and is the plain sum.
  auto ep = launch_json("simulate --json --config " + src("configs/models/tiny.json") +
                        " --layout 2,1,2,1 --nodes 1 --gpus-per-node 2 --hardware " + cpu_profile() +
                        " --batch 2 --context 64 --prompt 16 --output 4");
  const auto& d = ep["decode"];
  EXPECT_GT(d["parts"]["dispatch_combine"].get<double>(), 0.0);
  EXPECT_NEAR(d["total"].get<double>(), d["compute"].get<double>() + d["communication"].get<double>(), 1e-15);
}

TEST(LaunchSimulator, MlaModelByHand) {
  // A tiny MLA model: 2 layers (1 dense), hidden 256, 4 heads, q_lora 64, kv_lora 32, nope 16, rope 8, v 16,
  // dense FFN 512, experts 8 x 64 (1 shared), top-2, vocab 1000, FP8 weights, BF16 latent cache.
  const fs::path path = testing::scratch_dir("launch_mla") / "mla.yaml";
  std::ofstream(path) << R"(name: tiny-mla
layers: 2
dense_layers: 1
hidden: 256
heads: 4
q_lora_rank: 64
kv_lora_rank: 32
qk_nope_head_dim: 16
qk_rope_head_dim: 8
v_head_dim: 16
dense_intermediate: 512
moe_intermediate: 64
routed_experts: 8
shared_experts: 1
experts_per_token: 2
vocab: 1000
weight_bytes: 1.0
kv_cache_bytes: 2.0
)";
  auto j = launch_json("simulate --json --mla-model " + path.string() +
                       " --layout 1,1,1,1 --nodes 1 --gpus-per-node 1 --hardware " + test_profile() +
                       " --batch 2 --context 100 --prompt 50 --output 10");
  ASSERT_TRUE(j.contains("memory")) << j.dump();
  // Weights: attention per layer 256*64 + 64*4*24 + 256*40 + 32*4*32 + 4*16*256 = 53,248 (x2 layers); dense FFN
  // 3*256*512 = 393,216; shared 3*256*64 = 49,152; experts 8*3*256*64 = 393,216 (1 byte each); router fp32
  // 256*8*4 = 8,192; embedding + head bf16 2*256*1000*2 = 1,024,000. Total 1,974,272 B.
  EXPECT_DOUBLE_EQ(j["memory"]["weights"].get<double>(), 1974272.0);
  // Latent cache: 2 sequences x 100 tokens x 2 layers x (32 + 8) x 2 B.
  EXPECT_DOUBLE_EQ(j["memory"]["state"].get<double>(), 32000.0);
  // Sampling: 2 tokens x 1000 fp32 logits, 3 passes at 1 TB/s.
  EXPECT_NEAR(j["decode"]["parts"]["sampling"].get<double>(), 3.0 * 2 * 1000 * 4 / 1e12, 1e-18);
  EXPECT_EQ(j["decode"]["parts"]["compressor_indexer"].get<double>(), 0.0);  // no V4 compressors in MLA
  // MLA on a CPU profile, and experts that do not divide over ep, are refused with the reason.
  std::string out;
  EXPECT_NE(launch("simulate --mla-model " + path.string() +
                       " --layout 1,1,1,1 --nodes 1 --gpus-per-node 1 --hardware " + cpu_profile(),
                   &out),
            0);
  EXPECT_NE(out.find("GPU profiles only"), std::string::npos) << out;
  EXPECT_NE(launch("simulate --mla-model " + path.string() +
                       " --layout 3,1,3,1 --nodes 1 --gpus-per-node 3 --batch 3 "
                       "--hardware " +
                       test_profile(),
                   &out),
            0);
  EXPECT_NE(out.find("ep=3 must divide the world (3) and the 8 physical experts"), std::string::npos) << out;
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
  // CPU kernel fields: required on a cpu profile, refused on a gpu profile.
  std::string gpu_with_cpu_field = text + "cpu_fp8_pass: {value: 1.0e9, source: estimate}\n";
  std::ofstream(dir / "gpucpu.yaml") << gpu_with_cpu_field;
  EXPECT_NE(launch("gemm -m 1 -n 1 -k 1 --hardware " + (dir / "gpucpu.yaml").string(), &out), 0);
  EXPECT_NE(out.find("cpu_fp8_pass: only for device: cpu"), std::string::npos) << out;
  std::string cpu_missing = cpu_profile_text();
  cpu_missing.erase(cpu_missing.find("cpu_f32_pass:"),
                    std::string("cpu_f32_pass: {value: 1.0e9, source: estimate}\n").size());
  std::ofstream(dir / "cpumissing.yaml") << cpu_missing;
  EXPECT_NE(launch("gemm -m 1 -n 1 -k 1 --hardware " + (dir / "cpumissing.yaml").string(), &out), 0);
  EXPECT_NE(out.find("cpu_f32_pass: missing"), std::string::npos) << out;
}

TEST(LaunchSimulator, RefusalsAndSweep) {
  std::string out;
  EXPECT_NE(launch("simulate --config " + src("configs/models/pro.json") +
                       " --layout 8,16,128,1 --nodes 16 --gpus-per-node 8 --hardware " + test_profile(),
                   &out),
            0);
  EXPECT_NE(out.find("192 columns per rank"), std::string::npos) << out;
  std::string unmeasured = cpu_profile_text();
  unmeasured.replace(unmeasured.find("cpu_bf16_flops: {value: 1.0e10, source: estimate}"), 49,
                     "cpu_bf16_flops: {value: null, source: unmeasured, note: \"not yet\"}");
  const fs::path unmeasured_path = testing::scratch_dir("launch_unmeasured") / "cpu.yaml";
  std::ofstream(unmeasured_path) << unmeasured;
  EXPECT_NE(launch("simulate --config " + src("configs/models/tiny.json") +
                       " --layout 2,1,2,1 --nodes 1 --gpus-per-node 2 --batch 2 --hardware " + unmeasured_path.string(),
                   &out),
            0);
  EXPECT_NE(out.find("'cpu_bf16_flops' is not measured yet"), std::string::npos) << out;
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
