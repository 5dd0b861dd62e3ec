// `dsv4-launch plan / run / slurm` end to end through the executable: plan numbers on a hand-checked tiny
// case, refused layouts, the exact mpirun lines and sbatch scripts of tiny-cpu and pro-16x8xh100.
#include <gtest/gtest.h>

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

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

fs::path write(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
  return p;
}

// A two-rank CPU deployment of the tiny model, written where the test can point it at configs/models.
fs::path tiny_deployment(const fs::path& dir, const std::string& layout, const std::string& extra = "") {
  return write(dir / "d.yaml", "model: {config: " + src("configs/models/tiny.json") + "}\nlayout: " + layout +
                                   "\ngpus_per_node: 0\nranks_per_node: 2\nmemory: {budget_per_rank: 1GiB}\n"
                                   "scheduler: {max_running: 4, max_batch_tokens: 256, max_prompt_tokens: 1024}\n" +
                                   extra);
}

TEST(LaunchCli, PlanTinyHandChecked) {
  const fs::path dir = testing::scratch_dir("launch_plan");
  std::string out;
  ASSERT_EQ(launch("plan --json " + tiny_deployment(dir, "{dp: 2, ep: 2}").string(), &out), 0) << out;
  const auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["ownership"]["experts_per_rank"], 4);
  EXPECT_EQ(j["ownership"]["heads_per_tp_rank"], 4);
  // Experts: w1, w3 are FP4 [256, 256/2] I8 (32768 B) + E8M0 [256, 8] (2048 B); w2 is [256, 128] + [256, 8]:
  // 104448 B per expert, 8 experts x (5 layers + MTP) = 48, half of them on each of the ep=2 ranks.
  EXPECT_EQ(j["weights"]["experts"], 24 * 104448);
  // State (spec §5.3 on tiny: d = 128, r = 64): row 64 FP8 + 64 x bf16 + 1 scale = 193 -> 200 B; indexer
  // 64 + 4 = 68 B. CSA layers 1, 3: (200 + 68) / 4 each; HCA layers 2, 4: 200 / 128 each.
  EXPECT_EQ(j["state"]["main_row_bytes"], 200);
  EXPECT_EQ(j["state"]["indexer_row_bytes"], 68);
  EXPECT_DOUBLE_EQ(j["state"]["bytes_per_token"].get<double>(), 2 * 268.0 / 4 + 2 * 200.0 / 128);
  EXPECT_EQ(j["state"]["ring_bytes"], 6 * 16 * 200);  // (5 layers + MTP) x window 16 x 200 B
  // CSA: [8, 256] kv + score fp32 (16384 B) + indexer [8, 128] (8192 B); HCA: [128, 128] kv + score (131072 B).
  EXPECT_EQ(j["state"]["compressor_bytes"], 2 * (16384 + 8192) + 2 * 131072);
  EXPECT_EQ(j["state"]["sequences_per_rank"], 2);  // max_running 4 over dp 2
  const int64_t fixed = 2 * (6 * 16 * 200 + 311296);
  const int64_t growth = static_cast<int64_t>(1024 * 137.125 + 0.5);
  EXPECT_EQ(j["required"].get<int64_t>(),
            j["weights"]["total"].get<int64_t>() + j["workspace"].get<int64_t>() + fixed + growth);
  EXPECT_EQ(j["budget"], int64_t{1} << 30);
  EXPECT_TRUE(j["fits"]);
}

