// GenerationStream: sampling -> stop checks -> detokenization -> stop strings -> output parser.
#include "runtime/engine/generator.h"

#include <algorithm>

#include "runtime/core/error.h"
#include "runtime/model/model.h"

namespace dsv4 {

std::string_view finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone: return "none";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kToolCalls: return "tool_calls";
    case FinishReason::kAborted: return "aborted";
    case FinishReason::kError: return "error";
  }
  return "unknown";
}

void validate(const GenerationOptions& options, int64_t vocab_size) {
  validate(options.sampling);
  DSV4_CHECK_ARG(options.max_tokens > 0) << "max_tokens must be > 0, got " << options.max_tokens;
  for (size_t i = 0; i < options.stop_strings.size(); ++i) {
    DSV4_CHECK_ARG(!options.stop_strings[i].empty()) << "stop[" << i << "] is an empty string";
    DSV4_CHECK_ARG(utf8_is_valid(options.stop_strings[i])) << "stop[" << i << "] is not valid UTF-8";
  }
  for (size_t i = 0; i < options.sampling.stop_token_ids.size(); ++i) {
    const int32_t id = options.sampling.stop_token_ids[i];
    DSV4_CHECK_ARG(id >= 0 && id < vocab_size)
        << "stop_token_ids[" << i << "] = " << id << " is outside the vocabulary [0, " << vocab_size << ")";
  }
}

void validate_prompt(std::span<const int32_t> prompt, int64_t vocab_size, int64_t max_context,
                     const BpeTokenizer* tokenizer) {
  DSV4_CHECK_ARG(!prompt.empty()) << "the prompt has no tokens";
  for (size_t i = 0; i < prompt.size(); ++i) {
    const int32_t id = prompt[i];
    DSV4_CHECK_ARG(id >= 0 && id < vocab_size && (tokenizer == nullptr || tokenizer->is_valid_id(id)))
        << "prompt token " << i << " = " << id << " is outside the vocabulary [0, " << vocab_size << ")";
  }
  DSV4_CHECK_ARG(max_context <= 0 || static_cast<int64_t>(prompt.size()) < max_context)
      << "the prompt has " << prompt.size() << " tokens; the context holds " << max_context
      << " and needs room for at least one generated token";
}

std::vector<int32_t> encode_chat_prompt(const BpeTokenizer& tokenizer, const ChatRequest& chat, ThinkingMode mode) {
  const std::string text = render_chat_prompt(chat, mode);
  // The rendered prompt contains the special tokens as text: parse them back into their ids.
  return tokenizer.encode(text, /*parse_added_tokens=*/true);
}

GenerationStream::GenerationStream(const BpeTokenizer* tokenizer, GenerationOptions options, int64_t vocab_size,
                                   int64_t prompt_tokens, int64_t max_context)
    : tokenizer_(tokenizer),
      options_(std::move(options)),
      sampler_((validate(options_, vocab_size), options_.sampling)),
      vocab_size_(vocab_size) {
  token_limit_ = options_.max_tokens;
  if (max_context > 0) token_limit_ = std::min<int64_t>(token_limit_, max_context - prompt_tokens);
  DSV4_CHECK_ARG(token_limit_ > 0) << "the prompt (" << prompt_tokens << " tokens) fills the context ("
                                   << max_context << ")";
  if (tokenizer_ != nullptr) {
    detok_.emplace(*tokenizer_);
    parser_.emplace(options_.thinking);
    in_reasoning_ = options_.thinking;
    think_end_id_ = tokenizer_->token_to_id("</think>").value_or(-1);
  }
  for (const std::string& s : options_.stop_strings) longest_stop_ = std::max(longest_stop_, s.size());
}

void GenerationStream::emit_text(std::string_view text, GenerationStep& step, bool final) {
  if (!parser_ || finish_ == FinishReason::kError) return;
  try {
    std::vector<ChatOutputEvent> events = parser_->feed(text);
    if (final) {
      std::vector<ChatOutputEvent> rest = parser_->finish();
      events.insert(events.end(), std::make_move_iterator(rest.begin()), std::make_move_iterator(rest.end()));
    }
    for (ChatOutputEvent& e : events) {
      switch (e.kind) {
        case ChatOutputEvent::Kind::kReasoning: step.reasoning_delta += e.text; break;
        case ChatOutputEvent::Kind::kContent:
          in_reasoning_ = false;
          step.content_delta += e.text;
          break;
        case ChatOutputEvent::Kind::kToolCall:
          in_reasoning_ = false;
          saw_tool_calls_ = true;
          step.tool_calls.push_back(std::move(e.tool_call));
          break;
      }
    }
  } catch (const Error& e) {
    // The model wrote a malformed DSML block: the request ends with an error, the server keeps going.
    error_ = e.what();
    finish_ = FinishReason::kError;
    step.finish = FinishReason::kError;
  }
}

