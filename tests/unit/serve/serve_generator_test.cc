// The shared generation loop (runtime/engine/generator.h) and Engine::step on the golden-a test model
// (vocab 512, no tokenizer), plus text handling on the real tokenizer with forced logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "runtime/checkpoint/checkpoint.h"
#include "runtime/core/error.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/generator.h"
#include "runtime/engine/loaded_model.h"
#include "runtime/serve/scheduler.h"
#include "runtime/tokenizer/dsv4_tokenizer.h"
#include "tests/support/test_paths.h"

namespace dsv4 {
namespace {

LoadedModel& golden_a() {
  static std::unique_ptr<LoadedModel> loaded =
      load_model(testing::source_dir() / "tests/golden/model/golden-a", "", Numerics::kPlain);
  return *loaded;
}

int32_t argmax(const float* row, int64_t n) {
  return static_cast<int32_t>(std::max_element(row, row + n) - row);  // first maximum = lowest id on ties
}

GenerationOptions greedy(int32_t max_tokens) {
  GenerationOptions o;
  o.sampling.temperature = 0.0f;
  o.max_tokens = max_tokens;
  return o;
}

const std::vector<int32_t> kPrompt = {0, 370, 40, 264, 276, 222, 268, 446};

TEST(ServeGenerator, GreedyEqualsArgmaxOfRepeatedPrefill) {
  Model& model = *golden_a().model;
  const int64_t vocab = model.config().vocab_size;
  GenerationResult r = generate(model, nullptr, kPrompt, greedy(6));
  EXPECT_EQ(r.finish, FinishReason::kLength);
  ASSERT_EQ(r.tokens.size(), 6u);
  // By hand: a fresh prefill of the whole context each time, argmax of its last row.
  std::vector<int32_t> context = kPrompt;
  for (size_t i = 0; i < 6; ++i) {
    SequenceState state = model.new_sequence();
    Tensor logits = model.prefill(state, context);
    const int32_t want = argmax(static_cast<const float*>(logits.data()) + (context.size() - 1) * vocab, vocab);
    EXPECT_EQ(r.tokens[i], want) << "token " << i;
    context.push_back(want);
  }
}

TEST(ServeGenerator, StopTokenEndsWithStopAndSameSeedSameTokens) {
  Model& model = *golden_a().model;
  GenerationResult full = generate(model, nullptr, kPrompt, greedy(5));
  GenerationOptions o = greedy(5);
  o.sampling.stop_token_ids = {full.tokens[1]};
  GenerationResult stopped = generate(model, nullptr, kPrompt, o);
  const size_t first = static_cast<size_t>(std::find(full.tokens.begin(), full.tokens.end(), full.tokens[1]) -
                                           full.tokens.begin());
  EXPECT_EQ(stopped.finish, FinishReason::kStop);
  EXPECT_EQ(stopped.tokens, std::vector<int32_t>(full.tokens.begin(), full.tokens.begin() + first + 1));

  GenerationOptions sampled;
  sampled.sampling.temperature = 1.0f;
  sampled.sampling.seed = 1234;
  sampled.sampling.top_logprobs = 3;
  sampled.max_tokens = 8;
  std::vector<GenerationStep> steps;
  GenerationResult a = generate(model, nullptr, kPrompt, sampled, [&](const GenerationStep& s) { steps.push_back(s); });
  GenerationResult b = generate(model, nullptr, kPrompt, sampled);
  EXPECT_EQ(a.tokens, b.tokens);
  ASSERT_EQ(steps.size(), a.tokens.size());
  for (const GenerationStep& s : steps) {
    ASSERT_EQ(s.top_logprobs.size(), 3u);
    EXPECT_GE(s.top_logprobs[0].logprob, s.top_logprobs[1].logprob);
    EXPECT_LE(s.logprob, 0.0f);
  }
}

TEST(ServeGenerator, BadInputIsRejected) {
  Model& model = *golden_a().model;
  auto code_of = [&](std::vector<int32_t> prompt, GenerationOptions o) {
    try {
      generate(model, nullptr, prompt, o);
    } catch (const Error& e) {
      return e.code();
    }
    return ErrorCode::kInternal;
  };
  EXPECT_EQ(code_of({}, greedy(2)), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of({0, 512}, greedy(2)), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of({0, -1}, greedy(2)), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of(kPrompt, greedy(0)), ErrorCode::kInvalidArgument);
  GenerationOptions o = greedy(2);
  o.sampling.temperature = -1.0f;
  EXPECT_EQ(code_of(kPrompt, o), ErrorCode::kInvalidArgument);
  o = greedy(2);
  o.sampling.top_p = 0.0f;
  EXPECT_EQ(code_of(kPrompt, o), ErrorCode::kInvalidArgument);
  o = greedy(2);
  o.sampling.stop_token_ids = {600};
  EXPECT_EQ(code_of(kPrompt, o), ErrorCode::kInvalidArgument);
  o = greedy(2);
  o.stop_strings = {""};
  EXPECT_EQ(code_of(kPrompt, o), ErrorCode::kInvalidArgument);
}

// Continuous batching must not change any sequence's tokens: several requests of different lengths through
// the Scheduler + Engine (chunked prefill mixed with decode) equal each request generated alone.
TEST(ServeGenerator, BatchedEngineEqualsGenerateAlone) {
  Model& model = *golden_a().model;
  const int64_t vocab = model.config().vocab_size;
  std::map<uint64_t, std::vector<int32_t>> prompts = {
      {1, kPrompt}, {2, {0, 5, 9}}, {3, {0, 100, 200, 300, 400, 500, 17, 18, 19, 20, 21}}, {4, {0}}};
  std::map<uint64_t, int32_t> max_new = {{1, 5}, {2, 7}, {3, 3}, {4, 6}};
  serve::Scheduler sched({.state_budget_bytes = 1 << 30, .max_step_tokens = 6, .max_running = 3,
                          .max_prefill_chunk = 4},
                         [](int64_t t) { return t; });
  Engine engine(model);
  std::map<uint64_t, GenerationStream> streams;
  for (auto& [id, p] : prompts) {
    sched.enqueue(id, p, max_new[id]);
    streams.emplace(id, GenerationStream(nullptr, greedy(max_new[id]), vocab, static_cast<int64_t>(p.size()), 0));
  }
  for (int step = 0; step < 100 && !sched.idle(); ++step) {
    for (SampledCandidates& s : engine.step(sched.next_plan())) {
      GenerationStream& stream = streams.at(s.sequence_id);
      GenerationStep g = stream.step(s.candidates);
      sched.on_sampled(s.sequence_id, g.token, stream.finished());
    }
  }
  ASSERT_TRUE(sched.idle());
  engine.step(sched.next_plan());  // the last frees
  EXPECT_EQ(engine.num_sequences(), 0u);
  for (auto& [id, p] : prompts) {
    GenerationResult alone = generate(model, nullptr, p, greedy(max_new[id]));
    EXPECT_EQ(streams.at(id).tokens(), alone.tokens) << "request " << id;
  }
}

TEST(ServeGenerator, EngineRejectsPlansThatDisagreeWithItsState) {
  Engine engine(*golden_a().model);
  v1::StepPlan plan;
  auto* w = plan.add_work();
  w->set_sequence_id(7);
  w->set_start_position(3);  // unknown sequence not starting at 0
  w->add_token_ids(1);
  EXPECT_THROW(engine.step(plan), Error);
}

// Text handling with the real tokenizer: logits that force a chosen token each step.
class ForcedText : public ::testing::Test {
 protected:
  static const BpeTokenizer& tok() {
    static BpeTokenizer t = load_dsv4_tokenizer(testing::shared_dir() / "data/deepseek-v3-tokenizer/tokenizer.json");
    return t;
  }
  static std::vector<float> forcing(int32_t id) {
    std::vector<float> logits(dsv4_tokens::kVocabSize, 0.0f);
    logits[static_cast<size_t>(id)] = 100.0f;
    return logits;
  }
  // Runs the stream over `ids` (then EOS if it has not finished), concatenating its output.
  static GenerationResult run(const std::vector<int32_t>& ids, GenerationOptions o) {
    o.sampling.temperature = 0.0f;
    o.sampling.stop_token_ids.push_back(dsv4_tokens::kEos);
    GenerationStream s(&tok(), o, dsv4_tokens::kVocabSize, 1, 0);
    GenerationResult r;
    std::vector<int32_t> all = ids;
    all.push_back(dsv4_tokens::kEos);
    for (int32_t id : all) {
      if (s.finished()) break;
      GenerationStep g = s.step(forcing(id));
      r.reasoning += g.reasoning_delta;
      r.content += g.content_delta;
      r.tool_calls.insert(r.tool_calls.end(), g.tool_calls.begin(), g.tool_calls.end());
    }
    r.tokens = s.tokens();
    r.finish = s.finish_reason();
    r.reasoning_tokens = s.reasoning_tokens();
    return r;
  }
};

TEST_F(ForcedText, ContentAndStopStrings) {
  const std::vector<int32_t> ids = tok().encode("Hello world, héllo again", false);
  GenerationOptions o;
  o.max_tokens = 100;
  GenerationResult plain = run(ids, o);
  EXPECT_EQ(plain.content, "Hello world, héllo again");
  EXPECT_EQ(plain.finish, FinishReason::kStop);
  EXPECT_EQ(plain.tokens.size(), ids.size() + 1);
  o.stop_strings = {"llo ag", "zzz"};
  GenerationResult cut = run(ids, o);
  EXPECT_EQ(cut.content, "Hello world, hé");
  EXPECT_EQ(cut.finish, FinishReason::kStop);
  EXPECT_LT(cut.tokens.size(), plain.tokens.size());
  o.stop_strings.clear();
  o.max_tokens = 2;
  GenerationResult len = run(ids, o);
  EXPECT_EQ(len.finish, FinishReason::kLength);
  EXPECT_EQ(len.content, tok().decode(std::vector<int32_t>(ids.begin(), ids.begin() + 2)));
}

TEST_F(ForcedText, ThinkingSplitsReasoningAndContent) {
  std::vector<int32_t> ids = tok().encode("Let me think.", false);
  ids.push_back(dsv4_tokens::kThinkEnd);
  const std::vector<int32_t> answer = tok().encode("The answer is 4.", false);
  ids.insert(ids.end(), answer.begin(), answer.end());
  GenerationOptions o;
  o.thinking = true;
  GenerationResult r = run(ids, o);
  EXPECT_EQ(r.reasoning, "Let me think.");
  EXPECT_EQ(r.content, "The answer is 4.");
  EXPECT_EQ(r.finish, FinishReason::kStop);
  EXPECT_EQ(r.reasoning_tokens, static_cast<int32_t>(ids.size() - answer.size()));  // text + </think>
}

TEST_F(ForcedText, ToolCallsEndWithToolCallsReason) {
  const std::string text =
      "Checking.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"
      "<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
      "</｜DSML｜tool_calls>";
  GenerationResult r = run(tok().encode(text, true), GenerationOptions{});
  EXPECT_EQ(r.content, "Checking.");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].name, "get_weather");
  EXPECT_NE(r.tool_calls[0].arguments.find("Paris"), std::string::npos);
  EXPECT_EQ(r.finish, FinishReason::kToolCalls);
}

}  // namespace
}  // namespace dsv4
