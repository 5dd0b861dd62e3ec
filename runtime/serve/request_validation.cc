#include "runtime/serve/request_validation.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "runtime/core/error.h"

namespace dsv4::serve {
namespace {

using ojson = nlohmann::ordered_json;

// "byte 3 (0xc3) does not start a complete sequence": where and what, for a client that must fix its encoder.
std::string describe_utf8_error(std::string_view text, size_t offset) {
  char hex[8];
  std::snprintf(hex, sizeof(hex), "0x%02x", static_cast<unsigned>(static_cast<uint8_t>(text[offset])));
  return "byte " + std::to_string(offset) + " (" + hex + ") does not start a complete sequence";
}

void check_utf8(const std::string& text, const std::string& field) {
  const size_t bad = utf8_invalid_offset(text);
  DSV4_CHECK_ARG(bad == std::string_view::npos) << field << " is not valid UTF-8: " << describe_utf8_error(text, bad);
}

namespace pb = google::protobuf;
using pb::internal::WireFormatLite;

// The first string field of `type` (at any depth) in `wire` that is not valid UTF-8, described with its path and
// byte offset; nullopt when there is none or when the bytes stop being parseable (the caller then reports
// malformed protobuf).
std::optional<std::string> first_invalid_string(const pb::Descriptor& type, std::string_view wire,
                                                const std::string& prefix, int depth) {
  if (depth > 32) return std::nullopt;  // deeper than any message of ours: malformed or hostile
  pb::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(wire.data()), static_cast<int>(wire.size()));
  std::map<int, int> seen;  // field number -> occurrences so far (the index of a repeated element)
  while (true) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) return std::nullopt;
    const int number = static_cast<int>(WireFormatLite::GetTagFieldNumber(tag));
    const pb::FieldDescriptor* field = type.FindFieldByNumber(number);
    const bool delimited = WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
    const bool text = field != nullptr && field->type() == pb::FieldDescriptor::TYPE_STRING;
    const bool nested = field != nullptr && field->type() == pb::FieldDescriptor::TYPE_MESSAGE;
    if (!delimited || (!text && !nested)) {
      if (!WireFormatLite::SkipField(&in, tag)) return std::nullopt;
      continue;
    }
    uint32_t size = 0;
    std::string payload;
    if (!in.ReadVarint32(&size) || !in.ReadString(&payload, static_cast<int>(size))) return std::nullopt;
    const int index = seen[number]++;
    std::string path = prefix + field->name();
    if (field->is_repeated()) path += "[" + std::to_string(index) + "]";
    if (text) {
      const size_t bad = utf8_invalid_offset(payload);
      if (bad != std::string_view::npos) return path + " is not valid UTF-8: " + describe_utf8_error(payload, bad);
    } else if (auto inner = first_invalid_string(*field->message_type(), payload, path + ".", depth + 1)) {
      return inner;
    }
  }
}

std::string role_name(v1::Role role, const std::string& where) {
  switch (role) {
    case v1::ROLE_SYSTEM: return "system";
    case v1::ROLE_USER: return "user";
    case v1::ROLE_ASSISTANT: return "assistant";
    case v1::ROLE_TOOL: return "tool";
    case v1::ROLE_DEVELOPER: return "developer";
    default: break;
  }
  DSV4_THROW(kInvalidArgument) << where << ".role: unknown role " << static_cast<int>(role);
}

std::string tool_schema(const v1::ToolDefinition& tool, size_t index) {
  const std::string where = "chat.tools[" + std::to_string(index) + "]";
  DSV4_CHECK_ARG(!tool.name().empty()) << where << ".name is empty";
  check_utf8(tool.name(), where + ".name");
  check_utf8(tool.description(), where + ".description");
  check_utf8(tool.parameters_json_schema(), where + ".parameters_json_schema");
  ojson fn = ojson::object();
  fn["name"] = tool.name();
  if (!tool.description().empty()) fn["description"] = tool.description();
  if (!tool.parameters_json_schema().empty()) {
    ojson schema = ojson::parse(tool.parameters_json_schema(), nullptr, /*allow_exceptions=*/false);
    DSV4_CHECK_ARG(!schema.is_discarded()) << where << ".parameters_json_schema is not valid JSON";
    DSV4_CHECK_ARG(schema.is_object()) << where << ".parameters_json_schema must be a JSON object";
    fn["parameters"] = std::move(schema);
  }
  return python_json_dumps(fn.dump());
}

}  // namespace

size_t utf8_invalid_offset(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto b0 = static_cast<uint8_t>(text[i]);
    if (b0 < 0x80) {
      ++i;
      continue;
    }
    size_t need = 0;
    uint8_t lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      need = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      need = 3;
      if (b0 == 0xE0) lo = 0xA0;  // overlong
      if (b0 == 0xED) hi = 0x9F;  // surrogates
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      need = 4;
      if (b0 == 0xF0) lo = 0x90;  // overlong
      if (b0 == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return i;
    }
    if (i + need > text.size()) return i;
    for (size_t k = 1; k < need; ++k) {
      const auto b = static_cast<uint8_t>(text[i + k]);
      if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return i;
    }
    i += need;
  }
  return std::string_view::npos;
}

std::string describe_parse_failure(const google::protobuf::Descriptor& type, std::string_view wire) {
  if (auto invalid = first_invalid_string(type, wire, "", 0)) return *invalid;
  return "the request is not a valid " + type.full_name() + " (malformed protobuf)";
}

