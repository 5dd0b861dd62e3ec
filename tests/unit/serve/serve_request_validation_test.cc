// Invalid UTF-8 in requests: the byte offset (utf8_invalid_offset) and the field path that
// describe_parse_failure finds by walking the wire format of a message protobuf refused to parse.
#include <gtest/gtest.h>

#include <string>

#include "dsv4/v1/inference.pb.h"
#include "runtime/core/error.h"
#include "runtime/serve/request_validation.h"

namespace dsv4::serve {
namespace {

constexpr size_t kValid = std::string_view::npos;

TEST(ServeRequestValidation, Utf8InvalidOffsetFindsTheFirstBadSequence) {
  EXPECT_EQ(utf8_invalid_offset(""), kValid);
  EXPECT_EQ(utf8_invalid_offset("plain ascii"), kValid);
  EXPECT_EQ(utf8_invalid_offset("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf"), kValid);
  EXPECT_EQ(utf8_invalid_offset("caf\xc3"), 3u);                       // truncated 2-byte sequence at the end
  EXPECT_EQ(utf8_invalid_offset("ab\xe2\x82z"), 2u);                   // truncated 3-byte sequence mid-text
  EXPECT_EQ(utf8_invalid_offset("x\x80"), 1u);                         // lone continuation byte
  EXPECT_EQ(utf8_invalid_offset("\xc0\xaf"), 0u);                      // overlong '/'
  EXPECT_EQ(utf8_invalid_offset("ok\xe0\x80\xaf"), 2u);                // overlong 3-byte form
  EXPECT_EQ(utf8_invalid_offset("\xed\xa0\x80"), 0u);                  // surrogate U+D800
  EXPECT_EQ(utf8_invalid_offset("\xf4\x90\x80\x80"), 0u);              // above U+10FFFF
  EXPECT_EQ(utf8_invalid_offset("\xf0\x9f\x98\x80\xff"), 4u);          // 0xff never appears in UTF-8
  EXPECT_EQ(utf8_invalid_offset(std::string("a\0b\xc3", 4)), 3u);      // NUL is valid
}

// Serializes `message` with one string made invalid after the fact (C++ protobuf only logs on serialize).
std::string wire(const google::protobuf::Message& message) {
  std::string bytes;
  EXPECT_TRUE(message.SerializeToString(&bytes));
  return bytes;
}

TEST(ServeRequestValidation, ParseFailureNamesTheFieldAndTheByte) {
  v1::GenerateRequest g;
  g.set_request_id("r1");
  auto* chat = g.mutable_chat();
  chat->add_messages()->set_content("first");
  auto* m = chat->add_messages();
  m->set_content("fine");
  auto* call = m->add_tool_calls();
  call->set_name("lookup");
  call->set_arguments_json("{\"q\": \"\xe2\x28\xa1\"}");
  g.set_max_tokens(4);
  const std::string bytes = wire(g);
  v1::GenerateRequest parsed;
  ASSERT_FALSE(parsed.ParseFromString(bytes)) << "proto3 parse is expected to refuse invalid UTF-8";
  EXPECT_EQ(describe_parse_failure(*v1::GenerateRequest::descriptor(), bytes),
            "chat.messages[1].tool_calls[0].arguments_json is not valid UTF-8: byte 7 (0xe2) does not start a "
            "complete sequence");

  v1::GenerateRequest tools;
  tools.mutable_chat()->add_messages()->set_content("hi");
  tools.mutable_chat()->add_tools()->set_name("a");
  tools.mutable_chat()->add_tools()->set_description(std::string("\x80", 1));
  EXPECT_EQ(describe_parse_failure(*v1::GenerateRequest::descriptor(), wire(tools)),
            "chat.tools[1].description is not valid UTF-8: byte 0 (0x80) does not start a complete sequence");

  v1::TokenizeRequest t;
  t.set_text(std::string("Hello \xff", 7));
  EXPECT_EQ(describe_parse_failure(*v1::TokenizeRequest::descriptor(), wire(t)),
            "text is not valid UTF-8: byte 6 (0xff) does not start a complete sequence");
}

TEST(ServeRequestValidation, MalformedBytesAreReportedAsSuch) {
  // A length prefix that runs past the end, and a field 2 (chat) whose payload is not a message.
  for (const std::string& bytes : {std::string("\x0a\x10" "abc", 5), std::string("\x12\x03\xff\xff\xff", 5)}) {
    EXPECT_EQ(describe_parse_failure(*v1::TokenizeRequest::descriptor(), bytes),
              "the request is not a valid dsv4.v1.TokenizeRequest (malformed protobuf)");
  }
  // Packed token ids (length-delimited but not a string) are skipped, not mistaken for text.
  v1::GenerateRequest g;
  g.mutable_tokens()->add_token_ids(0xC3);
  g.mutable_tokens()->add_token_ids(0xFF);
  g.add_stop(std::string("\xc3", 1));
  EXPECT_EQ(describe_parse_failure(*v1::GenerateRequest::descriptor(), wire(g)),
            "stop[0] is not valid UTF-8: byte 0 (0xc3) does not start a complete sequence");
}

TEST(ServeRequestValidation, ValidatedStringsNameTheOffsetToo) {
  // chat_from_proto checks strings of messages that were built in process (no parse involved).
  v1::ChatPrompt chat;
  auto* m = chat.add_messages();
  m->set_role(v1::ROLE_USER);
  m->set_content(std::string("abc\xc3", 4));
  try {
    chat_from_proto(chat);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("chat.messages[0].content is not valid UTF-8: byte 3 (0xc3)"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace dsv4::serve
