// The per-request generation logic shared by `dsv4 generate` and the server: sampling, stop conditions,
// incremental detokenization, the split of the output into reasoning / content / DSML tool calls, and top
// logprobs.
//
// It is split from the model on purpose: a GenerationStream only sees the logits of its sequence's last
// position. `dsv4 generate` feeds it from Model::prefill in a loop (generate() below); the server's rank 0
// feeds it from the rows of a batched Engine::step. Both therefore produce the same tokens for the same
// request and seed.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/engine/sampler.h"
#include "runtime/tokenizer/bpe.h"
#include "runtime/tokenizer/chat_encoding.h"

namespace dsv4 {

class Model;

enum class FinishReason {
  kNone,       // still running
  kStop,       // a stop token id (EOS included) or a stop string
  kLength,     // max_tokens or the model's context limit
  kToolCalls,  // the turn ended (stop token) after one or more DSML tool calls
  kAborted,    // cancelled from outside (Abort, client cancellation, drain)
  kError,      // the output could not be parsed (malformed DSML block); see GenerationStream::error()
};

std::string_view finish_reason_name(FinishReason reason);

/// What one request asks for beyond its prompt.
struct GenerationOptions {
  /// Sampling; stop_token_ids should hold EOS (default_stop_ids()).
  SamplingParams sampling;
  /// Tokens to generate at most (> 0).
  int32_t max_tokens = 256;
  /// Generation stops before the first occurrence of any of these strings in the output text (not included).
  std::vector<std::string> stop_strings;
  /// The prompt ended with `<think>`: the output starts with reasoning.
  bool thinking = false;
};

/// Throws Error(kInvalidArgument) naming the field: bad sampling (validate(SamplingParams)), max_tokens <= 0,
/// an empty stop string, or a stop id outside [0, vocab_size).
void validate(const GenerationOptions& options, int64_t vocab_size);

/// The prompt must be non-empty, every id in [0, vocab_size) (and a valid tokenizer id when `tokenizer`), and
/// the prompt must leave room for one generated token in `max_context` (0 = no limit). Error(kInvalidArgument)
/// naming the index of the first bad id.
void validate_prompt(std::span<const int32_t> prompt, int64_t vocab_size, int64_t max_context,
                     const BpeTokenizer* tokenizer);

/// Renders the chat with the DSV4 template and encodes it.
std::vector<int32_t> encode_chat_prompt(const BpeTokenizer& tokenizer, const ChatRequest& chat, ThinkingMode mode);

/// The outcome of one generated token.
struct GenerationStep {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<TokenLogprob> top_logprobs;  // options.sampling.top_logprobs entries
  std::string reasoning_delta;
  std::string content_delta;
  std::vector<ToolCall> tool_calls;
  /// kNone while more tokens follow. When set, `token` is still reported, but a stop token is not part of
  /// the text and must not be fed to the model.
  FinishReason finish = FinishReason::kNone;
};

/// One request's generation state. Not thread-safe; the tokenizer (may be null: no text, ids only) must
/// outlive it.
class GenerationStream {
 public:
  /// Validates `options`. `prompt_tokens` and `max_context` (0 = none) bound the output by the context.
  GenerationStream(const BpeTokenizer* tokenizer, GenerationOptions options, int64_t vocab_size,
                   int64_t prompt_tokens, int64_t max_context);

  /// Samples the next token from the full-vocabulary logits of the sequence's last position and processes it.
  /// Must not be called after finished().
  GenerationStep step(std::span<const float> logits);
  /// The same from candidates merged from the vocabulary shards (the distributed engine's path; the merged set
  /// must suffice for this stream's sampling parameters, see candidates_suffice()).
  GenerationStep step(const MergedCandidates& candidates);
  /// Whether `candidates` decide this stream's next sample exactly (Sampler::suffices; see CandidateCheck).
  bool candidates_suffice(const MergedCandidates& candidates, int32_t count_per_shard, bool all_in) const {
    return sampler_.suffices(candidates, count_per_shard, all_in);
  }
  /// Ends the stream from outside (abort / cancellation): flushes held-back text into the returned step.
  GenerationStep abort();

  bool finished() const { return finish_ != FinishReason::kNone; }
  FinishReason finish_reason() const { return finish_; }
  /// The parser's message when finish_reason() is kError.
  const std::string& error() const { return error_; }
  const GenerationOptions& options() const { return options_; }
  /// Tokens sampled so far (a final stop token included).
  const std::vector<int32_t>& tokens() const { return tokens_; }
  int32_t completion_tokens() const { return static_cast<int32_t>(tokens_.size()); }
  /// Tokens of the reasoning part (thinking mode): up to and including `</think>`, or until the parser first
  /// emits content or a tool call when the model never writes `</think>`.
  int32_t reasoning_tokens() const { return reasoning_tokens_; }
  /// True once any tool call was emitted.
  bool saw_tool_calls() const { return saw_tool_calls_; }

 private:
  // Text that became final (after stop-string hold-back) goes through the output parser into `step`.
  void emit_text(std::string_view text, GenerationStep& step, bool final);
  // Applies stop strings to new detokenized text; returns true when a stop string was found.
  bool push_text(std::string_view text, GenerationStep& step);
  void finish(FinishReason reason, GenerationStep& step, bool cut_by_stop_string = false);
  // Stop checks, detokenization and parsing of one sampled token.
  GenerationStep process(SampleResult sampled);

  const BpeTokenizer* tokenizer_;
  GenerationOptions options_;
  Sampler sampler_;
  int64_t vocab_size_;
  int64_t token_limit_;  // most tokens this stream may produce
  std::optional<IncrementalDetokenizer> detok_;
  std::optional<ChatOutputParser> parser_;
  std::string held_;  // detokenized text that may be the start of a stop string
  size_t longest_stop_ = 0;
  std::vector<int32_t> tokens_;
  int32_t reasoning_tokens_ = 0;
  bool in_reasoning_ = false;
  int32_t think_end_id_ = -1;
  bool saw_tool_calls_ = false;
  FinishReason finish_ = FinishReason::kNone;
  std::string error_;
};

/// The whole result of generate().
struct GenerationResult {
  std::vector<int32_t> tokens;
  std::string reasoning;
  std::string content;
  std::vector<ToolCall> tool_calls;
  FinishReason finish = FinishReason::kNone;
  int32_t reasoning_tokens = 0;
};

/// The single-sequence loop: prefill `prompt`, then sample / decode until the stream finishes. `on_step`
/// (optional) sees every step as it is produced.
GenerationResult generate(Model& model, const BpeTokenizer* tokenizer, std::span<const int32_t> prompt,
                          const GenerationOptions& options,
                          const std::function<void(const GenerationStep&)>& on_step = {});

}  // namespace dsv4