bool GenerationStream::push_text(std::string_view text, GenerationStep& step) {
  held_ += text;
  if (options_.stop_strings.empty()) {
    emit_text(held_, step, false);
    held_.clear();
    return false;
  }
  size_t first = std::string::npos;
  for (const std::string& s : options_.stop_strings) first = std::min(first, held_.find(s));
  if (first != std::string::npos) {
    emit_text(std::string_view(held_).substr(0, first), step, false);
    held_.clear();
    return true;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string; cut on a UTF-8 boundary so
  // that emitted text stays valid.
  size_t keep = 0;
  for (const std::string& s : options_.stop_strings) {
    for (size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n) {
      if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
    }
  }
  size_t cut = held_.size() - keep;
  cut = utf8_complete_prefix(std::string_view(held_).substr(0, cut));
  emit_text(std::string_view(held_).substr(0, cut), step, false);
  held_.erase(0, cut);
  return false;
}

void GenerationStream::finish(FinishReason reason, GenerationStep& step, bool cut_by_stop_string) {
  if (detok_) {
    std::string tail = detok_->finish();
    // After a stop string nothing more is emitted; otherwise the held-back bytes (an incomplete UTF-8
    // sequence, now U+FFFD) and any stop-string prefix still held are final text.
    if (!cut_by_stop_string && !tail.empty() && push_text(tail, step)) reason = FinishReason::kStop;
    if (!cut_by_stop_string) emit_text(held_, step, /*final=*/false);
    emit_text("", step, /*final=*/true);
    held_.clear();
  }
  if (finish_ == FinishReason::kError) {
    step.finish = FinishReason::kError;
    return;
  }
  if (reason == FinishReason::kStop && saw_tool_calls_) reason = FinishReason::kToolCalls;
  finish_ = reason;
  step.finish = reason;
}

GenerationStep GenerationStream::step(std::span<const float> logits) {
  DSV4_CHECK(!finished()) << "GenerationStream::step after the stream finished";
  DSV4_CHECK(static_cast<int64_t>(logits.size()) == vocab_size_)
      << "logits have " << logits.size() << " entries, vocabulary is " << vocab_size_;
  return process(sampler_.sample(logits));
}

GenerationStep GenerationStream::step(const MergedCandidates& candidates) {
  DSV4_CHECK(!finished()) << "GenerationStream::step after the stream finished";
  return process(sampler_.sample(candidates));
}

GenerationStep GenerationStream::process(SampleResult r) {
  GenerationStep step;
  step.token = r.token;
  step.logprob = r.logprob;
  step.top_logprobs = std::move(r.top_logprobs);
  tokens_.push_back(r.token);
  if (in_reasoning_) {
    // The reasoning ends with the `</think>` token (counted as reasoning); the parser's switch to content
    // comes later, since it holds text back until a marker resolves.
    ++reasoning_tokens_;
    if (r.token == think_end_id_) in_reasoning_ = false;
  }
  if (r.is_stop) {
    finish(FinishReason::kStop, step);
    return step;
  }
  if (detok_) {
    const std::string text = detok_->push(r.token);
    if (push_text(text, step)) {
      finish(FinishReason::kStop, step, /*cut_by_stop_string=*/true);
      return step;
    }
    if (finish_ == FinishReason::kError) {
      detok_->finish();
      return step;
    }
    if (parser_->saw_eos()) {  // EOS written as text while not a stop id: the turn is over anyway
      finish(FinishReason::kStop, step);
      return step;
    }
  }
  if (static_cast<int64_t>(tokens_.size()) >= token_limit_) finish(FinishReason::kLength, step);
  return step;
}

GenerationStep GenerationStream::abort() {
  GenerationStep step;
  step.token = -1;
  if (!finished()) finish(FinishReason::kAborted, step);
  return step;
}

GenerationResult generate(Model& model, const BpeTokenizer* tokenizer, std::span<const int32_t> prompt,
                          const GenerationOptions& options,
                          const std::function<void(const GenerationStep&)>& on_step) {
  const ModelConfig& cfg = model.config();
  validate_prompt(prompt, cfg.vocab_size, cfg.max_position_embeddings, tokenizer);
  GenerationStream stream(tokenizer, options, cfg.vocab_size, static_cast<int64_t>(prompt.size()),
                          cfg.max_position_embeddings);
  SequenceState state = model.new_sequence();
  Tensor logits = model.prefill(state, prompt);
  GenerationResult result;
  int64_t row = static_cast<int64_t>(prompt.size()) - 1;
  while (true) {
    const float* base = static_cast<const float*>(logits.data()) + row * cfg.vocab_size;
    GenerationStep step = stream.step(std::span<const float>(base, static_cast<size_t>(cfg.vocab_size)));
    result.reasoning += step.reasoning_delta;
    result.content += step.content_delta;
    result.tool_calls.insert(result.tool_calls.end(), step.tool_calls.begin(), step.tool_calls.end());
    if (on_step) on_step(step);
    if (stream.finished()) break;
    logits = model.decode(state, step.token);
    row = 0;
  }
  result.tokens = stream.tokens();
  result.finish = stream.finish_reason();
  result.reasoning_tokens = stream.reasoning_tokens();
  return result;
}

}  // namespace dsv4
