// dsv4-server on 4 ranks under the layout of configs/deployments/tiny-cpu.yaml (every rank holds its shard;
// sequences spread over the DP replicas; sampling from per-shard candidates): concurrent greedy requests give
// the tokens `dsv4 generate` gives as one process (deterministic mode: bitwise equal logits), an idle server's
// ranks do not spin, and SIGTERM drains to exit 0.
#include <gtest/gtest.h>

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

TEST(ServeSharded, TinyCpuLayoutServesDsv4GenerateTokensAndIdlesQuietly) {
  const char* mpiexec = std::getenv("DSV4_MPIEXEC");
  if (mpiexec == nullptr || *mpiexec == '\0') GTEST_SKIP() << "DSV4_MPIEXEC is not set";
  const std::filesystem::path dir = scratch_dir("serve_sharded");
  const std::string ckpt = (dir / "ckpt").string();
  std::string out;
  ASSERT_EQ(run_command(dsv4_bin().string() + " make-checkpoint --config " +
                            (source_dir() / "configs/models/tiny.json").string() + " --seed 3 --out " + ckpt,
                        &out),
            0)
      << out;
  const std::string deployment = (source_dir() / "configs/deployments/tiny-cpu.yaml").string();
  ServerProcess server(ckpt, {"--deployment", deployment, "--deterministic"}, {mpiexec, "-np", "4", "--oversubscribe"});
  ASSERT_EQ(server.rank_pids().size(), 4u);

  // Requests at once, so that the scheduler spreads them over the replicas.
  const std::vector<std::vector<int32_t>> prompts = {
      {0, 19923, 3, 223, 5464}, {0, 16, 30594, 7624}, {0, 100, 200, 300, 400, 500, 600}, {0, 7}};
  std::vector<std::future<StreamResult>> calls;
  for (const auto& p : prompts) {
    calls.push_back(std::async(std::launch::async, [&server, p] {
      auto stub = v1::Inference::NewStub(grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
      return generate(*stub, token_request(p, 6), "");
    }));
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    StreamResult r = calls[i].get();
    ASSERT_TRUE(r.status.ok()) << r.status.error_message() << "\n" << server.log();
    std::string ids, want;
    for (size_t k = 0; k < prompts[i].size(); ++k) ids += (k ? "," : "") + std::to_string(prompts[i][k]);
    for (size_t k = 0; k < r.tokens.size(); ++k) want += (k ? "," : "") + std::to_string(r.tokens[k]);
    ASSERT_EQ(run_command(dsv4_bin().string() + " generate --checkpoint " + ckpt +
                              " --numerics plain --deterministic --temperature 0 --max-tokens 6 --print-token-ids"
                              " --prompt-tokens " + ids,
                          &out),
              0)
        << out;
    EXPECT_NE(out.find("[token_ids] " + want + "\n"), std::string::npos)
        << "request " << i << ": the server gave " << want << "\n" << out;
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

}  // namespace
}  // namespace dsv4::testing
