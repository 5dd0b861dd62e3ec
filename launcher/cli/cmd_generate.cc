// `dsv4 generate`: one request through the shared generation loop (runtime/engine/generator.h), streamed to
// stdout. Chat prompts need a tokenizer; --prompt-tokens takes raw ids (e.g. for the vocab-512 test models).
//
// Output: the reply text as it streams (reasoning between "[reasoning]" and "[content]" markers when the model
// thinks, tool calls as "[tool_call] NAME ARGS"), then "[finish] REASON" and, on stderr-free stdout,
// "[token_ids] a,b,c" when --print-token-ids (what the e2e tests compare with the server's tokens).
#include <charconv>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "launcher/cli/command.h"
#include "runtime/core/env.h"
#include "runtime/core/error.h"
#include "runtime/engine/generator.h"
#include "runtime/engine/loaded_model.h"
#include "runtime/tokenizer/dsv4_tokenizer.h"

namespace dsv4::cli {
namespace {

struct GenerateArgs {
  std::string checkpoint, tokenizer, prompt, prompt_tokens, system, thinking = "none", numerics;
  int32_t max_tokens = 64;
  float temperature = 1.0f, top_p = 1.0f, min_p = 0.0f;
  int32_t top_k = 0, top_logprobs = 0;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_ids;
  bool print_token_ids = false;
};

std::vector<int32_t> parse_ids(const std::string& text, const char* flag) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    const std::string item = text.substr(pos, comma - pos);
    int64_t v = 0;
    auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    DSV4_CHECK_ARG(!item.empty() && ec == std::errc() && ptr == item.data() + item.size() && v >= INT32_MIN &&
                   v <= INT32_MAX)
        << flag << ": '" << item << "' is not a token id";
    ids.push_back(static_cast<int32_t>(v));
    pos = comma + 1;
  }
  return ids;
}

std::string join_ids(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

void run_generate(const GenerateArgs& a) {
  DSV4_CHECK_ARG(a.prompt.empty() != a.prompt_tokens.empty()) << "give exactly one of --prompt and --prompt-tokens";
  const ThinkingMode mode = parse_thinking_mode(a.thinking);
  const Numerics numerics = parse_numerics(a.numerics.empty() ? env::get_string(env::kNumerics) : a.numerics);
  std::unique_ptr<LoadedModel> loaded = load_model(a.checkpoint, a.tokenizer, numerics);
  const BpeTokenizer* tok = loaded->tokenizer_or_null();
  const ModelConfig& cfg = loaded->model->config();

  std::vector<int32_t> prompt;
  GenerationOptions opts;
  if (!a.prompt.empty()) {
    DSV4_CHECK_ARG(tok != nullptr) << "--prompt needs a tokenizer (--tokenizer, or tokenizer.json in "
                                   << a.checkpoint << "); use --prompt-tokens for raw ids";
    ChatRequest chat;
    ChatMessage message;
    if (!a.system.empty()) {
      message.role = "system";
      message.content = a.system;
      chat.messages.push_back(message);
    }
    message.role = "user";
    message.content = a.prompt;
    chat.messages.push_back(message);
    prompt = encode_chat_prompt(*tok, chat, mode);
    opts.thinking = mode != ThinkingMode::kNone;
  } else {
    prompt = parse_ids(a.prompt_tokens, "--prompt-tokens");
  }
  opts.sampling.temperature = a.temperature;
  opts.sampling.top_p = a.top_p;
  opts.sampling.top_k = a.top_k;
  opts.sampling.min_p = a.min_p;
  opts.sampling.seed = a.seed;
  opts.sampling.top_logprobs = a.top_logprobs;
  opts.sampling.stop_token_ids = a.stop_ids;
  opts.sampling.stop_token_ids.push_back(static_cast<int32_t>(cfg.eos_token_id));
  opts.max_tokens = a.max_tokens;
  opts.stop_strings = a.stop;

  bool in_reasoning = false, in_content = false;
  GenerationResult result = generate(*loaded->model, tok, prompt, opts, [&](const GenerationStep& step) {
    if (!step.reasoning_delta.empty()) {
      if (!in_reasoning) std::cout << "[reasoning]\n";
      in_reasoning = true;
      std::cout << step.reasoning_delta;
    }
    if (!step.content_delta.empty()) {
      if (in_reasoning && !in_content) std::cout << "\n[content]\n";
      in_content = true;
      std::cout << step.content_delta;
    }
    for (const ToolCall& call : step.tool_calls) std::cout << "\n[tool_call] " << call.name << " " << call.arguments;
    if (tok == nullptr && step.token >= 0) std::cout << step.token << " ";
    for (const TokenLogprob& lp : step.top_logprobs) std::cerr << "[logprob] " << lp.id << " " << lp.logprob << "\n";
    std::cout.flush();
  });
  std::cout << "\n[finish] " << finish_reason_name(result.finish) << " (" << prompt.size() << " prompt tokens, "
            << result.tokens.size() << " generated)\n";
  if (a.print_token_ids) std::cout << "[token_ids] " << join_ids(result.tokens) << "\n";
}

void setup(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand("generate", "Generate a reply on the CPU model and stream it to stdout");
  cmd->add_option("--checkpoint", a->checkpoint, "checkpoint directory")->required();
  cmd->add_option("--tokenizer", a->tokenizer, "tokenizer.json (default: the checkpoint's, if any)");
  cmd->add_option("--prompt", a->prompt, "user message (rendered with the DSV4 chat template)");
  cmd->add_option("--system", a->system, "system message");
  cmd->add_option("--prompt-tokens", a->prompt_tokens, "raw prompt token ids, comma-separated");
  cmd->add_option("--thinking", a->thinking, "none|high|max");
  cmd->add_option("--max-tokens", a->max_tokens, "tokens to generate at most");
  cmd->add_option("--temperature", a->temperature, "0 = greedy");
  cmd->add_option("--top-p", a->top_p, "nucleus mass in (0, 1]");
  cmd->add_option("--top-k", a->top_k, "0 = off");
  cmd->add_option("--min-p", a->min_p, "0 = off");
  cmd->add_option("--seed", a->seed, "sampling seed");
  cmd->add_option("--top-logprobs", a->top_logprobs, "print this many top logprobs per token to stderr");
  cmd->add_option("--stop", a->stop, "stop string (repeatable)");
  cmd->add_option("--stop-token-id", a->stop_ids, "stop token id besides EOS (repeatable)");
  cmd->add_option("--numerics", a->numerics, "plain|reference (default: DSV4_NUMERICS)");
  cmd->add_flag("--print-token-ids", a->print_token_ids, "print the generated ids at the end");
  cmd->callback([a] { run_generate(*a); });
}

}  // namespace
DSV4_REGISTER_COMMAND(generate, setup);

}  // namespace dsv4::cli
