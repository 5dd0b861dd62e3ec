// DSV4 chat rendering and output parsing against the official renderer's own results
// (tests/golden/tokenizer/chat_golden.json, made by scripts/reference/chat_golden.py).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/core/error.h"
#include "runtime/tokenizer/chat_encoding.h"
#include "tests/support/test_paths.h"

namespace dsv4 {
namespace {

using ojson = nlohmann::ordered_json;

const ojson& golden() {
  static const ojson doc = [] {
    std::ifstream in(testing::source_dir() / "tests" / "golden" / "tokenizer" / "chat_golden.json");
    return ojson::parse(in);
  }();
  return doc;
}

ThinkingMode mode_of(const std::string& s) {
  return s == "none" ? ThinkingMode::kNone : s == "high" ? ThinkingMode::kHigh : ThinkingMode::kMax;
}

TEST(ChatEncoding, MatchesOfficialRenderer) {
  ASSERT_GE(golden()["renders"].size(), 40u);
  for (const ojson& r : golden()["renders"]) {
    const std::string name = r["name"].get<std::string>() + "/" + r["mode"].get<std::string>();
    const ChatRequest request = chat_request_from_json(r["request"].dump(), name);
    EXPECT_EQ(render_chat_prompt(request, mode_of(r["mode"])), r["prompt"].get<std::string>()) << name;
  }
}

TEST(ChatEncoding, ModesOpenTheAssistantAsTheSpecSays) {
  const ChatRequest request = chat_request_from_json(R"([{"role": "user", "content": "Hi"}])", "test");
  const std::string bos = "<｜begin▁of▁sentence｜>";
  EXPECT_EQ(render_chat_prompt(request, ThinkingMode::kNone), bos + "<｜User｜>Hi<｜Assistant｜></think>");
  EXPECT_EQ(render_chat_prompt(request, ThinkingMode::kHigh), bos + "<｜User｜>Hi<｜Assistant｜><think>");
  const std::string max = render_chat_prompt(request, ThinkingMode::kMax);
  EXPECT_TRUE(max.starts_with(bos + "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"));
  EXPECT_TRUE(max.ends_with(".\n\n<｜User｜>Hi<｜Assistant｜><think>"));
}

TEST(ChatEncoding, RejectsBadRequests) {
  auto code_of = [](const std::string& json) {
    try {
      render_chat_prompt(chat_request_from_json(json, "req.json"), ThinkingMode::kNone);
    } catch (const Error& e) {
      EXPECT_NE(e.message().find("req.json"), std::string::npos) << e.message();
      return e.code();
    }
    return ErrorCode::kInternal;
  };
  EXPECT_EQ(code_of("{"), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of("[]"), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of(R"([{"role": "robot", "content": "x"}])"), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of(R"([{"content": "x"}])"), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of(R"([{"role": "user", "content": 5}])"), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of(R"([{"role": "assistant", "tool_calls": [{"function": {}}]}])"), ErrorCode::kInvalidArgument);
  EXPECT_THROW(render_chat_prompt(chat_request_from_json(R"([{"role": "developer", "content": ""}])", "d"),
                                  ThinkingMode::kNone),
               Error);
}

TEST(ChatEncoding, PythonJsonDumps) {
  EXPECT_EQ(python_json_dumps(R"({"b":1,"a":[true,null,"x\ny",{"é":"\u0001"}],"f":1.5})"),
            "{\"b\": 1, \"a\": [true, null, \"x\\ny\", {\"é\": \"\\u0001\"}], \"f\": 1.5}");
  EXPECT_EQ(python_json_dumps("[]"), "[]");
  EXPECT_EQ(python_json_dumps("{}"), "{}");
}

void expect_parsed(const ParsedChatOutput& got, const ojson& want, const std::string& what) {
  EXPECT_EQ(got.reasoning, want["reasoning"].get<std::string>()) << what;
  EXPECT_EQ(got.content, want["content"].get<std::string>()) << what;
  ASSERT_EQ(got.tool_calls.size(), want["tool_calls"].size()) << what;
  for (size_t i = 0; i < got.tool_calls.size(); ++i) {
    EXPECT_EQ(got.tool_calls[i].name, want["tool_calls"][i]["name"].get<std::string>()) << what;
    EXPECT_EQ(got.tool_calls[i].arguments, want["tool_calls"][i]["arguments"].get<std::string>()) << what;
  }
}

// Feeds `text` in the given pieces and collects the events.
ParsedChatOutput stream(bool thinking, const std::vector<std::string_view>& pieces) {
  ChatOutputParser parser(thinking);
  ParsedChatOutput out;
  auto take = [&](const std::vector<ChatOutputEvent>& events) {
    for (const ChatOutputEvent& e : events) {
      if (e.kind == ChatOutputEvent::Kind::kReasoning) out.reasoning += e.text;
      if (e.kind == ChatOutputEvent::Kind::kContent) out.content += e.text;
      if (e.kind == ChatOutputEvent::Kind::kToolCall) out.tool_calls.push_back(e.tool_call);
    }
  };
  for (std::string_view p : pieces) take(parser.feed(p));
  out.saw_eos = parser.saw_eos();
  take(parser.finish());
  return out;
}

TEST(ChatOutputParser, MatchesOfficialParser) {
  for (const ojson& p : golden()["parses"]) {
    const std::string text = p["text"];
    expect_parsed(parse_chat_output(text, p["thinking"]), p, text);
    EXPECT_TRUE(parse_chat_output(text, p["thinking"]).saw_eos);
  }
}

TEST(ChatOutputParser, EverySplitPointGivesTheSameResult) {
  for (const ojson& p : golden()["parses"]) {
    const std::string text = p["text"];
    const std::string_view v = text;
    for (size_t cut = 0; cut <= text.size(); ++cut) {
      expect_parsed(stream(p["thinking"], {v.substr(0, cut), v.substr(cut)}), p, "cut " + std::to_string(cut));
    }
    std::vector<std::string_view> bytes;
    for (size_t i = 0; i < text.size(); ++i) bytes.push_back(v.substr(i, 1));
    expect_parsed(stream(p["thinking"], bytes), p, "byte by byte");
  }
}

TEST(ChatOutputParser, HoldsBackPartialMarkersUntilTheyResolve) {
  ChatOutputParser parser(/*thinking=*/false);
  std::vector<ChatOutputEvent> e = parser.feed("Hello\n\n<｜DS");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].text, "Hello");
  e = parser.feed("ML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"true\">v");
  EXPECT_TRUE(e.empty());
  e = parser.feed("</｜DSML｜parameter>\n</｜DSML｜invoke>\n");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].kind, ChatOutputEvent::Kind::kToolCall);
  EXPECT_EQ(e[0].tool_call.name, "f");
  EXPECT_EQ(e[0].tool_call.arguments, "{\"a\": \"v\"}");
  EXPECT_TRUE(parser.feed("</｜DSML｜tool_calls><｜end▁of▁sentence｜>").empty());
  EXPECT_TRUE(parser.saw_eos());

  // A marker prefix that turns out to be text is released.
  ChatOutputParser plain(false);
  e = plain.feed("a\n\n<｜DS");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].text, "a");
  e = plain.feed("X");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].text, "\n\n<｜DSX");

  // Reasoning holds back a partial </think>; a truncated output flushes it at finish().
  ChatOutputParser thinking(true);
  e = thinking.feed("hmm </thi");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].text, "hmm ");
  e = thinking.finish();
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].kind, ChatOutputEvent::Kind::kReasoning);
  EXPECT_EQ(e[0].text, "</thi");
}

TEST(ChatOutputParser, MalformedToolCallsAreErrors) {
  const std::string head = "\n\n<｜DSML｜tool_calls>\n";
  EXPECT_THROW(parse_chat_output(head + "<｜DSML｜invoke nam=\"f\">\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>", false), Error);
  EXPECT_THROW(parse_chat_output(head + "<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"maybe\">1<"
                                        "/｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>", false),
               Error);
  EXPECT_THROW(parse_chat_output(head + "<｜DSML｜invoke name=\"f\">\n", false), Error);  // unterminated
  EXPECT_THROW(parse_chat_output(head + "</｜DSML｜tool_calls>trailing", false), Error);
  try {
    parse_chat_output("\n\n<｜DSML｜tool_calls>oops<｜DSML｜invoke", false);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace dsv4