TEST(LaunchCli, PlanRefusesWhatDoesNotFitOrShard) {
  const fs::path dir = testing::scratch_dir("launch_refuse");
  std::string out;
  // tiny's 256-wide shared expert cannot be split over tp=4 (64-column slices cut the FP8 blocks).
  write(dir / "tiny-tp4.yaml", "model: {config: " + src("configs/models/tiny.json") +
                                  "}\nlayout: {dp: 1, tp: 4, ep: 2}\ngpus_per_node: 0\nranks_per_node: 4\n"
                                  "memory: {budget_per_rank: 1GiB}\n");
  EXPECT_NE(launch("plan " + (dir / "tiny-tp4.yaml").string(), &out), 0);
  EXPECT_NE(out.find("256 / tp=4 = 64 columns per rank"), std::string::npos) << out;
  // The known trap: V4-Pro with TP = 16 (192 columns per rank), built inline, never shipped as a file.
  write(dir / "pro-tp16.yaml", "model: {config: " + src("configs/models/pro.json") +
                                   "}\nlayout: {dp: 8, tp: 16, ep: 128}\nnodes: 16\ngpus_per_node: 8\n"
                                   "memory: {budget_per_rank: 72GiB}\n");
  EXPECT_NE(launch("plan " + (dir / "pro-tp16.yaml").string(), &out), 0);
  EXPECT_NE(out.find("3072 / tp=16 = 192 columns per rank, not a multiple of the 128-wide FP8 scale block"),
            std::string::npos)
      << out;
  EXPECT_NE(launch("run --dry-run " + (dir / "pro-tp16.yaml").string(), &out), 0);
  // A budget below the weights: printed, then refused.
  std::string text = read(tiny_deployment(dir, "{dp: 2, ep: 2}"));
  const fs::path small = dir / "small.yaml";
  text.replace(text.find("1GiB"), 4, "100MiB");
  write(small, text);
  EXPECT_NE(launch("plan " + small.string(), &out), 0);
  EXPECT_NE(out.find("DOES NOT FIT"), std::string::npos) << out;
  EXPECT_NE(out.find("(memory.budget_per_rank)"), std::string::npos) << out;
  // A typo in the YAML is named.
  write(dir / "typo.yaml", read(small) + "sheduler: {max_running: 4}\n");
  EXPECT_NE(launch("plan " + (dir / "typo.yaml").string(), &out), 0);
  EXPECT_NE(out.find("typo.yaml: sheduler: unknown key"), std::string::npos) << out;
}

TEST(LaunchCli, ShippedPlansFit) {
  std::string out;
  for (const char* name : {"tiny-cpu", "flash-8xh100", "pro-16x8xh100"}) {
    EXPECT_EQ(launch("plan " + src(std::string("configs/deployments/") + name + ".yaml"), &out), 0) << out;
    EXPECT_NE(out.find("FITS"), std::string::npos) << out;
  }
  ASSERT_EQ(launch("plan --json " + src("configs/deployments/pro-16x8xh100.yaml"), &out), 0) << out;
  const auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["ownership"]["experts_per_rank"], 3);
  EXPECT_EQ(j["ownership"]["heads_per_tp_rank"], 16);
  EXPECT_EQ(j["ownership"]["o_groups_per_tp_rank"], 2);
  EXPECT_EQ(j["ownership"]["shared_ffn_columns_per_tp_rank"], 384);
  EXPECT_EQ(j["ownership"]["vocab_rows_per_tp_rank"], 16160);
  EXPECT_DOUBLE_EQ(j["state"]["bytes_per_token"].get<double>(), 5511.4375);  // spec §5.3: 5511.44 B
}

