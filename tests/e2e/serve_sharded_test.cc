// dsv4-server on 4 ranks under the layout of configs/deployments/tiny-cpu.yaml (every rank holds its shard;
// sequences spread over the DP replicas; sampling from per-shard candidates): concurrent greedy requests give
// the tokens `dsv4 generate` gives as one process (deterministic mode: bitwise equal logits), the state budget
// is what the deployment's memory leaves (the number `dsv4-launch plan` prints), the engine gauges count every
// replica, an idle server's ranks do not spin, and SIGTERM drains to exit 0. Also: a memory budget that leaves
// nothing for state is refused with the YAML key, and a cp 2 server gives `dsv4 generate`'s greedy tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "tests/e2e/serve_e2e_support.h"
#include "tests/support/test_paths.h"

namespace dsv4::testing {
namespace {

// CPU seconds (user + system) process `pid` has used so far, from /proc/PID/stat; -1 when unreadable.
double cpu_seconds(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1.0;
  std::istringstream fields(stat.substr(close + 2));
  std::string f;
  double ticks = 0.0;
  // After "pid (comm) ": state is field 3; utime and stime are fields 14 and 15.
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(f);
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// The tiny checkpoint every test here serves (made once per run).
const std::string& tiny_checkpoint() {
  static const std::string ckpt = [] {
    const std::string path = (scratch_dir("serve_sharded") / "ckpt").string();
    std::string out;
    if (run_command(dsv4_bin().string() + " make-checkpoint --config " +
                        (source_dir() / "configs/models/tiny.json").string() + " --seed 3 --out " + path,
                    &out) != 0) {
      ADD_FAILURE() << out;
    }
    return path;
  }();
  return ckpt;
}

// Sends `prompts` to `server` at once (greedy, `max_tokens` each) and checks that each stream's tokens are what
// `dsv4 generate --deterministic` gives for the same prompt in one process.
void expect_generate_tokens(const ServerProcess& server, const std::string& ckpt,
                            const std::vector<std::vector<int32_t>>& prompts, int max_tokens, const std::string& what) {
  std::vector<std::future<StreamResult>> calls;
  for (const auto& p : prompts) {
    calls.push_back(std::async(std::launch::async, [&server, p, max_tokens] {
      auto stub = v1::Inference::NewStub(grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
      return generate(*stub, token_request(p, max_tokens), "");
    }));
  }
  std::string out;
  for (size_t i = 0; i < prompts.size(); ++i) {
    StreamResult r = calls[i].get();
    ASSERT_TRUE(r.status.ok()) << r.status.error_message() << "\n" << server.log();
    std::string ids, want;
    for (size_t k = 0; k < prompts[i].size(); ++k) ids += (k ? "," : "") + std::to_string(prompts[i][k]);
    for (size_t k = 0; k < r.tokens.size(); ++k) want += (k ? "," : "") + std::to_string(r.tokens[k]);
    ASSERT_EQ(run_command(dsv4_bin().string() + " generate --checkpoint " + ckpt +
                              " --numerics plain --deterministic --temperature 0 --max-tokens " +
                              std::to_string(max_tokens) + " --print-token-ids --prompt-tokens " + ids,
                          &out),
              0)
        << out;
    EXPECT_NE(out.find("[token_ids] " + want + "\n"), std::string::npos)
        << "request " << i << ": " << what << " gave " << want << "\n" << out;
  }
}

TEST(ServeSharded, TinyCpuLayoutServesDsv4GenerateTokensAndIdlesQuietly) {
  const char* mpiexec = std::getenv("DSV4_MPIEXEC");
  if (mpiexec == nullptr || *mpiexec == '\0') GTEST_SKIP() << "DSV4_MPIEXEC is not set";
  const std::string& ckpt = tiny_checkpoint();
  std::string out;
  const std::string deployment = (source_dir() / "configs/deployments/tiny-cpu.yaml").string();
  ServerProcess server(ckpt, {"--deployment", deployment, "--deterministic"}, {mpiexec, "-np", "4", "--oversubscribe"});
  ASSERT_EQ(server.rank_pids().size(), 4u);

  // The state budget comes from the deployment's memory (memory.budget_per_rank less the weights and the
  // workspace, the least over the ranks): the number `dsv4-launch plan` prints, most of the 2 GiB here.
  {
    auto stub = v1::Inference::NewStub(grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    v1::ModelInfo info;
    ASSERT_TRUE(stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok());
    EXPECT_EQ(info.layout().world_size(), 4);
    EXPECT_EQ(info.layout().dp(), 2);
    EXPECT_EQ(info.layout().tp(), 2);
    EXPECT_EQ(info.layout().ep(), 4);
    EXPECT_EQ(info.layout().cp(), 1);
    const std::string launch = std::string(DSV4_BINARY_DIR) + "/launcher/dsv4-launch";
    ASSERT_EQ(run_command(launch + " plan " + deployment + " --json", &out), 0) << out;
    const nlohmann::json plan = nlohmann::json::parse(out.substr(out.find('{')));
    EXPECT_EQ(info.state_budget_bytes(), plan.at("state_budget").get<int64_t>()) << out;
    EXPECT_GT(info.state_budget_bytes(), int64_t{3} << 29) << "less than 1.5 GiB of 2 GiB for state";
    EXPECT_LT(info.state_budget_bytes(), int64_t{2} << 30);
  }

  // Requests at once, so that the scheduler spreads them over the replicas.
  const std::vector<std::vector<int32_t>> prompts = {
      {0, 19923, 3, 223, 5464}, {0, 16, 30594, 7624}, {0, 100, 200, 300, 400, 500, 600}, {0, 7}};
  expect_generate_tokens(server, ckpt, prompts, 6, "the server");

  // The engine gauges count every DP replica, not only rank 0's: four longer requests run at once, two on each
  // replica, so the sequences holding state reach 4 (rank 0's replica alone holds 2).
  {
    std::vector<std::future<StreamResult>> longer;
    for (int i = 0; i < 4; ++i) {
      longer.push_back(std::async(std::launch::async, [&server, i] {
        auto stub = v1::Inference::NewStub(grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
        return generate(*stub, token_request({0, 50 + i, 60 + i}, 48), "");
      }));
    }
    double most = 0.0, most_running = 0.0;
    auto done = [&longer] {
      for (auto& f : longer) {
        if (f.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return false;
      }
      return true;
    };
    while (!done()) {
      const std::string m = http_get_metrics(server.metrics_port());
      most = std::max(most, metric_value(m, "dsv4_engine_sequences"));
      most_running = std::max(most_running, metric_value(m, "dsv4_running_sequences"));
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    for (auto& f : longer) ASSERT_TRUE(f.get().status.ok()) << server.log();
    EXPECT_EQ(most_running, 4.0);
    EXPECT_EQ(most, 4.0) << "dsv4_engine_sequences never counted all 4 sequences of the 2 replicas";
    // Freed on every replica afterwards (the next plan frees them; the gauge follows its step).
    double left = -1.0;
    for (int i = 0; i < 500 && left != 0.0; ++i) {
      left = metric_value(http_get_metrics(server.metrics_port()), "dsv4_engine_sequences");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(left, 0.0);
  }

  // Idle: rank 0 waits on its queue and the followers wait for a plan without spinning.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  std::vector<double> before;
  for (int pid : server.rank_pids()) before.push_back(cpu_seconds(pid));
  const double window_s = 2.0;
  std::this_thread::sleep_for(std::chrono::duration<double>(window_s));
  for (size_t r = 0; r < before.size(); ++r) {
    const double used = cpu_seconds(server.rank_pids()[r]) - before[r];
    ASSERT_GE(before[r], 0.0) << "cannot read /proc for rank " << r;
    EXPECT_LT(used, 0.1 * window_s) << "idle rank " << r << " used " << used << " s of CPU in " << window_s << " s";
  }
  EXPECT_NE(server.log().find("[rank 3] layout world=4"), std::string::npos) << server.log();
  // SIGTERM to rank 0 (as scripts/run.sh does): drain, the shutdown plan reaches every rank, all exit 0.
  ASSERT_EQ(::kill(server.rank_pids()[0], SIGTERM), 0);
  EXPECT_EQ(server.wait_exit(30), 0) << server.log();
}

// Context parallelism in the server: 2 ranks sharing every sequence (cp 2, one replica) give the greedy tokens
// of `dsv4 generate` as one process, for a prompt long enough to emit ratio-128 rows (and run as two
// micro-batches), with a second request running beside it.
TEST(ServeSharded, ContextParallelServerGivesDsv4GenerateTokens) {
  const char* mpiexec = std::getenv("DSV4_MPIEXEC");
  if (mpiexec == nullptr || *mpiexec == '\0') GTEST_SKIP() << "DSV4_MPIEXEC is not set";
  const std::string& ckpt = tiny_checkpoint();
  // Prompts of 64 tokens or more go through the two-micro-batch pipeline (two threads per rank calling MPI).
  ServerProcess server(ckpt, {"--cp", "2", "--deterministic"},
                       {mpiexec, "-np", "2", "--oversubscribe", "-x", "DSV4_PIPELINE_MIN_TOKENS=64"});
  std::vector<int32_t> prompt = {0};
  for (int32_t i = 0; i < 138; ++i) prompt.push_back(3 + (i * 733) % 129000);
  const std::vector<std::vector<int32_t>> prompts = {prompt, {0, 42, 4242}};
  expect_generate_tokens(server, ckpt, prompts, 8, "the cp 2 server");
  EXPECT_GE(metric_value(http_get_metrics(server.metrics_port()), "dsv4_pipelined_forwards_total"), 1.0)
      << "the 139-token prompt was not pipelined";
  // SIGTERM to rank 0: drain, every rank exits 0.
  ASSERT_EQ(::kill(server.rank_pids()[0], SIGTERM), 0);
  EXPECT_EQ(server.wait_exit(30), 0) << server.log();
}

// A memory.budget_per_rank that the weights and the workspace already fill: every rank refuses to start with
// the numbers and the YAML key, the job exits non-zero, nothing hangs.
TEST(ServeSharded, ABudgetThatLeavesNoStateIsRefused) {
  const char* mpiexec = std::getenv("DSV4_MPIEXEC");
  if (mpiexec == nullptr || *mpiexec == '\0') GTEST_SKIP() << "DSV4_MPIEXEC is not set";
  const char* server_bin = std::getenv("DSV4_SERVER_BIN");
  ASSERT_NE(server_bin, nullptr) << "DSV4_SERVER_BIN is not set (run through ctest)";
  std::string yaml = read_file(source_dir() / "configs/deployments/tiny-cpu.yaml");
  auto replace = [&yaml](const std::string& from, const std::string& to) {
    const size_t at = yaml.find(from);
    ASSERT_NE(at, std::string::npos) << "tiny-cpu.yaml has no '" << from << "'";
    yaml.replace(at, from.size(), to);
  };
  // 256 MiB: less than the 72 MiB of weights plus the 265 MiB workspace of each rank.
  replace("budget_per_rank: 2GiB", "budget_per_rank: 256MiB");
  replace("config: ../models/tiny.json", "config: " + (source_dir() / "configs/models/tiny.json").string());
  const std::filesystem::path file = scratch_dir("serve_sharded_small") / "small-budget.yaml";
  std::ofstream(file) << yaml;
  std::string out;
  const auto start = std::chrono::steady_clock::now();
  const int rc = run_command("timeout 120 " + std::string(mpiexec) + " -np 4 --oversubscribe " + server_bin +
                                 " --deployment " + file.string() + " --checkpoint " + tiny_checkpoint() +
                                 " --address 127.0.0.1:0 --metrics-address ''",
                             &out);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(rc, 124) << "the server hung\n" << out;
  EXPECT_LT(seconds, 60.0) << out;
  EXPECT_NE(out.find("small-budget.yaml: memory.budget_per_rank = 256.00 MiB (268435456 bytes) leaves nothing for "
                     "sequence state"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("activation workspace 265.27 MiB (278151168 bytes)"), std::string::npos) << out;
}

}  // namespace
}  // namespace dsv4::testing
