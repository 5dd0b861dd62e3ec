// The `dsv4 tokenize` and `dsv4 chat-template` contracts (issue 3 "CLI contracts").
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/support/test_paths.h"

namespace dsv4 {
namespace {

std::string v3_file() {
  return (testing::shared_dir() / "data" / "deepseek-v3-tokenizer" / "tokenizer.json").string();
}

std::string write(const std::filesystem::path& dir, const std::string& name, const std::string& text) {
  const auto path = dir / name;
  std::ofstream(path, std::ios::binary) << text;
  return path.string();
}

std::string run_ok(const std::string& args) {
  std::string out;
  const int rc = testing::run_command(testing::dsv4_bin().string() + " " + args + " 2>/dev/null", &out);
  EXPECT_EQ(rc, 0) << args << "\n" << out;
  return out;
}

TEST(TokenizerCli, TokenizePrintsTheGoldenIds) {
  std::ifstream in(testing::source_dir() / "tests" / "golden" / "tokenizer" / "v4_golden.json");
  const nlohmann::json golden = nlohmann::json::parse(in);
  const auto dir = testing::scratch_dir("tokenizer_cli");
  for (size_t i : {1u, 51u}) {  // CJK and digits; special tokens
    const auto& c = golden["cases"][i];
    const std::string input = write(dir, "in.txt", c["text"].get<std::string>());
    const std::string out = run_ok("tokenize --dsv4 --tokenizer " + v3_file() + " --input " + input);
    EXPECT_EQ(nlohmann::json::parse(out), c["ids"]) << c["text"];
    // --decode turns the ids back into the text.
    const std::string ids = write(dir, "ids.json", out);
    EXPECT_EQ(run_ok("tokenize --dsv4 --tokenizer " + v3_file() + " --decode --input " + ids), c["text"].get<std::string>());
  }
  EXPECT_EQ(run_ok("tokenize --tokenizer " + v3_file() + " --text 'Hello world'"), "[19923,2058]\n");
}

TEST(TokenizerCli, ChatTemplatePrintsPromptAndIds) {
  const auto dir = testing::scratch_dir("tokenizer_cli_chat");
  const std::string messages = write(dir, "m.json", R"([{"role": "user", "content": "Hi"}])");
  EXPECT_EQ(run_ok("chat-template --messages " + messages),
            "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜></think>");
  EXPECT_EQ(run_ok("chat-template --thinking high --messages " + messages),
            "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜><think>");
  EXPECT_EQ(run_ok("chat-template --ids --tokenizer " + v3_file() + " --messages " + messages),
            "[0,128803,23166,128804,128822]\n");
}

TEST(TokenizerCli, BadInvocationsFail) {
  std::string out;
  const std::string bin = testing::dsv4_bin().string();
  EXPECT_NE(testing::run_command(bin + " tokenize --tokenizer /nonexistent.json --text x", &out), 0);
  EXPECT_NE(out.find("cannot open tokenizer file"), std::string::npos) << out;
  EXPECT_NE(testing::run_command(bin + " tokenize --tokenizer " + v3_file(), &out), 0);
  EXPECT_NE(testing::run_command(bin + " tokenize --tokenizer " + v3_file() + " --decode --text 1,x", &out), 0);
  EXPECT_NE(testing::run_command(bin + " tokenize --tokenizer " + v3_file() + " --decode --text 999999", &out), 0);
  EXPECT_NE(testing::run_command(bin + " chat-template --messages /nonexistent.json", &out), 0);
}

}  // namespace
}  // namespace dsv4