TEST(LaunchCli, MpirunLines) {
  std::string out;
  ASSERT_EQ(launch("run --dry-run --server-bin dsv4-server " + src("configs/deployments/tiny-cpu.yaml"), &out,
                   "LD_LIBRARY_PATH=/opt/lib"),
            0)
      << out;
  EXPECT_EQ(out,
            "mpirun -np 4 --map-by ppr:4:node --bind-to none --oversubscribe -x DSV4_LOG_LEVEL=info -x PATH "
            "-x LD_LIBRARY_PATH dsv4-server --deployment " +
                src("configs/deployments/tiny-cpu.yaml") + "\n");
  // An unset LD_LIBRARY_PATH is not forwarded (Open MPI would warn about it).
  ASSERT_EQ(launch("run --dry-run --server-bin dsv4-server " + src("configs/deployments/tiny-cpu.yaml"), &out,
                   "-u LD_LIBRARY_PATH"),
            0)
      << out;
  EXPECT_EQ(out,
            "mpirun -np 4 --map-by ppr:4:node --bind-to none --oversubscribe -x DSV4_LOG_LEVEL=info -x PATH "
            "dsv4-server --deployment " +
                src("configs/deployments/tiny-cpu.yaml") + "\n");
  // The runtime variables set here reach every rank (table order); others (DSV4_BIN) do not.
  ASSERT_EQ(launch("run --dry-run --server-bin dsv4-server " + src("configs/deployments/tiny-cpu.yaml"), &out,
                   "-u LD_LIBRARY_PATH DSV4_PIPELINE_MIN_TOKENS=512 DSV4_DETERMINISTIC=1 DSV4_BIN=x"),
            0)
      << out;
  EXPECT_EQ(out,
            "mpirun -np 4 --map-by ppr:4:node --bind-to none --oversubscribe -x DSV4_LOG_LEVEL=info -x PATH "
            "-x DSV4_DETERMINISTIC -x DSV4_PIPELINE_MIN_TOKENS dsv4-server --deployment " +
                src("configs/deployments/tiny-cpu.yaml") + "\n");
  // 16 nodes need a hostfile.
  EXPECT_NE(launch("run --dry-run " + src("configs/deployments/pro-16x8xh100.yaml"), &out), 0);
  EXPECT_NE(out.find("deployment spans 16 nodes: give --hostfile"), std::string::npos) << out;
  const fs::path dir = testing::scratch_dir("launch_run");
  const fs::path hosts = write(dir / "hosts", "node01 slots=8\n");
  ASSERT_EQ(launch("run --dry-run --server-bin dsv4-server --hostfile " + hosts.string() + " " +
                       src("configs/deployments/pro-16x8xh100.yaml"),
                   &out, "LD_LIBRARY_PATH=/opt/lib"),
            0)
      << out;
  EXPECT_EQ(out, "mpirun -np 128 --hostfile " + hosts.string() +
                     " --map-by ppr:8:node --bind-to numa -x DSV4_LOG_LEVEL=info -x PATH -x LD_LIBRARY_PATH "
                     "dsv4-server --deployment " +
                     src("configs/deployments/pro-16x8xh100.yaml") + "\n");
}

TEST(LaunchCli, RunExecsMpirun) {
  // A stand-in mpirun first on PATH records its arguments: `run` without --dry-run must exec exactly the line.
  const fs::path dir = testing::scratch_dir("launch_exec");
  write(dir / "mpirun", "#!/bin/sh\necho \"fake-mpirun $*\"\nexit 7\n");
  fs::permissions(dir / "mpirun", fs::perms::owner_all);
  std::string out;
  const int rc2 = testing::run_command("PATH=" + dir.string() + ":$PATH " + launch_bin().string() +
                                           " run --server-bin S " + src("configs/deployments/tiny-cpu.yaml"),
                                       &out);
  EXPECT_EQ(rc2, 7) << out;  // the exit status of what was exec'd
  EXPECT_NE(out.find("fake-mpirun -np 4 --map-by ppr:4:node"), std::string::npos) << out;
  EXPECT_NE(out.find("S --deployment " + src("configs/deployments/tiny-cpu.yaml")), std::string::npos) << out;
}

