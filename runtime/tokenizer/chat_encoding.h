// DeepSeek-V4 chat prompt rendering and model-output parsing (spec §8.2).
//
// The rendering follows the official `encoding/encoding_dsv4.py` (read through a mirror, see spec §0 "ENC"):
// BOS, [max-effort preamble], then the messages; tool messages merged into user turns as <tool_result>
// blocks; earlier reasoning dropped in thinking mode unless a message carries tools; tools declared through
// the "## Tools" template; assistant tool calls written as DSML blocks. Expected strings in
// tests/golden/tokenizer/chat_golden.json come from running that official file
// (scripts/reference/chat_golden.py).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4 {

/// none = non-thinking (`<｜Assistant｜></think>`), high = thinking (`<｜Assistant｜><think>`), max = thinking
/// plus the "Reasoning Effort: Absolute maximum" preamble after BOS.
enum class ThinkingMode { kNone, kHigh, kMax };

/// One tool call. `arguments` is JSON text of an object (OpenAI style); rendering writes one DSML parameter
/// per key (strings as is, other values as JSON).
struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;
};

/// One chat message. Roles: system, developer, user, assistant, tool, latest_reminder.
struct ChatMessage {
  std::string role;
  std::string content;
  std::optional<std::string> reasoning_content;  // assistant
  std::vector<ToolCall> tool_calls;              // assistant
  std::string tool_call_id;                      // tool
  /// Tool schemas declared on this (system or developer) message: each is the JSON text of an OpenAI
  /// "function" object, already serialised the way the renderer writes it (see python_json_dumps()).
  std::vector<std::string> tools;
  /// JSON text of a response format schema (system or developer), as written into the prompt.
  std::optional<std::string> response_format;
  /// Quick-instruction task (action, query, authority, domain, title, read_url); empty = none.
  std::string task;
  /// Assistant turn rendered without its EOS (a prefix to continue).
  bool without_eos = false;
};

struct ChatRequest {
  std::vector<ChatMessage> messages;
};

/// Parses {"messages": [...], "tools": [...]} or a bare list of messages (OpenAI chat format: content
/// strings, tool_calls with function.name / function.arguments, tool messages with tool_call_id).
/// Top-level tools are declared on the first message (as the official tests do), which must then be a
/// system or developer message; otherwise an empty system message is put first to carry them.
/// Errors name `origin` and the message index.
ChatRequest chat_request_from_json(std::string_view json_text, std::string_view origin);

/// The full prompt text, starting with BOS. Validates roles and required fields (kInvalidArgument).
std::string render_chat_prompt(const ChatRequest& request, ThinkingMode mode);

/// JSON text exactly as Python's json.dumps(value, ensure_ascii=False) writes it (", " and ": " separators,
/// keys in their input order): the renderer embeds tool schemas and non-string arguments this way.
std::string python_json_dumps(std::string_view json_text);

// ---------------------------------------------------------------------------------------------------------
// Output parsing.

/// One piece of parsed model output.
struct ChatOutputEvent {
  enum class Kind { kReasoning, kContent, kToolCall };
  Kind kind = Kind::kContent;
  std::string text;    // kReasoning / kContent: a delta of text
  ToolCall tool_call;  // kToolCall: a complete call (arguments rebuilt as JSON text, as the official parser does)
};

/// Splits streamed model output (detokenized text, special tokens included) into reasoning, content and DSML
/// tool calls. Text that may be the start of a marker (`</think>`, `\n\n<｜DSML｜tool_calls`, EOS) is held back
/// until it resolves, so no marker byte ever reaches a text event. Malformed tool-call blocks throw
/// kInvalidArgument naming what was expected.
class ChatOutputParser {
 public:
  /// `thinking`: the prompt ended with `<think>`, so the output starts with reasoning.
  explicit ChatOutputParser(bool thinking);
  /// Feeds a text delta; returns the events it completes.
  std::vector<ChatOutputEvent> feed(std::string_view delta);
  /// End of output: flushes held-back text. An unfinished tool-call block throws kInvalidArgument.
  std::vector<ChatOutputEvent> finish();
  /// True once the EOS marker was seen (later text is ignored).
  bool saw_eos() const { return state_ == State::kDone; }

 private:
  enum class State { kReasoning, kContent, kToolBlockOpen, kInvokeName, kParamBody, kAfterParam, kAfterBlock, kDone };
  void step(std::vector<ChatOutputEvent>& events, bool final);
  void emit_text(std::vector<ChatOutputEvent>& events, std::string_view text);

  State state_;
  std::string buffer_;  // not yet consumed text
  ToolCall current_;
  std::vector<std::pair<std::string, std::pair<std::string, bool>>> params_;  // name -> (value, is_string)
};

/// Whole-output convenience: reasoning, content and tool calls of a finished output.
struct ParsedChatOutput {
  std::string reasoning;
  std::string content;
  std::vector<ToolCall> tool_calls;
  bool saw_eos = false;
};
ParsedChatOutput parse_chat_output(std::string_view text, bool thinking);

}  // namespace dsv4
