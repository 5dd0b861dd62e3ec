// `dsv4 generate`: one request through the shared generation logic (runtime/engine/generator.h) and the
// Engine, streamed to stdout. Chat prompts need a tokenizer; --prompt-tokens takes raw ids (e.g. for the
// vocab-512 test models). Under mpirun (--tp/--ep/--dp or --deployment) every rank loads its shard; the
// prompt runs on DP replica 0 while the other replicas join every step with zero tokens; each TP rank reduces
// its vocabulary shard to sampling candidates, rank 0 merges them, samples and prints.
//
// Output: the reply text as it streams (reasoning between "[reasoning]" and "[content]" markers when the model
// thinks, tool calls as "[tool_call] NAME ARGS"), then "[finish] REASON" and, on stderr-free stdout,
// "[token_ids] a,b,c" when --print-token-ids (what the e2e tests compare with the server's tokens).
#include <charconv>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "launcher/cli/command.h"
#include "launcher/cli/model_job.h"
#include "runtime/core/error.h"
#include "runtime/engine/generator.h"
#include "runtime/serve/server.h"
#include "runtime/tokenizer/dsv4_tokenizer.h"

namespace dsv4::cli {
namespace {

struct GenerateArgs {
  ModelJobArgs job;
  std::string prompt, prompt_tokens, system, thinking = "none";
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

// Rank 0 drives the sequence with StepPlans (prefill, then one decode token per step) that every rank runs
// through its Engine, exactly like the server's loop: the same tokens as the server for the same request.
void run_generate(const GenerateArgs& a) {
  DSV4_CHECK_ARG(a.prompt.empty() != a.prompt_tokens.empty()) << "give exactly one of --prompt and --prompt-tokens";
  const ThinkingMode mode = parse_thinking_mode(a.thinking);
  std::vector<int32_t> raw_prompt;
  if (!a.prompt_tokens.empty()) raw_prompt = parse_ids(a.prompt_tokens, "--prompt-tokens");
  auto options_for = [&](const ModelConfig& cfg) {
    GenerationOptions opts;
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
    return opts;
  };
  // Checked on every rank before any collective (a bad flag is the same error everywhere, no hang).
  auto precheck = [&](const ModelConfig& cfg) {
    validate(options_for(cfg), cfg.vocab_size);
    if (!raw_prompt.empty()) validate_prompt(raw_prompt, cfg.vocab_size, cfg.max_position_embeddings, nullptr);
  };
  run_model_job(a.job, precheck, [&](ModelJob& job) {
    const BpeTokenizer* tok = job.loaded->tokenizer_or_null();
    const ModelConfig& cfg = job.model().config();
    std::vector<int32_t> prompt = raw_prompt;
    GenerationOptions opts = options_for(cfg);
    if (!a.prompt.empty()) {
      DSV4_CHECK_ARG(tok != nullptr) << "--prompt needs a tokenizer (--tokenizer, or tokenizer.json in "
                                     << a.job.checkpoint << "); use --prompt-tokens for raw ids";
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
    }
    validate_prompt(prompt, cfg.vocab_size, cfg.max_position_embeddings, tok);

    constexpr uint64_t kSequence = 1;
    std::optional<GenerationStream> stream;
    if (job.rank() == 0) {
      stream.emplace(tok, opts, cfg.vocab_size, static_cast<int64_t>(prompt.size()), cfg.max_position_embeddings);
    }
    bool in_reasoning = false, in_content = false;
    GenerationResult result;
    int64_t position = 0, state_bytes = 0;
    std::vector<int32_t> feed = prompt;
    v1::StepPlan plan;
    for (uint64_t step = 0;; ++step) {
      // The prompt runs on replica 0; the other replicas join each step with no work of their own.
      if (job.rank() == 0) {
        plan.Clear();
        plan.set_step_id(step);
        if (feed.empty()) {
          plan.add_free_sequences(kSequence);
          plan.set_shutdown(true);
        } else {
          v1::SequenceWork* w = plan.add_work();
          w->set_sequence_id(kSequence);
          w->set_start_position(position);
          w->mutable_token_ids()->Add(feed.begin(), feed.end());
          w->set_sample(true);
          w->set_dp_rank(0);
          w->set_cp_group(-1);
          *plan.add_sampling() = sampling_plan_of(kSequence, opts.sampling);
          plan.mutable_sampling(0)->set_step(step);
        }
      }
      serve::broadcast_plan(*job.bootstrap, plan);
      if (plan.shutdown()) {
        state_bytes = job.engine->state_bytes();
        job.engine->step(plan);
        break;
      }
      std::vector<SampledCandidates> sampled =
          job.engine->step(plan, [&](uint64_t, const MergedCandidates& merged, int32_t count, bool all_in) {
            return stream->candidates_suffice(merged, count, all_in);
          });
      position += plan.work(0).token_ids_size();
      feed.clear();
      if (job.rank() != 0) continue;
      DSV4_CHECK(sampled.size() == 1 && sampled[0].sequence_id == kSequence) << "generate: no candidates sampled";
      GenerationStep gs = stream->step(sampled[0].candidates);
      result.reasoning += gs.reasoning_delta;
      result.content += gs.content_delta;
      if (!gs.reasoning_delta.empty()) {
        if (!in_reasoning) std::cout << "[reasoning]\n";
        in_reasoning = true;
        std::cout << gs.reasoning_delta;
      }
      if (!gs.content_delta.empty()) {
        if (in_reasoning && !in_content) std::cout << "\n[content]\n";
        in_content = true;
        std::cout << gs.content_delta;
      }
      for (const ToolCall& call : gs.tool_calls) std::cout << "\n[tool_call] " << call.name << " " << call.arguments;
      if (tok == nullptr && gs.token >= 0) std::cout << gs.token << " ";
      for (const TokenLogprob& lp : gs.top_logprobs) std::cerr << "[logprob] " << lp.id << " " << lp.logprob << "\n";
      std::cout.flush();
      if (!stream->finished()) feed.push_back(gs.token);
    }
    if (job.world->size() > 1) log_rank_memory(*job.loaded, state_bytes);
    if (job.rank() != 0) return;
    std::cout << "\n[finish] " << finish_reason_name(stream->finish_reason()) << " (" << prompt.size()
              << " prompt tokens, " << stream->tokens().size() << " generated)\n";
    if (a.print_token_ids) std::cout << "[token_ids] " << join_ids(stream->tokens()) << "\n";
  });
}

void setup(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand("generate", "Generate a reply and stream it to stdout (under mpirun: sharded by --tp/--ep/--dp)");
  cmd->add_option("--checkpoint", a->job.checkpoint, "checkpoint directory")->required();
  cmd->add_option("--tokenizer", a->job.tokenizer, "tokenizer.json (default: the checkpoint's, if any)");
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
  add_model_job_options(cmd, a->job);
  cmd->add_flag("--print-token-ids", a->print_token_ids, "print the generated ids at the end");
  cmd->callback([a] { run_generate(*a); });
}

}  // namespace
DSV4_REGISTER_COMMAND(generate, setup);

}  // namespace dsv4::cli
