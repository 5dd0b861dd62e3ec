// `dsv4 forward` end to end on a small random checkpoint made by `dsv4 make-checkpoint`: output layout,
// chunked prefill giving the same bytes, and a clear error + non-zero exit for each kind of bad input.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/test_paths.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;
using testing::dsv4_bin;
using testing::read_file;
using testing::run_command;

// A checkpoint dir holding `config` and a link to the shared weights file.
fs::path with_config(const fs::path& base, const fs::path& weights_dir, const nlohmann::json& config) {
  fs::create_directories(base);
  std::ofstream(base / "config.json") << config.dump(2);
  fs::create_symlink(weights_dir / "model.safetensors", base / "model.safetensors");
  return base;
}

class ForwardCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = testing::scratch_dir("model_cli");
    config_ = nlohmann::json::parse(read_file(testing::source_dir() / "configs/models/tiny.json"));
    config_["vocab_size"] = 1024;
    std::ofstream(dir_ / "tiny_config.json") << config_.dump(2);
    std::string out;
    const int rc = run_command(dsv4_bin().string() + " make-checkpoint --config " + (dir_ / "tiny_config.json").string() +
                                   " --seed 5 --out " + (dir_ / "ckpt").string(),
                               &out);
    ASSERT_EQ(rc, 0) << out;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static int forward(const fs::path& ckpt, const std::string& tokens, const std::string& extra, std::string* out,
                     const std::string& logits = "logits.bin") {
    return run_command(dsv4_bin().string() + " forward --checkpoint " + ckpt.string() + " --tokens '" + tokens +
                           "' --logits-out " + (dir_ / logits).string() + " " + extra,
                       out);
  }

  static fs::path dir_;
  static nlohmann::json config_;
};
fs::path ForwardCli::dir_;
nlohmann::json ForwardCli::config_;

TEST_F(ForwardCli, WritesLogitsAndChunkingKeepsThem) {
  std::string out;
  const std::string tokens = "0,17,300,5,5,1023,42,7,9,11,13,2,3,4,5,6,7,8,9,10";
  ASSERT_EQ(forward(dir_ / "ckpt", tokens, "--numerics plain", &out), 0) << out;
  const std::string whole = read_file(dir_ / "logits.bin");
  EXPECT_EQ(whole.size(), 20u * 1024u * sizeof(float));
  ASSERT_EQ(forward(dir_ / "ckpt", tokens, "--numerics plain --chunk 3", &out, "chunked.bin"), 0) << out;
  EXPECT_TRUE(read_file(dir_ / "chunked.bin") == whole) << "chunked prefill changed the logits";
  // One kernel thread instead of the default: the same bytes (results do not depend on the split).
  ASSERT_EQ(run_command("DSV4_NUM_THREADS=1 " + dsv4_bin().string() + " forward --checkpoint " +
                            (dir_ / "ckpt").string() + " --tokens '" + tokens + "' --numerics plain --chunk 5" +
                            " --logits-out " + (dir_ / "one_thread.bin").string(),
                        &out),
            0)
      << out;
  EXPECT_TRUE(read_file(dir_ / "one_thread.bin") == whole) << "thread count changed the logits";
  ASSERT_EQ(forward(dir_ / "ckpt", tokens, "--numerics reference", &out, "ref.bin"), 0) << out;
  const std::string ref = read_file(dir_ / "ref.bin");
  ASSERT_EQ(ref.size(), whole.size());
  EXPECT_FALSE(ref == whole) << "reference numerics should differ from plain";
}

TEST_F(ForwardCli, RejectsBadInput) {
  std::string out;
  EXPECT_NE(forward(dir_ / "ckpt", "1,1024", "", &out), 0);
  EXPECT_NE(out.find("outside the vocabulary"), std::string::npos) << out;
  EXPECT_NE(forward(dir_ / "ckpt", "1,-3", "", &out), 0);
  EXPECT_NE(out.find("outside the vocabulary"), std::string::npos) << out;
  EXPECT_NE(forward(dir_ / "ckpt", "", "", &out), 0);
  EXPECT_NE(out.find("empty prompt"), std::string::npos) << out;
  EXPECT_NE(forward(dir_ / "ckpt", "1,x", "", &out), 0);
  EXPECT_NE(out.find("not an integer"), std::string::npos) << out;
  EXPECT_NE(forward(dir_ / "ckpt", "1,2", "--numerics fast", &out), 0);
  EXPECT_NE(out.find("plain|reference"), std::string::npos) << out;

  nlohmann::json short_ctx = config_;
  short_ctx["max_position_embeddings"] = 4;
  const fs::path c1 = with_config(dir_ / "short", dir_ / "ckpt", short_ctx);
  EXPECT_NE(forward(c1, "1,2,3,4,5", "", &out), 0);
  EXPECT_NE(out.find("max_position_embeddings"), std::string::npos) << out;
  EXPECT_EQ(forward(c1, "1,2,3,4", "", &out), 0) << out;

  nlohmann::json wider = config_;  // the weights were made for hidden 256
  wider["hidden_size"] = 512;
  EXPECT_NE(forward(with_config(dir_ / "wider", dir_ / "ckpt", wider), "1,2", "", &out), 0);
  EXPECT_NE(out.find("does not match its config"), std::string::npos) << out;

  nlohmann::json fewer = config_;  // one layer less than the files hold: binding alone would not notice
  fewer["num_hidden_layers"] = 4;
  fewer["compress_ratios"] = nlohmann::json::array({0, 4, 128, 4, 0});
  EXPECT_NE(forward(with_config(dir_ / "fewer", dir_ / "ckpt", fewer), "1,2", "", &out), 0);
  EXPECT_NE(out.find("does not match its config"), std::string::npos) << out;
}

}  // namespace
}  // namespace dsv4