TEST(LaunchCli, SbatchScripts) {
  const fs::path dir = testing::scratch_dir("launch_slurm");
  const std::string pro = src("configs/deployments/pro-16x8xh100.yaml");
  std::string out;
  ASSERT_EQ(launch("slurm --server-bin dsv4-server --log-dir " + (dir / "logs").string() + " --out " +
                       (dir / "pro.sbatch").string() + " " + pro,
                   &out),
            0)
      << out;
  const std::string logs = (dir / "logs").string();
  EXPECT_EQ(read(dir / "pro.sbatch"),
            "#!/bin/bash\n"
            "# Written by dsv4-launch slurm from " +
                pro +
                "\n"
                "#SBATCH --job-name=dsv4-pro-16x8xh100\n"
                "#SBATCH --nodes=16\n"
                "#SBATCH --ntasks-per-node=8\n"
                "#SBATCH --gpus-per-node=8\n"
                "#SBATCH --exclusive\n"
                "#SBATCH --output=" +
                logs +
                "/%x-%j.out\n"
                "#SBATCH --error=" +
                logs +
                "/%x-%j.err\n"
                "set -euo pipefail\n"
                "export DSV4_LOG_LEVEL=info\n"
                "echo \"dsv4: job $SLURM_JOB_ID on $SLURM_JOB_NUM_NODES nodes: $SLURM_JOB_NODELIST\"\n"
                "srun --mpi=pmix --kill-on-bad-exit=1 --ntasks=128 --ntasks-per-node=8 --cpu-bind=socket dsv4-server "
                "--deployment " +
                pro + "\n");
  EXPECT_TRUE(fs::is_directory(dir / "logs"));
  EXPECT_EQ(testing::run_command("bash -n " + (dir / "pro.sbatch").string(), &out), 0) << out;

  const std::string tiny = src("configs/deployments/tiny-cpu.yaml");
  ASSERT_EQ(launch("slurm --launcher mpirun --partition debug --time 00:30:00 --server-bin dsv4-server --log-dir " +
                       logs + " --out " + (dir / "tiny.sbatch").string() + " " + tiny,
                   &out),
            0)
      << out;
  EXPECT_EQ(read(dir / "tiny.sbatch"),
            "#!/bin/bash\n"
            "# Written by dsv4-launch slurm from " +
                tiny +
                "\n"
                "#SBATCH --job-name=dsv4-tiny-cpu\n"
                "#SBATCH --nodes=1\n"
                "#SBATCH --ntasks-per-node=4\n"
                "#SBATCH --exclusive\n"
                "#SBATCH --partition=debug\n"
                "#SBATCH --time=00:30:00\n"
                "#SBATCH --output=" +
                logs +
                "/%x-%j.out\n"
                "#SBATCH --error=" +
                logs +
                "/%x-%j.err\n"
                "set -euo pipefail\n"
                "export DSV4_LOG_LEVEL=info\n"
                "echo \"dsv4: job $SLURM_JOB_ID on $SLURM_JOB_NUM_NODES nodes: $SLURM_JOB_NODELIST\"\n"
                "mpirun -np 4 --map-by ppr:4:node --bind-to none -x DSV4_LOG_LEVEL -x PATH -x LD_LIBRARY_PATH "
                "dsv4-server --deployment " +
                tiny + "\n");

  // --submit hands the script to sbatch (a stand-in here).
  write(dir / "sbatch", "#!/bin/sh\necho \"Submitted batch job 42 ($1)\"\n");
  fs::permissions(dir / "sbatch", fs::perms::owner_all);
  ASSERT_EQ(
      testing::run_command("PATH=" + dir.string() + ":$PATH " + launch_bin().string() + " slurm --submit --log-dir " +
                               logs + " --out " + (dir / "t.sbatch").string() + " " + tiny,
                           &out),
      0)
      << out;
  EXPECT_NE(out.find("Submitted batch job 42 (" + (dir / "t.sbatch").string() + ")"), std::string::npos) << out;
}

