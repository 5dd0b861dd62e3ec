// Validation of Generate / Tokenize requests: every malformed request becomes Error(kInvalidArgument) with a
// message naming the field, before anything is queued (the server maps it to INVALID_ARGUMENT).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <google/protobuf/descriptor.h>

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

/// Offset of the first byte of `text` that does not start or continue a well-formed UTF-8 sequence (overlong
/// forms, surrogates and code points above U+10FFFF are ill-formed, as in protobuf's own check), or
/// std::string_view::npos when `text` is valid UTF-8.
size_t utf8_invalid_offset(std::string_view text);

/// Why `wire` could not be parsed as a `type` message. proto3 `string` fields must hold valid UTF-8 and protobuf
/// refuses the whole message otherwise, without saying where; this walks the wire format guided by `type`'s
/// descriptor and names the first such field with its path and byte offset, e.g. "chat.messages[1].content is
/// not valid UTF-8: byte 3 (0xc3) does not start a complete sequence". When every string is valid, the bytes
/// are malformed protobuf and the message says so.
std::string describe_parse_failure(const google::protobuf::Descriptor& type, std::string_view wire);

/// Proto chat -> ChatRequest (roles, tool calls, tool schemas). Tools are declared on the first message,
/// which must be system or developer (an empty system message is put first otherwise).
ChatRequest chat_from_proto(const v1::ChatPrompt& chat);

/// Validates everything and renders / tokenizes the prompt. `tokenizer` may be null (only token prompts work).
ValidatedRequest validate_generate_request(const v1::GenerateRequest& request, const ModelConfig& config,
                                           const BpeTokenizer* tokenizer, const RequestLimits& limits);

}  // namespace dsv4::serve