ChatRequest chat_from_proto(const v1::ChatPrompt& chat) {
  DSV4_CHECK_ARG(chat.messages_size() > 0) << "chat.messages is empty";
  ChatRequest out;
  for (int i = 0; i < chat.messages_size(); ++i) {
    const v1::ChatMessage& m = chat.messages(i);
    const std::string where = "chat.messages[" + std::to_string(i) + "]";
    ChatMessage msg;
    msg.role = role_name(m.role(), where);
    check_utf8(m.content(), where + ".content");
    check_utf8(m.reasoning_content(), where + ".reasoning_content");
    check_utf8(m.tool_call_id(), where + ".tool_call_id");
    msg.content = m.content();
    if (!m.reasoning_content().empty()) {
      DSV4_CHECK_ARG(m.role() == v1::ROLE_ASSISTANT) << where << ".reasoning_content is for assistant turns only";
      msg.reasoning_content = m.reasoning_content();
    }
    DSV4_CHECK_ARG(m.tool_calls_size() == 0 || m.role() == v1::ROLE_ASSISTANT)
        << where << ".tool_calls is for assistant turns only";
    for (int c = 0; c < m.tool_calls_size(); ++c) {
      const v1::ToolCall& call = m.tool_calls(c);
      const std::string cw = where + ".tool_calls[" + std::to_string(c) + "]";
      DSV4_CHECK_ARG(!call.name().empty()) << cw << ".name is empty";
      check_utf8(call.name(), cw + ".name");
      check_utf8(call.arguments_json(), cw + ".arguments_json");
      const ojson args = ojson::parse(call.arguments_json(), nullptr, false);
      DSV4_CHECK_ARG(!args.is_discarded() && args.is_object()) << cw << ".arguments_json must be a JSON object";
      msg.tool_calls.push_back({call.id(), call.name(), call.arguments_json()});
    }
    if (m.role() == v1::ROLE_TOOL) msg.tool_call_id = m.tool_call_id();
    out.messages.push_back(std::move(msg));
  }
  std::vector<std::string> schemas;
  for (int t = 0; t < chat.tools_size(); ++t) schemas.push_back(tool_schema(chat.tools(t), static_cast<size_t>(t)));
  if (!schemas.empty()) {
    const std::string& first = out.messages.front().role;
    if (first != "system" && first != "developer") {
      ChatMessage system;
      system.role = "system";
      out.messages.insert(out.messages.begin(), std::move(system));
    }
    out.messages.front().tools = std::move(schemas);
  }
  return out;
}

ValidatedRequest validate_generate_request(const v1::GenerateRequest& request, const ModelConfig& config,
                                           const BpeTokenizer* tokenizer, const RequestLimits& limits) {
  ValidatedRequest out;
  check_utf8(request.request_id(), "request_id");
  DSV4_CHECK_ARG(request.max_tokens() > 0) << "max_tokens must be > 0, got " << request.max_tokens();
  const v1::SamplingParams& s = request.sampling();
  SamplingParams& sp = out.options.sampling;
  sp.temperature = s.has_temperature() ? s.temperature() : 1.0f;
  sp.top_p = s.has_top_p() ? s.top_p() : 1.0f;
  sp.top_k = s.has_top_k() ? s.top_k() : 0;
  sp.min_p = s.has_min_p() ? s.min_p() : 0.0f;
  sp.seed = s.has_seed() ? s.seed() : 0;
  sp.top_logprobs = request.top_logprobs();
  sp.stop_token_ids.assign(request.stop_token_ids().begin(), request.stop_token_ids().end());
  sp.stop_token_ids.push_back(static_cast<int32_t>(config.eos_token_id));
  out.options.max_tokens = request.max_tokens();
  for (int i = 0; i < request.stop_size(); ++i) {
    check_utf8(request.stop(i), "stop[" + std::to_string(i) + "]");
    out.options.stop_strings.push_back(request.stop(i));
  }
  validate(out.options, config.vocab_size);  // sampling ranges, stop ids and strings

  switch (request.prompt_case()) {
    case v1::GenerateRequest::kChat: {
      const ChatRequest chat = chat_from_proto(request.chat());  // structure first: its errors name the field
      DSV4_CHECK_ARG(tokenizer != nullptr) << "this server has no tokenizer: send prompt.tokens instead of a chat";
      ThinkingMode mode = ThinkingMode::kNone;
      switch (request.chat().thinking()) {
        case v1::THINKING_NONE: mode = ThinkingMode::kNone; break;
        case v1::THINKING_HIGH: mode = ThinkingMode::kHigh; break;
        case v1::THINKING_MAX: mode = ThinkingMode::kMax; break;
        default: DSV4_THROW(kInvalidArgument) << "chat.thinking: unknown mode " << request.chat().thinking();
      }
      if (mode == ThinkingMode::kMax && config.max_position_embeddings < kThinkingMaxContext) {
        mode = ThinkingMode::kHigh;
        out.warnings.push_back("thinking max downgraded to high: context " +
                               std::to_string(config.max_position_embeddings) + " < " +
                               std::to_string(kThinkingMaxContext));
      }
      out.prompt = encode_chat_prompt(*tokenizer, chat, mode);
      out.options.thinking = mode != ThinkingMode::kNone;
      break;
    }
    case v1::GenerateRequest::kTokens:
      out.prompt.assign(request.tokens().token_ids().begin(), request.tokens().token_ids().end());
      break;
    default: DSV4_THROW(kInvalidArgument) << "the request has no prompt (chat or tokens)";
  }
  const int64_t max_context = config.max_position_embeddings;
  validate_prompt(out.prompt, config.vocab_size, max_context, tokenizer);
  const int64_t max_prompt = limits.max_prompt_tokens > 0 ? limits.max_prompt_tokens : max_context - 1;
  DSV4_CHECK_ARG(max_prompt <= 0 || static_cast<int64_t>(out.prompt.size()) <= max_prompt)
      << "the prompt has " << out.prompt.size() << " tokens; this server accepts at most " << max_prompt;
  return out;
}

}  // namespace dsv4::serve
