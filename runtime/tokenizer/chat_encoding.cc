// DSV4 prompt rendering (chat_encoding.h). The steps mirror the official renderer: merge tool messages into
// user turns, order tool results by the preceding calls, drop earlier reasoning (thinking mode, no tools),
// then render each message and the assistant opening after the last user/developer turn.
#include "runtime/tokenizer/chat_encoding.h"
#include "runtime/tokenizer/python_json.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

#include "runtime/core/error.h"

namespace dsv4 {
namespace {

using ojson = nlohmann::ordered_json;

constexpr std::string_view kBos = "<｜begin▁of▁sentence｜>";
constexpr std::string_view kEos = "<｜end▁of▁sentence｜>";
constexpr std::string_view kThinkBegin = "<think>";
constexpr std::string_view kThinkEnd = "</think>";
constexpr std::string_view kUser = "<｜User｜>";
constexpr std::string_view kAssistant = "<｜Assistant｜>";
constexpr std::string_view kLatestReminder = "<｜latest_reminder｜>";

// The prompt text the official renderer uses, byte for byte (ENC REASONING_EFFORT_MAX, TOOLS_TEMPLATE with
// the DSML token and think markers filled in, response_format_template).
constexpr std::string_view kReasoningEffortMax =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root "
    "cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial "
    "scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered "
    "alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";

constexpr std::string_view kToolsHead =
    "## Tools\n\n"
    "You have access to a set of tools to help answer the user's question. You can invoke tools by writing a "
    "\"<｜DSML｜tool_calls>\" block like the following:\n\n"
    "<｜DSML｜tool_calls>\n"
    "<｜DSML｜invoke name=\"$TOOL_NAME\">\n"
    "<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</｜DSML｜parameter>\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "<｜DSML｜invoke name=\"$TOOL_NAME2\">\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls>\n\n"
    "String parameters should be specified as is and set `string=\"true\"`. For all other types (numbers, "
    "booleans, arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n\n"
    "If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside "
    "<think>...</think> BEFORE any tool calls or final response.\n\n"
    "Otherwise, output directly after </think> with tool calls or final response.\n\n"
    "### Available Tool Schemas\n\n";
constexpr std::string_view kToolsTail =
    "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n";
constexpr std::string_view kResponseFormatHead =
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

const std::map<std::string, std::string, std::less<>>& task_tokens() {
  static const std::map<std::string, std::string, std::less<>> tokens{
      {"action", "<｜action｜>"}, {"query", "<｜query｜>"},   {"authority", "<｜authority｜>"},
      {"domain", "<｜domain｜>"}, {"title", "<｜title｜>"}, {"read_url", "<｜read_url｜>"}};
  return tokens;
}


void append_python_json(std::string& out, const ojson& v) {
  if (v.is_object()) {
    out += '{';
    bool first = true;
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (!first) out += ", ";
      first = false;
      python_json::append_string(out, it.key());
      out += ": ";
      append_python_json(out, it.value());
    }
    out += '}';
  } else if (v.is_array()) {
    out += '[';
    for (size_t i = 0; i < v.size(); ++i) {
      if (i) out += ", ";
      append_python_json(out, v[i]);
    }
    out += ']';
  } else if (v.is_string()) {
    python_json::append_string(out, v.get_ref<const std::string&>());
  } else {
    out += v.dump();  // null, true/false, integers, shortest round-trip floats (as Python's repr)
  }
}

std::string python_dumps(const ojson& v) {
  std::string out;
  append_python_json(out, v);
  return out;
}

// One DSML parameter line per argument key (strings as is, everything else as JSON).
std::string dsml_arguments(const ToolCall& call) {
  ojson args;
  try {
    args = ojson::parse(call.arguments);
  } catch (const ojson::exception&) {
    args = ojson::object();
    args["arguments"] = call.arguments;  // not JSON: one parameter holding the raw text, as the official code
  }
  DSV4_CHECK_ARG(args.is_object()) << "tool call '" << call.name << "': arguments are JSON but not an object";
  std::string out;
  bool first = true;
  for (auto it = args.begin(); it != args.end(); ++it) {
    if (!first) out += '\n';
    first = false;
    const bool is_string = it.value().is_string();
    out += "<｜DSML｜parameter name=\"" + it.key() + "\" string=\"" + (is_string ? "true" : "false") + "\">";
    out += is_string ? it.value().get<std::string>() : python_dumps(it.value());
    out += "</｜DSML｜parameter>";
  }
  return out;
}

std::string render_tools(const std::vector<std::string>& schemas) {
  std::string out(kToolsHead);
  for (size_t i = 0; i < schemas.size(); ++i) {
    if (i) out += '\n';
    out += schemas[i];
  }
  out += kToolsTail;
  return out;
}

// A message after merging: user turns carry content blocks (text or tool results).
struct Block {
  bool tool_result = false;
  std::string text;
  std::string tool_use_id;
};
struct Turn {
  ChatMessage msg;
  bool has_blocks = false;
  std::vector<Block> blocks;
};

std::vector<Turn> merge_tool_messages(const std::vector<ChatMessage>& messages) {
  std::vector<Turn> merged;
  for (const ChatMessage& m : messages) {
    const bool last_is_user_with_blocks = !merged.empty() && merged.back().msg.role == "user" && merged.back().has_blocks;
    if (m.role == "tool") {
      Block block{true, m.content, m.tool_call_id};
      if (last_is_user_with_blocks) {
        merged.back().blocks.push_back(std::move(block));
      } else {
        Turn t;
        t.msg.role = "user";
        t.has_blocks = true;
        t.blocks.push_back(std::move(block));
        merged.push_back(std::move(t));
      }
    } else if (m.role == "user") {
      Block block{false, m.content, ""};
      if (last_is_user_with_blocks && merged.back().msg.task.empty()) {
        merged.back().blocks.push_back(std::move(block));
      } else {
        Turn t;
        t.msg.role = "user";
        t.msg.content = m.content;
        t.msg.task = m.task;
        t.msg.without_eos = m.without_eos;
        t.has_blocks = true;
        t.blocks.push_back(std::move(block));
        merged.push_back(std::move(t));
      }
    } else {
      merged.push_back(Turn{m, false, {}});
    }
  }
  return merged;
}

void sort_tool_results_by_call_order(std::vector<Turn>& turns) {
  std::map<std::string, size_t> order;
  for (Turn& t : turns) {
    if (t.msg.role == "assistant" && !t.msg.tool_calls.empty()) {
      order.clear();
      for (size_t i = 0; i < t.msg.tool_calls.size(); ++i) {
        if (!t.msg.tool_calls[i].id.empty()) order[t.msg.tool_calls[i].id] = i;
      }
    } else if (t.msg.role == "user" && t.has_blocks) {
      std::vector<Block> results;
      for (const Block& b : t.blocks) {
        if (b.tool_result) results.push_back(b);
      }
      if (results.size() <= 1 || order.empty()) continue;
      auto rank = [&](const Block& b) {
        auto it = order.find(b.tool_use_id);
        return it == order.end() ? size_t{0} : it->second;
      };
      std::stable_sort(results.begin(), results.end(), [&](const Block& a, const Block& b) { return rank(a) < rank(b); });
      size_t next = 0;
      for (Block& b : t.blocks) {
        if (b.tool_result) b = results[next++];
      }
    }
  }
}

int last_user_index(const std::vector<Turn>& turns) {
  for (int i = static_cast<int>(turns.size()) - 1; i >= 0; --i) {
    if (turns[i].msg.role == "user" || turns[i].msg.role == "developer") return i;
  }
  return -1;
}

// Thinking mode without tools: reasoning before the last user turn goes, and so do earlier developer turns.
std::vector<Turn> drop_thinking(std::vector<Turn> turns) {
  const int last_user = last_user_index(turns);
  std::vector<Turn> out;
  for (int i = 0; i < static_cast<int>(turns.size()); ++i) {
    const std::string& role = turns[i].msg.role;
    const bool keep = role == "user" || role == "system" || role == "tool" || role == "latest_reminder" ||
                      role == "direct_search_results" || i >= last_user;
    if (keep) {
      out.push_back(std::move(turns[i]));
    } else if (role == "assistant") {
      turns[i].msg.reasoning_content.reset();
      out.push_back(std::move(turns[i]));
    }
  }
  return out;
}

std::string render_turn(const std::vector<Turn>& turns, int index, bool thinking, bool max_effort, bool drop) {
  const Turn& turn = turns[index];
  const ChatMessage& m = turn.msg;
  const int last_user = last_user_index(turns);
  std::string out;
  if (index == 0 && thinking && max_effort) out += kReasoningEffortMax;
  auto append_extras = [&] {
    if (!m.tools.empty()) out += "\n\n" + render_tools(m.tools);
    if (m.response_format) out += "\n\n" + std::string(kResponseFormatHead) + *m.response_format;
  };
  if (m.role == "system") {
    out += m.content;
    append_extras();
  } else if (m.role == "developer") {
    DSV4_CHECK_ARG(!m.content.empty()) << "chat message " << index << ": a developer message needs content";
    out += kUser;
    out += m.content;
    append_extras();
  } else if (m.role == "user") {
    out += kUser;
    if (turn.has_blocks && !turn.blocks.empty()) {
      for (size_t i = 0; i < turn.blocks.size(); ++i) {
        if (i) out += "\n\n";
        const Block& b = turn.blocks[i];
        out += b.tool_result ? "<tool_result>" + b.text + "</tool_result>" : b.text;
      }
    } else {
      out += m.content;
    }
  } else if (m.role == "latest_reminder") {
    out += kLatestReminder;
    out += m.content;
  } else if (m.role == "assistant") {
    std::string calls;
    if (!m.tool_calls.empty()) {
      calls = "\n\n<｜DSML｜tool_calls>\n";
      for (size_t i = 0; i < m.tool_calls.size(); ++i) {
        if (i) calls += '\n';
        calls += "<｜DSML｜invoke name=\"" + m.tool_calls[i].name + "\">\n" + dsml_arguments(m.tool_calls[i]) +
                 "\n</｜DSML｜invoke>";
      }
      calls += "\n</｜DSML｜tool_calls>";
    }
    const bool prev_has_task = index > 0 && !turns[index - 1].msg.task.empty();
    if (thinking && !prev_has_task && (!drop || index > last_user)) {
      out += m.reasoning_content.value_or("");
      out += kThinkEnd;
    }
    out += m.content + calls;
    if (!m.without_eos) out += kEos;
  } else {
    DSV4_THROW(kInvalidArgument) << "chat message " << index << ": unknown role '" << m.role << "'";
  }

  // The assistant opening follows the last message, or a message followed by an assistant/reminder turn.
  if (index + 1 < static_cast<int>(turns.size())) {
    const std::string& next = turns[index + 1].msg.role;
    if (next != "assistant" && next != "latest_reminder") return out;
  }
  if (!m.task.empty()) {
    auto it = task_tokens().find(m.task);
    DSV4_CHECK_ARG(it != task_tokens().end()) << "chat message " << index << ": unknown task '" << m.task << "'";
    if (m.task != "action") {
      out += it->second;
    } else {
      out += kAssistant;
      out += thinking ? kThinkBegin : kThinkEnd;
      out += it->second;
    }
  } else if (m.role == "user" || m.role == "developer") {
    out += kAssistant;
    const bool open_thinking = thinking && (!drop || index >= last_user);
    out += open_thinking ? kThinkBegin : kThinkEnd;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// JSON request parsing.

std::string string_field(const ojson& m, const char* key, const std::string& where, bool allow_list = false) {
  if (!m.contains(key) || m[key].is_null()) return "";
  const ojson& v = m[key];
  if (v.is_string()) return v.get<std::string>();
  DSV4_CHECK_ARG(allow_list && v.is_array()) << where << ": '" << key << "' must be a string";
  // Tool results may be content parts: text parts are joined by blank lines, others are named.
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += "\n\n";
    const std::string type = v[i].is_object() ? v[i].value("type", "") : "";
    out += type == "text" ? v[i].value("text", "") : "[Unsupported " + type + "]";
  }
  return out;
}

std::vector<std::string> tool_schemas(const ojson& tools, const std::string& where) {
  DSV4_CHECK_ARG(tools.is_array()) << where << ": 'tools' must be a list";
  std::vector<std::string> out;
  for (size_t i = 0; i < tools.size(); ++i) {
    DSV4_CHECK_ARG(tools[i].is_object() && tools[i].contains("function") && tools[i]["function"].is_object())
        << where << ": tools[" << i << "] needs a 'function' object";
    out.push_back(python_dumps(tools[i]["function"]));
  }
  return out;
}

}  // namespace

std::string python_json_dumps(std::string_view json_text) {
  ojson v;
  try {
    v = ojson::parse(json_text);
  } catch (const ojson::exception& e) {
    DSV4_THROW(kInvalidArgument) << "malformed JSON: " << e.what();
  }
  return python_dumps(v);
}

ChatRequest chat_request_from_json(std::string_view json_text, std::string_view origin) {
  ojson root;
  try {
    root = ojson::parse(json_text);
  } catch (const ojson::exception& e) {
    DSV4_THROW(kInvalidArgument) << origin << ": malformed JSON: " << e.what();
  }
  const ojson* list = &root;
  if (root.is_object()) {
    DSV4_CHECK_ARG(root.contains("messages")) << origin << ": object without 'messages'";
    list = &root["messages"];
  }
  DSV4_CHECK_ARG(list->is_array() && !list->empty()) << origin << ": 'messages' must be a non-empty list";
  ChatRequest request;
  for (size_t i = 0; i < list->size(); ++i) {
    const ojson& j = (*list)[i];
    const std::string where = std::string(origin) + ": messages[" + std::to_string(i) + "]";
    DSV4_CHECK_ARG(j.is_object() && j.contains("role") && j["role"].is_string()) << where << " needs a string 'role'";
    ChatMessage m;
    m.role = j["role"].get<std::string>();
    static const char* kRoles[] = {"system", "developer", "user", "assistant", "tool", "latest_reminder"};
    DSV4_CHECK_ARG(std::find(std::begin(kRoles), std::end(kRoles), m.role) != std::end(kRoles))
        << where << ": unknown role '" << m.role << "'";
    m.content = string_field(j, "content", where, /*allow_list=*/m.role == "tool");
    if (j.contains("reasoning_content") && !j["reasoning_content"].is_null()) {
      m.reasoning_content = string_field(j, "reasoning_content", where);
    }
    m.tool_call_id = string_field(j, "tool_call_id", where);
    m.task = string_field(j, "task", where);
    m.without_eos = j.value("wo_eos", false);
    if (j.contains("tools") && !j["tools"].is_null()) m.tools = tool_schemas(j["tools"], where);
    if (j.contains("response_format") && !j["response_format"].is_null()) m.response_format = python_dumps(j["response_format"]);
    if (j.contains("tool_calls") && !j["tool_calls"].is_null()) {
      DSV4_CHECK_ARG(j["tool_calls"].is_array()) << where << ": 'tool_calls' must be a list";
      for (size_t k = 0; k < j["tool_calls"].size(); ++k) {
        const ojson& tc = j["tool_calls"][k];
        DSV4_CHECK_ARG(tc.is_object() && tc.contains("function") && tc["function"].is_object() &&
                       tc["function"].contains("name") && tc["function"]["name"].is_string())
            << where << ": tool_calls[" << k << "] needs function.name";
        ToolCall call;
        call.id = tc.contains("id") && tc["id"].is_string() ? tc["id"].get<std::string>() : "";
        call.name = tc["function"]["name"].get<std::string>();
        const ojson& args = tc["function"].contains("arguments") ? tc["function"]["arguments"] : ojson("{}");
        // OpenAI sends arguments as JSON text; an inline object is accepted too and serialised.
        call.arguments = args.is_string() ? args.get<std::string>() : python_dumps(args);
        m.tool_calls.push_back(std::move(call));
      }
    }
    request.messages.push_back(std::move(m));
  }
  if (root.is_object() && root.contains("tools") && !root["tools"].is_null()) {
    std::vector<std::string> schemas = tool_schemas(root["tools"], std::string(origin));
    if (!schemas.empty()) {
      ChatMessage& first = request.messages.front();
      if (first.role != "system" && first.role != "developer") {
        ChatMessage system;
        system.role = "system";
        request.messages.insert(request.messages.begin(), std::move(system));
      }
      auto& tools = request.messages.front().tools;
      tools.insert(tools.end(), schemas.begin(), schemas.end());
    }
  }
  return request;
}

std::string render_chat_prompt(const ChatRequest& request, ThinkingMode mode) {
  DSV4_CHECK_ARG(!request.messages.empty()) << "chat request has no messages";
  const bool thinking = mode != ThinkingMode::kNone;
  std::vector<Turn> turns = merge_tool_messages(request.messages);
  sort_tool_results_by_call_order(turns);
  // Any tools in the conversation keep all reasoning: earlier tool calls depend on it.
  // (Checked after merging, like the official code: tools on a user or tool message do not count.)
  const bool any_tools = std::any_of(turns.begin(), turns.end(), [](const Turn& t) { return !t.msg.tools.empty(); });
  const bool drop = !any_tools;
  if (thinking && drop) turns = drop_thinking(std::move(turns));
  std::string prompt(kBos);
  for (int i = 0; i < static_cast<int>(turns.size()); ++i) {
    prompt += render_turn(turns, i, thinking, mode == ThinkingMode::kMax, drop);
  }
  return prompt;
}

}  // namespace dsv4
