// Validation of Generate / Tokenize requests: every malformed request becomes Error(kInvalidArgument) with a
// message naming the field, before anything is queued (the server maps it to INVALID_ARGUMENT).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dsv4/v1/inference.pb.h"
#include "runtime/config/model_config.h"
#include "runtime/engine/generator.h"
#include "runtime/tokenizer/bpe.h"
#include "runtime/tokenizer/chat_encoding.h"

namespace dsv4::serve {

/// Context the thinking mode "max" needs (spec §8.2: 384K tokens).
inline constexpr int64_t kThinkingMaxContext = 393216;

struct RequestLimits {
  /// Longest prompt accepted (tokens); 0 = the model's context minus one.
  int64_t max_prompt_tokens = 0;
};

/// A request ready to queue.
struct ValidatedRequest {
  std::vector<int32_t> prompt;
  GenerationOptions options;
  std::vector<std::string> warnings;
};

/// Proto chat -> ChatRequest (roles, tool calls, tool schemas). Tools are declared on the first message,
/// which must be system or developer (an empty system message is put first otherwise).
ChatRequest chat_from_proto(const v1::ChatPrompt& chat);

/// Validates everything and renders / tokenizes the prompt. `tokenizer` may be null (only token prompts work).
ValidatedRequest validate_generate_request(const v1::GenerateRequest& request, const ModelConfig& config,
                                           const BpeTokenizer* tokenizer, const RequestLimits& limits);

}  // namespace dsv4::serve
