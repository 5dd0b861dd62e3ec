// Token ids against the Rust `tokenizers` oracle (tests/golden/tokenizer/*.json, made by
// scripts/reference/tokenizer_golden.py) on the real DeepSeek tokenizer, plus round trips.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "runtime/core/error.h"
#include "runtime/tokenizer/bpe.h"
#include "runtime/tokenizer/chat_encoding.h"
#include "runtime/tokenizer/dsv4_tokenizer.h"
#include "tests/support/test_paths.h"

namespace dsv4 {
namespace {

std::filesystem::path v3_file() { return testing::shared_dir() / "data" / "deepseek-v3-tokenizer" / "tokenizer.json"; }

const BpeTokenizer& v3() {
  static const BpeTokenizer tok = BpeTokenizer::from_file(v3_file());
  return tok;
}
const BpeTokenizer& v4() {
  static const BpeTokenizer tok = load_dsv4_tokenizer(v3_file());
  return tok;
}

struct Case {
  std::string text;
  std::vector<TokenId> ids;
};

std::vector<Case> load_golden(const std::string& name) {
  std::ifstream in(testing::source_dir() / "tests" / "golden" / "tokenizer" / name);
  EXPECT_TRUE(in.good()) << name;
  const nlohmann::json doc = nlohmann::json::parse(in);
  std::vector<Case> cases;
  for (const auto& c : doc.at("cases")) cases.push_back({c.at("text").get<std::string>(), c.at("ids").get<std::vector<TokenId>>()});
  EXPECT_GT(cases.size(), 150u);
  return cases;
}

void expect_golden(const BpeTokenizer& tok, const std::vector<Case>& cases) {
  for (const Case& c : cases) {
    EXPECT_EQ(tok.encode(c.text), c.ids) << "text: " << c.text;
  }
}

TEST(TokenizerGolden, V3FileMatchesTokenizersLibrary) { expect_golden(v3(), load_golden("v3_golden.json")); }

// The real V4 tokenizer.json is not in the repository; V3 + the V4 specials table must give its ids.
TEST(TokenizerGolden, V3PlusV4SpecialsMatchesRealV4File) { expect_golden(v4(), load_golden("v4_golden.json")); }

TEST(TokenizerGolden, DecodeInvertsEncode) {
  for (const Case& c : load_golden("v4_golden.json")) {
    EXPECT_EQ(v4().decode(c.ids), c.text);
    EXPECT_EQ(v4().decode_bytes(c.ids), c.text);
  }
}

// Streaming the ids one by one gives exactly the text, and every intermediate output is valid UTF-8 and a
// prefix of the text (nothing is emitted that a later token would change).
TEST(TokenizerGolden, IncrementalDetokenizerOverEverySplitPoint) {
  size_t held_back = 0;
  for (const Case& c : load_golden("v4_golden.json")) {
    IncrementalDetokenizer detok(v4());
    std::string streamed;
    for (TokenId id : c.ids) {
      const std::string piece = detok.push(id);
      EXPECT_TRUE(utf8_is_valid(piece));
      streamed += piece;
      ASSERT_EQ(c.text.compare(0, streamed.size(), streamed), 0) << c.text;
      if (detok.pending_bytes() > 0) ++held_back;
    }
    streamed += detok.finish();
    EXPECT_EQ(streamed, c.text);
  }
  EXPECT_GT(held_back, 0u) << "the corpus should contain characters split across tokens";
}

TEST(TokenizerGolden, V4SpecialTokens) {
  const BpeTokenizer& tok = v4();
  EXPECT_EQ(tok.vocab_size(), 129280);
  EXPECT_EQ(tok.token_to_id("<｜begin▁of▁sentence｜>"), 0);
  EXPECT_EQ(tok.token_to_id("<｜end▁of▁sentence｜>"), 1);
  EXPECT_EQ(tok.token_to_id("<｜User｜>"), dsv4_tokens::kUser);
  EXPECT_EQ(tok.token_to_id("<｜Assistant｜>"), dsv4_tokens::kAssistant);
  EXPECT_EQ(tok.token_to_id("<think>"), dsv4_tokens::kThinkBegin);
  EXPECT_EQ(tok.token_to_id("</think>"), dsv4_tokens::kThinkEnd);
  EXPECT_EQ(tok.token_to_id("｜DSML｜"), dsv4_tokens::kDsml);
  EXPECT_EQ(tok.token_to_id("<｜latest_reminder｜>"), dsv4_tokens::kLatestReminder);
  EXPECT_EQ(tok.token_to_id("<｜read_url｜>"), 128845);
  EXPECT_EQ(tok.token_to_id("<｜image｜>"), 129279);
  // Special tokens are text when parsing them is off.
  const std::vector<TokenId> as_text = tok.encode("<think>", /*parse_added_tokens=*/false);
  EXPECT_GT(as_text.size(), 1u);
  EXPECT_EQ(tok.decode(as_text), "<think>");
  EXPECT_EQ(tok.decode(std::vector<TokenId>{dsv4_tokens::kThinkBegin, dsv4_tokens::kDsml}), "<think>｜DSML｜");
  EXPECT_THROW(tok.decode(std::vector<TokenId>{129280}), Error);
  EXPECT_THROW(tok.decode(std::vector<TokenId>{-1}), Error);
  // The V3 file alone lacks them.
  EXPECT_FALSE(v3().token_to_id("<think>").has_value());
}

TEST(TokenizerGolden, ConcurrentEncodesAgree) {
  const std::vector<Case> cases = load_golden("v4_golden.json");
  std::vector<std::thread> threads;
  std::vector<size_t> mismatches(4, 0);
  for (size_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < cases.size() * 3; i += 4) {
        const Case& c = cases[i % cases.size()];
        if (v4().encode(c.text) != c.ids) ++mismatches[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<size_t>(4, 0));
}

// Model output as the engine sees it: ids -> incremental detokenizer -> streaming output parser.
TEST(TokenizerGolden, TokenStreamThroughDetokenizerAndChatParser) {
  const std::string output =
      "Weather needed 天気.</think>Let me check.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"
      "<｜DSML｜parameter name=\"city\" string=\"true\">東京 😀</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
      "</｜DSML｜tool_calls><｜end▁of▁sentence｜>";
  const std::vector<TokenId> ids = v4().encode(output);
  EXPECT_EQ(ids.back(), dsv4_tokens::kEos);
  IncrementalDetokenizer detok(v4());
  ChatOutputParser parser(/*thinking=*/true);
  ParsedChatOutput got;
  for (TokenId id : ids) {
    for (const ChatOutputEvent& e : parser.feed(detok.push(id))) {
      if (e.kind == ChatOutputEvent::Kind::kReasoning) got.reasoning += e.text;
      if (e.kind == ChatOutputEvent::Kind::kContent) got.content += e.text;
      if (e.kind == ChatOutputEvent::Kind::kToolCall) got.tool_calls.push_back(e.tool_call);
    }
  }
  EXPECT_TRUE(parser.saw_eos());
  EXPECT_EQ(got.reasoning, "Weather needed 天気.");
  EXPECT_EQ(got.content, "Let me check.");
  ASSERT_EQ(got.tool_calls.size(), 1u);
  EXPECT_EQ(got.tool_calls[0].name, "get_weather");
  EXPECT_EQ(got.tool_calls[0].arguments, "{\"city\": \"東京 😀\"}");
}

TEST(TokenizerGolden, EncodeIsFastOnLongText) {
  std::string text;
  for (const Case& c : load_golden("v3_golden.json")) text += c.text + "\n";
  while (text.size() < (1u << 20)) text += text;
  v3().encode("warm up");
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<TokenId> ids = v3().encode(text);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(v3().decode(ids), text);
  // Loose bound (shared CI cores, sanitizers): 1 MiB must encode well within a few seconds.
  EXPECT_LT(s, 5.0) << text.size() << " bytes took " << s << " s";
}

}  // namespace
}  // namespace dsv4
