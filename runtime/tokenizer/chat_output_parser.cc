// Streaming parser of DSV4 model output (chat_encoding.h). The grammar is the official
// parse_message_from_completion_text: [reasoning "</think>"] content ("\n\n<｜DSML｜tool_calls" block)? EOS,
// where the block is
//   ">\n" ( "<｜DSML｜invoke" ' name="N">\n' ( "<｜DSML｜parameter" ' name="K" string="true|false">V<'
//   "/｜DSML｜parameter" ">\n" )* "</｜DSML｜invoke" ">\n" )* "</｜DSML｜tool_calls>".
// Every step reads up to the earliest of a few stop strings; when streaming, a stop string that may still be
// completing (or that a longer, earlier one may still overtake) makes the step wait for more text.
#include <algorithm>

#include "runtime/core/error.h"
#include "runtime/tokenizer/chat_encoding.h"
#include "runtime/tokenizer/python_json.h"

namespace dsv4 {
namespace {

constexpr std::string_view kEos = "<｜end▁of▁sentence｜>";
constexpr std::string_view kThinkEnd = "</think>";
constexpr std::string_view kToolCallsStart = "\n\n<｜DSML｜tool_calls";
constexpr std::string_view kToolCallsEnd = "</｜DSML｜tool_calls>";
constexpr std::string_view kInvokeStart = "<｜DSML｜invoke";
constexpr std::string_view kInvokeEnd = "</｜DSML｜invoke";
constexpr std::string_view kParamStart = "<｜DSML｜parameter";
constexpr std::string_view kParamEnd = "/｜DSML｜parameter";

struct StopMatch {
  bool found = false;
  size_t pos = 0;    // where the stop string starts (found)
  size_t which = 0;  // index into the stops (found)
  size_t safe = 0;   // bytes before any possible stop: final text whatever comes next
};

StopMatch find_stop(std::string_view buf, std::initializer_list<std::string_view> stops, bool final) {
  StopMatch m;
  m.pos = buf.size();
  size_t i = 0;
  for (std::string_view s : stops) {
    const size_t p = buf.find(s);
    if (p != std::string_view::npos && p < m.pos) {
      m.found = true;
      m.pos = p;
      m.which = i;
    }
    ++i;
  }
  // Earliest start of a stop string cut off by the end of the buffer.
  size_t partial = buf.size();
  if (!final) {
    for (std::string_view s : stops) {
      const size_t from = buf.size() >= s.size() ? buf.size() - s.size() + 1 : 0;
      for (size_t q = from; q < buf.size() && q < partial; ++q) {
        if (s.starts_with(buf.substr(q))) {
          partial = q;
          break;
        }
      }
    }
  }
  if (m.found && partial < m.pos) m.found = false;  // an earlier stop may still be completing
  m.safe = m.found ? m.pos : partial;
  return m;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

}  // namespace

ChatOutputParser::ChatOutputParser(bool thinking) : state_(thinking ? State::kReasoning : State::kContent) {}

void ChatOutputParser::emit_text(std::vector<ChatOutputEvent>& events, std::string_view text) {
  if (text.empty()) return;
  const auto kind = state_ == State::kReasoning ? ChatOutputEvent::Kind::kReasoning : ChatOutputEvent::Kind::kContent;
  if (!events.empty() && events.back().kind == kind) {
    events.back().text += text;
  } else {
    events.push_back({kind, std::string(text), {}});
  }
}

std::vector<ChatOutputEvent> ChatOutputParser::feed(std::string_view delta) {
  std::vector<ChatOutputEvent> events;
  if (state_ == State::kDone) return events;
  buffer_ += delta;
  step(events, /*final=*/false);
  return events;
}

std::vector<ChatOutputEvent> ChatOutputParser::finish() {
  std::vector<ChatOutputEvent> events;
  if (state_ != State::kDone) step(events, /*final=*/true);
  buffer_.clear();
  return events;
}

void ChatOutputParser::step(std::vector<ChatOutputEvent>& events, bool final) {
  auto expect_close = [&](std::string_view got, const char* after) {
    DSV4_CHECK_ARG(got == ">\n") << "model output: expected '>\\n' after " << after << ", got '" << got << "'";
  };
  for (;;) {
    const std::string_view buf = buffer_;
    switch (state_) {
      case State::kReasoning:
      case State::kContent: {
        const bool reasoning = state_ == State::kReasoning;
        const StopMatch m = reasoning ? find_stop(buf, {kThinkEnd}, final) : find_stop(buf, {kEos, kToolCallsStart}, final);
        emit_text(events, buf.substr(0, m.safe));
        if (!m.found) {
          buffer_.erase(0, final ? buffer_.size() : m.safe);
          return;
        }
        const size_t stop_len = reasoning ? kThinkEnd.size() : (m.which == 0 ? kEos.size() : kToolCallsStart.size());
        state_ = reasoning ? State::kContent : (m.which == 0 ? State::kDone : State::kToolBlockOpen);
        buffer_.erase(0, m.pos + stop_len);
        if (state_ == State::kDone) {
          buffer_.clear();
          return;
        }
        break;
      }
      case State::kToolBlockOpen: {
        const StopMatch m = find_stop(buf, {kInvokeStart, kToolCallsEnd}, final);
        if (!m.found) {
          DSV4_CHECK_ARG(!final) << "model output ends inside a DSML tool_calls block";
          return;
        }
        expect_close(buf.substr(0, m.pos), "a DSML tool_calls/invoke tag");
        buffer_.erase(0, m.pos + (m.which == 0 ? kInvokeStart.size() : kToolCallsEnd.size()));
        state_ = m.which == 0 ? State::kInvokeName : State::kAfterBlock;
        current_ = ToolCall{};
        params_.clear();
        break;
      }
      case State::kInvokeName: {
        const StopMatch m = find_stop(buf, {kParamStart, kInvokeEnd}, final);
        if (!m.found) {
          DSV4_CHECK_ARG(!final) << "model output ends inside a DSML invoke";
          return;
        }
        std::string_view head = buf.substr(0, m.pos);
        while (!head.empty() && is_space(head.front())) head.remove_prefix(1);
        constexpr std::string_view kNameOpen = "name=\"";
        constexpr std::string_view kNameClose = "\">\n";
        DSV4_CHECK_ARG(head.starts_with(kNameOpen) && head.size() >= kNameOpen.size() + kNameClose.size() &&
                       head.ends_with(kNameClose))
            << "model output: malformed DSML invoke name '" << buf.substr(0, m.pos) << "'";
        current_.name = std::string(head.substr(kNameOpen.size(), head.size() - kNameOpen.size() - kNameClose.size()));
        buffer_.erase(0, m.pos + (m.which == 0 ? kParamStart.size() : kInvokeEnd.size()));
        state_ = m.which == 0 ? State::kParamBody : State::kToolBlockOpen;
        if (m.which == 1) {
          ChatOutputEvent e;
          e.kind = ChatOutputEvent::Kind::kToolCall;
          e.tool_call = current_;
          e.tool_call.arguments = "{}";
          events.push_back(std::move(e));
        }
        break;
      }
      case State::kParamBody: {
        const StopMatch m = find_stop(buf, {kParamEnd}, final);
        if (!m.found) {
          DSV4_CHECK_ARG(!final) << "model output ends inside a DSML parameter";
          return;
        }
        // ' name="K" string="true|false">V<' with the shortest K, as the official regex reads it.
        const std::string_view body = buf.substr(0, m.pos);
        constexpr std::string_view kOpen = " name=\"";
        bool ok = body.starts_with(kOpen) && body.ends_with("<");
        size_t name_end = std::string_view::npos;
        bool is_string = false;
        size_t value_begin = 0;
        for (size_t p = kOpen.size(); ok && p < body.size(); ++p) {
          for (bool flag : {true, false}) {
            const std::string marker = std::string("\" string=\"") + (flag ? "true" : "false") + "\">";
            if (body.substr(p).starts_with(marker) && p + marker.size() <= body.size() - 1) {
              name_end = p;
              is_string = flag;
              value_begin = p + marker.size();
              break;
            }
          }
          if (name_end != std::string_view::npos) break;
        }
        DSV4_CHECK_ARG(ok && name_end != std::string_view::npos)
            << "model output: malformed DSML parameter '" << body << "'";
        std::string name(body.substr(kOpen.size(), name_end - kOpen.size()));
        std::string value(body.substr(value_begin, body.size() - 1 - value_begin));
        const bool duplicate = std::any_of(params_.begin(), params_.end(), [&](const auto& p) { return p.first == name; });
        DSV4_CHECK_ARG(!duplicate) << "model output: duplicate DSML parameter '" << name << "'";
        params_.push_back({std::move(name), {std::move(value), is_string}});
        buffer_.erase(0, m.pos + kParamEnd.size());
        state_ = State::kAfterParam;
        break;
      }
      case State::kAfterParam: {
        const StopMatch m = find_stop(buf, {kParamStart, kInvokeEnd}, final);
        if (!m.found) {
          DSV4_CHECK_ARG(!final) << "model output ends inside a DSML invoke";
          return;
        }
        expect_close(buf.substr(0, m.pos), "a DSML parameter");
        buffer_.erase(0, m.pos + (m.which == 0 ? kParamStart.size() : kInvokeEnd.size()));
        if (m.which == 0) {
          state_ = State::kParamBody;
        } else {
          ChatOutputEvent e;
          e.kind = ChatOutputEvent::Kind::kToolCall;
          e.tool_call = current_;
          std::string args = "{";
          for (size_t i = 0; i < params_.size(); ++i) {
            if (i) args += ", ";
            python_json::append_string(args, params_[i].first);
            args += ": ";
            if (params_[i].second.second) {
              python_json::append_string(args, params_[i].second.first);
            } else {
              args += params_[i].second.first;  // already JSON
            }
          }
          args += "}";
          e.tool_call.arguments = std::move(args);
          events.push_back(std::move(e));
          state_ = State::kToolBlockOpen;
        }
        break;
      }
      case State::kAfterBlock: {
        const StopMatch m = find_stop(buf, {kEos}, final);
        const std::string_view before = buf.substr(0, m.found ? m.pos : m.safe);
        DSV4_CHECK_ARG(before.empty()) << "model output: unexpected text after the tool calls: '" << before << "'";
        if (m.found) {
          state_ = State::kDone;
          buffer_.clear();
        }
        if (final) buffer_.clear();
        return;
      }
      case State::kDone:
        buffer_.clear();
        return;
    }
  }
}

ParsedChatOutput parse_chat_output(std::string_view text, bool thinking) {
  ChatOutputParser parser(thinking);
  ParsedChatOutput out;
  auto take = [&](std::vector<ChatOutputEvent> events) {
    for (ChatOutputEvent& e : events) {
      switch (e.kind) {
        case ChatOutputEvent::Kind::kReasoning: out.reasoning += e.text; break;
        case ChatOutputEvent::Kind::kContent: out.content += e.text; break;
        case ChatOutputEvent::Kind::kToolCall: out.tool_calls.push_back(std::move(e.tool_call)); break;
      }
    }
  };
  take(parser.feed(text));
  out.saw_eos = parser.saw_eos();
  take(parser.finish());
  return out;
}

}  // namespace dsv4