// A measurement job: the step after `--` replaces the server, --step-env reaches only the ranks (through env),
// the results folder is exported, and --after runs whatever the step's status, with the step's output kept
// apart; the job ends with the step's status. Then the script is run under bash with a fake srun that prints
// its argv and fails, to see that the hook still runs and the job exits non-zero.
TEST(LaunchCli, SbatchWorkloadStep) {
  const fs::path dir = testing::scratch_dir("launch_slurm_step");
  const std::string tiny = src("configs/deployments/tiny-cpu.yaml");
  const std::string logs = (dir / "logs").string();
  const std::string results = (dir / "results").string();
  std::string out;
  ASSERT_EQ(launch("slurm --log-dir " + logs + " --results-dir " + results + " --out " + (dir / "w.sbatch").string() +
                       " --step-env LD_PRELOAD=/x/libm.so --step-env MARK=8 --after 'echo hook $DSV4_STEP_STATUS' " +
                       tiny + " -- dsv4 generate --deployment " + tiny + " --max-tokens 4",
                   &out),
            0)
      << out;
  const std::string step_log = logs + "/dsv4-tiny-cpu-\"$SLURM_JOB_ID\"";
  const std::string script = read(dir / "w.sbatch");
  const std::string tail = script.substr(script.find("set -euo pipefail\n"));
  EXPECT_EQ(tail,
            "set -euo pipefail\n"
            "export DSV4_LOG_LEVEL=info\n"
            "echo \"dsv4: job $SLURM_JOB_ID on $SLURM_JOB_NUM_NODES nodes: $SLURM_JOB_NODELIST\"\n"
            "export DSV4_RESULTS_DIR=" +
                results +
                "\n"
                "mkdir -p \"$DSV4_RESULTS_DIR\"\n"
                "export DSV4_STEP_STDOUT=" +
                step_log + ".step.out DSV4_STEP_STDERR=" + step_log +
                ".step.err\n"
                "set +e\n"
                "srun --mpi=pmix --kill-on-bad-exit=1 --ntasks=4 --ntasks-per-node=4 --cpu-bind=none env "
                "LD_PRELOAD=/x/libm.so MARK=8 dsv4 generate --deployment " +
                tiny +
                " --max-tokens 4 >\"$DSV4_STEP_STDOUT\" 2>\"$DSV4_STEP_STDERR\"\n"
                "export DSV4_STEP_STATUS=$?\n"
                "set -e\n"
                "echo \"dsv4: step exited with status $DSV4_STEP_STATUS (output: $DSV4_STEP_STDOUT, "
                "$DSV4_STEP_STDERR)\"\n"
                "echo hook $DSV4_STEP_STATUS\n"
                "exit \"$DSV4_STEP_STATUS\"\n")
      << script;
  EXPECT_TRUE(fs::is_directory(results));

  // Run it: a stand-in srun records its arguments and exits 3; the hook still runs; the job exits 3.
  write(dir / "srun", "#!/bin/sh\necho \"srun $*\"\necho rank-error >&2\nexit 3\n");
  fs::permissions(dir / "srun", fs::perms::owner_all);
  const int rc = testing::run_command("PATH=" + dir.string() +
                                          ":$PATH SLURM_JOB_ID=77 SLURM_JOB_NUM_NODES=1 "
                                          "SLURM_JOB_NODELIST=n1 bash " +
                                          (dir / "w.sbatch").string(),
                                      &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("hook 3"), std::string::npos) << out;
  EXPECT_EQ(read(logs + "/dsv4-tiny-cpu-77.step.err"), "rank-error\n");
  EXPECT_NE(read(logs + "/dsv4-tiny-cpu-77.step.out").find("env LD_PRELOAD=/x/libm.so MARK=8 dsv4 generate"),
            std::string::npos);

  // Malformed hooks are refused with the option's name.
  EXPECT_NE(launch("slurm --out " + (dir / "x.sbatch").string() + " --step-env 1X=2 " + tiny, &out), 0);
  EXPECT_NE(out.find("--step-env '1X=2': expected NAME=VALUE"), std::string::npos) << out;
  EXPECT_NE(launch("slurm --out " + (dir / "x.sbatch").string() + " --step-env NOVALUE " + tiny, &out), 0);
  EXPECT_NE(out.find("--step-env 'NOVALUE'"), std::string::npos) << out;
  EXPECT_NE(launch("slurm --out " + (dir / "x.sbatch").string() + " --after \"$(printf 'a\\nb')\" " + tiny, &out), 0);
  EXPECT_NE(out.find("--after must be one line"), std::string::npos) << out;
}

}  // namespace
}  // namespace dsv4
