// dsv4-server end to end on loopback: streaming, equality with `dsv4 generate`, concurrency, cancellation,
// Abort, bad requests, auth, metrics and the SIGTERM drain. The model is golden-a (vocab 512, no tokenizer),
// so prompts are raw token ids; chat-structure errors are still checked (they are validated first).
#include <gtest/gtest.h>

#include <signal.h>

#include <cstdlib>
#include <fstream>
#include <future>
#include <map>
#include <sstream>
#include <thread>

#include "tests/e2e/serve_e2e_support.h"
#include "tests/support/test_paths.h"

namespace dsv4::testing {
namespace {

const char* kToken = "s3cret-token";

std::string golden_a() { return (source_dir() / "tests/golden/model/golden-a").string(); }

class ServeE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    token_file_ = (scratch_dir("serve_e2e_token") / "token").string();
    std::ofstream(token_file_) << kToken << "\n";
    // Room for the 64 concurrent requests below: 32 run at once (so the queue is exercised too), chunked
    // prefill mixed with decode.
    server_ = new ServerProcess(golden_a(), {"--auth-token-file", token_file_, "--max-prompt-tokens", "64",
                                             "--max-running", "32", "--max-step-tokens", "64",
                                             "--max-prefill-chunk", "8", "--max-concurrent-requests", "80"});
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  std::unique_ptr<v1::Inference::Stub> stub() {
    return v1::Inference::NewStub(grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }
  std::string metrics() { return http_get_metrics(server_->metrics_port()); }
  // Waits until the engine holds no sequence state (the metrics gauge), up to 10 s.
  bool wait_engine_empty() {
    for (int i = 0; i < 200; ++i) {
      if (metric_value(metrics(), "dsv4_engine_sequences") == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  static inline ServerProcess* server_ = nullptr;
  static inline std::string token_file_;
};

const std::vector<int32_t> kPrompt = {0, 370, 40, 264, 276, 222, 268, 446};

// The value of a metric once it reaches `want` (polled for up to 10 s: the server counts a request just after
// its stream's final status went out, so a client can see the end first), else its last value.
double wait_metric(int metrics_port, const std::string& name, double want) {
  double value = -1;
  for (int i = 0; i < 200; ++i) {
    value = metric_value(http_get_metrics(metrics_port), name);
    if (value == want) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return value;
}

// `n` requests of mixed prompt lengths (3 to 40 tokens) and output lengths (1 to 12 tokens), alternately greedy
// and seeded sampling: short outputs keep 64 of them cheap on golden-a.
std::vector<v1::GenerateRequest> mixed_requests(int n) {
  std::vector<v1::GenerateRequest> reqs;
  for (int i = 0; i < n; ++i) {
    std::vector<int32_t> prompt = {0};
    for (int j = 0; j < 2 + (i * 7) % 38; ++j) prompt.push_back((i * 31 + j * 17) % 512);
    v1::GenerateRequest r = token_request(prompt, 1 + (i * 5) % 12, i % 2 ? 0.8f : 0.0f, 1000 + i);
    r.set_request_id("mixed-" + std::to_string(i));
    reqs.push_back(std::move(r));
  }
  return reqs;
}

// Serves every request alone (one after the other), then all at once from their own channels, and checks
// that each concurrent stream is complete (status OK, one token per message, the final usage) and carries
// exactly the tokens of the same request served alone. Returns the number of concurrent streams that passed.
int expect_concurrent_equals_alone(const std::string& address, const std::vector<v1::GenerateRequest>& reqs,
                                   const std::string& token) {
  auto channel_stub = [&] {
    return v1::Inference::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  };
  std::vector<StreamResult> alone;
  auto s = channel_stub();
  for (const auto& r : reqs) alone.push_back(generate(*s, r, token));
  std::vector<std::future<StreamResult>> together;
  for (const auto& r : reqs) {
    together.push_back(std::async(std::launch::async, [&channel_stub, &token, r] {
      auto own = channel_stub();
      return generate(*own, r, token);
    }));
  }
  int complete = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    StreamResult t = together[i].get();
    EXPECT_TRUE(alone[i].status.ok()) << "request " << i << " alone: " << alone[i].status.error_message();
    EXPECT_TRUE(t.status.ok()) << "request " << i << ": " << t.status.error_message();
    if (!t.status.ok() || !alone[i].status.ok()) continue;
    EXPECT_EQ(t.tokens, alone[i].tokens) << "request " << i;
    EXPECT_EQ(t.finish, alone[i].finish) << "request " << i;
    EXPECT_NE(t.finish, v1::FINISH_REASON_UNSPECIFIED) << "request " << i << " has no final message";
    EXPECT_EQ(t.messages.size(), t.tokens.size()) << "request " << i;
    EXPECT_EQ(t.messages.back().usage().completion_tokens(), static_cast<int>(t.tokens.size())) << "request " << i;
    EXPECT_EQ(t.messages.front().request_id(), reqs[i].request_id());
    if (t.tokens == alone[i].tokens && t.finish == alone[i].finish) ++complete;
  }
  return complete;
}

TEST_F(ServeE2E, StreamsTokensWithFinalUsage) {
  auto s = stub();
  v1::GenerateRequest req = token_request(kPrompt, 6);
  req.set_request_id("stream-1");
  req.set_include_prompt_token_ids(true);
  req.set_top_logprobs(2);
  StreamResult r = generate(*s, req, kToken);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.tokens.size(), 6u);
  EXPECT_EQ(r.messages.size(), 6u) << "one message per token";
  EXPECT_EQ(r.finish, v1::FINISH_LENGTH);
  EXPECT_EQ(r.messages.front().prompt_token_ids_size(), static_cast<int>(kPrompt.size()));
  EXPECT_EQ(r.messages.front().request_id(), "stream-1");
  EXPECT_EQ(r.messages.front().logprobs_size(), 1);
  EXPECT_EQ(r.messages.front().logprobs(0).top_size(), 2);
  const v1::GenerateResponse& last = r.messages.back();
  EXPECT_EQ(last.usage().prompt_tokens(), static_cast<int>(kPrompt.size()));
  EXPECT_EQ(last.usage().completion_tokens(), 6);
  EXPECT_GT(last.timing().total_seconds(), 0.0);
}

TEST_F(ServeE2E, GreedyEqualsDsv4Generate) {
  auto s = stub();
  StreamResult r = generate(*s, token_request(kPrompt, 8), kToken);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  std::string ids;
  for (size_t i = 0; i < kPrompt.size(); ++i) ids += (i ? "," : "") + std::to_string(kPrompt[i]);
  std::string out;
  const int rc = run_command(dsv4_bin().string() + " generate --checkpoint " + golden_a() + " --numerics plain" +
                                 " --temperature 0 --max-tokens 8 --print-token-ids --prompt-tokens " + ids,
                             &out);
  ASSERT_EQ(rc, 0) << out;
  std::string want;
  for (size_t i = 0; i < r.tokens.size(); ++i) want += (i ? "," : "") + std::to_string(r.tokens[i]);
  EXPECT_NE(out.find("[token_ids] " + want + "\n"), std::string::npos) << out << "\nserver: " << want;
}

// Both real clients stream the same greedy tokens as the C++ stub.
TEST_F(ServeE2E, CppAndPythonClientsStreamTheSameTokens) {
  auto s = stub();
  StreamResult r = generate(*s, token_request(kPrompt, 5), kToken);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  std::string ids, want;
  for (size_t i = 0; i < kPrompt.size(); ++i) ids += (i ? "," : "") + std::to_string(kPrompt[i]);
  for (size_t i = 0; i < r.tokens.size(); ++i) want += (i ? "," : "") + std::to_string(r.tokens[i]);
  const std::string args = " --address " + server_->address() + " --token " + kToken +
                           " --temperature 0 --max-tokens 5 --print-token-ids --prompt-tokens " + ids;
  std::string out;
  ASSERT_EQ(run_command(dsv4_bin().string() + " client" + args, &out), 0) << out;
  EXPECT_NE(out.find("[finish] length"), std::string::npos) << out;
  EXPECT_NE(out.find("[token_ids] " + want + "\n"), std::string::npos) << out;
  // Unauthenticated: gRPC code 16 -> exit status 116.
  EXPECT_EQ(run_command(dsv4_bin().string() + " client --address " + server_->address() + " --prompt-tokens 0,1", &out),
            116)
      << out;

  std::string probe;
  if (run_command("/usr/bin/python3 -c 'import grpc, google.protobuf' && command -v protoc", &probe) != 0) {
    GTEST_SKIP() << "system python3 without grpc / protobuf or no protoc: " << probe;
  }
  ASSERT_EQ(run_command("/usr/bin/python3 " + (source_dir() / "scripts/examples/client.py").string() + args, &out), 0)
      << out;
  EXPECT_NE(out.find("[finish] FINISH_LENGTH"), std::string::npos) << out;
  EXPECT_NE(out.find("[token_ids] " + want + "\n"), std::string::npos) << out;
}

// 64 concurrent streams of mixed lengths through a 32-sequence batch: every one finishes with exactly the
// tokens of the same request alone (greedy and seeded sampling, bitwise), and none is lost (the server counts
// 128 successful requests: 64 alone + 64 together).
TEST_F(ServeE2E, SixtyFourConcurrentRequestsEqualTheSameRequestAlone) {
  constexpr int kRequests = 64;
  const double ok_before = std::max(0.0, metric_value(metrics(), "dsv4_requests_total{outcome=\"ok\"}"));
  EXPECT_EQ(expect_concurrent_equals_alone(server_->address(), mixed_requests(kRequests), kToken), kRequests);
  EXPECT_EQ(wait_metric(server_->metrics_port(), "dsv4_requests_total{outcome=\"ok\"}", ok_before + 2 * kRequests),
            ok_before + 2 * kRequests);
  EXPECT_TRUE(wait_engine_empty());
  EXPECT_EQ(metric_value(metrics(), "dsv4_state_bytes_reserved"), 0);
}

TEST_F(ServeE2E, CancellationAndAbortFreeState) {
  const double cancelled_before = std::max(0.0, metric_value(metrics(), "dsv4_requests_total{outcome=\"cancelled\"}"));
  {
    auto s = stub();
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    auto reader = s->Generate(&ctx, token_request(kPrompt, 400));
    v1::GenerateResponse m;
    ASSERT_TRUE(reader->Read(&m));
    ASSERT_TRUE(reader->Read(&m));
    ctx.TryCancel();
    while (reader->Read(&m)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  EXPECT_TRUE(wait_engine_empty()) << metrics();
  for (int i = 0; i < 100 && metric_value(metrics(), "dsv4_requests_total{outcome=\"cancelled\"}") <= cancelled_before; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(metric_value(metrics(), "dsv4_requests_total{outcome=\"cancelled\"}"), cancelled_before + 1);

  auto s = stub();
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
  v1::GenerateRequest req = token_request(kPrompt, 400);
  req.set_request_id("abort-me");
  auto reader = s->Generate(&ctx, req);
  v1::GenerateResponse m;
  ASSERT_TRUE(reader->Read(&m));
  {
    grpc::ClientContext actx;
    actx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    v1::AbortRequest areq;
    areq.set_request_id("abort-me");
    v1::AbortResponse aresp;
    ASSERT_TRUE(s->Abort(&actx, areq, &aresp).ok());
    EXPECT_TRUE(aresp.found());
  }
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  int messages = 1;
  while (reader->Read(&m)) {
    ++messages;
    if (m.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) finish = m.finish_reason();
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(finish, v1::FINISH_ABORTED);
  EXPECT_LT(messages, 400);
  EXPECT_TRUE(wait_engine_empty()) << metrics();
  EXPECT_EQ(metric_value(metrics(), "dsv4_state_bytes_reserved"), 0);
  // An unknown id is not found.
  grpc::ClientContext actx;
  actx.AddMetadata("authorization", std::string("Bearer ") + kToken);
  v1::AbortRequest areq;
  areq.set_request_id("no-such-request");
  v1::AbortResponse aresp;
  ASSERT_TRUE(s->Abort(&actx, areq, &aresp).ok());
  EXPECT_FALSE(aresp.found());
}

TEST_F(ServeE2E, BadRequestsAreInvalidArgumentWhileAGoodOneCompletes) {
  auto good = std::async(std::launch::async, [this] {
    auto s = stub();
    return generate(*s, token_request(kPrompt, 30), kToken);
  });
  std::vector<std::pair<std::string, v1::GenerateRequest>> bad;
  {
    v1::GenerateRequest r = token_request(kPrompt, 4);
    r.mutable_chat();  // a chat with no messages
    bad.emplace_back("no messages", r);
  }
  {
    v1::GenerateRequest r = token_request(kPrompt, 4);
    auto* m = r.mutable_chat()->add_messages();
    m->set_role(static_cast<v1::Role>(42));
    m->set_content("hi");
    bad.emplace_back("unknown role", r);
  }
  {
    v1::GenerateRequest r = token_request(kPrompt, 4);
    r.mutable_chat()->add_messages()->set_role(v1::ROLE_UNSPECIFIED);
    bad.emplace_back("unspecified role", r);
  }
  {
    v1::GenerateRequest r = token_request(kPrompt, 4);
    auto* m = r.mutable_chat()->add_messages();
    m->set_role(v1::ROLE_USER);
    m->set_content("weather?");
    auto* t = r.mutable_chat()->add_tools();
    t->set_name("get_weather");
    t->set_parameters_json_schema("{\"type\": \"object\", ");
    bad.emplace_back("malformed tool schema", r);
  }
  bad.emplace_back("max_tokens 0", token_request(kPrompt, 0));
  bad.emplace_back("max_tokens -3", token_request(kPrompt, -3));
  bad.emplace_back("temperature < 0", token_request(kPrompt, 4, -0.5f));
  {
    v1::GenerateRequest r = token_request(kPrompt, 4);
    r.mutable_sampling()->set_top_p(0.0f);
    bad.emplace_back("top_p 0", r);
    r.mutable_sampling()->set_top_p(1.5f);
    bad.emplace_back("top_p 1.5", r);
  }
  bad.emplace_back("token id 512", token_request({0, 512}, 4));
  bad.emplace_back("token id -1", token_request({0, -1}, 4));
  bad.emplace_back("empty prompt", token_request({}, 4));
  bad.emplace_back("no prompt", [] {
    v1::GenerateRequest r;
    r.set_max_tokens(4);
    return r;
  }());
  bad.emplace_back("prompt too long", token_request(std::vector<int32_t>(65, 7), 4));
  {
    v1::GenerateRequest r = token_request(kPrompt, 4);
    r.add_stop_token_ids(9999);
    bad.emplace_back("stop id outside vocab", r);
  }
  {
    v1::GenerateRequest r = token_request(kPrompt, 4);
    auto* m = r.mutable_chat()->add_messages();
    m->set_role(v1::ROLE_USER);
    m->set_content(std::string("caf\xc3", 4));  // a truncated UTF-8 sequence
    bad.emplace_back("invalid UTF-8", r);
  }
  {
    v1::GenerateRequest r = token_request(kPrompt, 4);
    r.add_stop("ok");
    r.add_stop(std::string("\xed\xa0\x80", 3));  // an encoded surrogate
    bad.emplace_back("invalid UTF-8 stop string", r);
  }
  auto s = stub();
  std::map<std::string, std::string> messages;
  for (const auto& [what, req] : bad) {
    StreamResult r = generate(*s, req, kToken);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << what << ": " << r.status.error_message();
    EXPECT_FALSE(r.status.error_message().empty()) << what;
    EXPECT_TRUE(r.messages.empty()) << what;
    messages[what] = r.status.error_message();
  }
  // Invalid UTF-8 is named by field and byte offset (protobuf's own parser would only say "cannot parse").
  EXPECT_EQ(messages["invalid UTF-8"],
            "chat.messages[0].content is not valid UTF-8: byte 3 (0xc3) does not start a complete sequence");
  EXPECT_EQ(messages["invalid UTF-8 stop string"],
            "stop[1] is not valid UTF-8: byte 0 (0xed) does not start a complete sequence");
  StreamResult g = good.get();
  ASSERT_TRUE(g.status.ok()) << g.status.error_message();
  EXPECT_EQ(g.tokens.size(), 30u);
}

TEST_F(ServeE2E, CallsWithoutTheTokenAreUnauthenticated) {
  auto s = stub();
  EXPECT_EQ(generate(*s, token_request(kPrompt, 2), "").status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(generate(*s, token_request(kPrompt, 2), "wrong").status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext ctx;
  v1::ModelInfo info;
  EXPECT_EQ(s->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext ok_ctx;
  ok_ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
  ASSERT_TRUE(s->GetModelInfo(&ok_ctx, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.vocab_size(), 512);
  EXPECT_EQ(info.max_prompt_tokens(), 64);
  EXPECT_EQ(info.layout().world_size(), 1);
}

TEST_F(ServeE2E, MetricsCountRequestsAndTokens) {
  const std::string m = metrics();
  EXPECT_GT(metric_value(m, "dsv4_requests_total{outcome=\"ok\"}"), 0) << m;
  EXPECT_GT(metric_value(m, "dsv4_generated_tokens_total"), 0);
  EXPECT_GT(metric_value(m, "dsv4_prompt_tokens_total"), 0);
  EXPECT_GT(metric_value(m, "dsv4_time_to_first_token_seconds_count"), 0);
  EXPECT_GE(metric_value(m, "dsv4_queue_depth"), 0);
  // One model-time and one overhead observation per serving step, the overhead well below a second.
  const double steps = metric_value(m, "dsv4_scheduler_overhead_seconds_count");
  EXPECT_GT(steps, 0) << m;
  EXPECT_EQ(metric_value(m, "dsv4_step_model_seconds_count"), steps);
  EXPECT_GT(metric_value(m, "dsv4_scheduler_overhead_seconds_sum"), 0);
  EXPECT_LT(metric_value(m, "dsv4_scheduler_overhead_seconds_sum") / steps, 1.0);
  EXPECT_EQ(metric_value(m, "dsv4_scheduler_overhead_seconds_bucket{le=\"+Inf\"}"), steps);
}

// SIGTERM: health turns NOT_SERVING, new requests are refused, the request already running finishes, and the
// process exits 0.
TEST(ServeE2EDrain, SigtermFinishesInFlightAndExitsZero) {
  ServerProcess server(golden_a(), {});
  EXPECT_EQ(health_status(server.address()), 1);
  auto stub = v1::Inference::NewStub(grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  constexpr int kTokens = 300;
  auto reader = stub->Generate(&ctx, token_request(kPrompt, kTokens));
  v1::GenerateResponse m;
  ASSERT_TRUE(reader->Read(&m));
  std::future<int> exit_code = std::async(std::launch::async, [&] { return server.terminate_and_wait(30); });
  int health = 1;
  for (int i = 0; i < 200 && health == 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    health = health_status(server.address());
  }
  EXPECT_NE(health, 1) << "still SERVING after SIGTERM";
  EXPECT_EQ(generate(*stub, token_request(kPrompt, 2), "").status.error_code(), grpc::StatusCode::UNAVAILABLE);
  int tokens = 1;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  while (reader->Read(&m)) {
    tokens += m.token_ids_size();
    if (m.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) finish = m.finish_reason();
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(tokens, kTokens);
  EXPECT_EQ(finish, v1::FINISH_LENGTH);
  EXPECT_EQ(exit_code.get(), 0) << server.log();
}

TEST(ServeE2ELimits, ConcurrentRequestLimitIsResourceExhausted) {
  ServerProcess server(golden_a(), {"--max-concurrent-requests", "2"});
  auto stub = v1::Inference::NewStub(grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext c1, c2;
  auto r1 = stub->Generate(&c1, token_request(kPrompt, 400));
  auto r2 = stub->Generate(&c2, token_request(kPrompt, 400));
  v1::GenerateResponse m;
  ASSERT_TRUE(r1->Read(&m));
  ASSERT_TRUE(r2->Read(&m));
  StreamResult third = generate(*stub, token_request(kPrompt, 2), "");
  EXPECT_EQ(third.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << third.status.error_message();
  c1.TryCancel();
  c2.TryCancel();
  while (r1->Read(&m)) {
  }
  while (r2->Read(&m)) {
  }
  r1->Finish();
  r2->Finish();
  // Once the two are gone, requests are accepted again.
  StreamResult again;
  for (int i = 0; i < 100; ++i) {
    again = generate(*stub, token_request(kPrompt, 2), "");
    if (again.status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(again.status.ok()) << again.status.error_message();
}

// The chat path on a tiny random checkpoint with the real tokenizer: server greedy == `dsv4 generate`, streamed
// text split into reasoning (thinking mode), Tokenize / Detokenize round trip.
TEST(ServeE2EChat, ChatGreedyEqualsDsv4GenerateAndTokenizeRoundTrips) {
  const std::string dir = scratch_dir("serve_e2e_chat").string();
  const std::string tokenizer = (shared_dir() / "data/deepseek-v3-tokenizer/tokenizer.json").string();
  std::string out;
  ASSERT_EQ(run_command(dsv4_bin().string() + " make-checkpoint --config " +
                            (source_dir() / "configs/models/tiny.json").string() + " --seed 1 --out " + dir +
                            "/ckpt --tokenizer " + tokenizer,
                        &out),
            0)
      << out;
  ServerProcess server(dir + "/ckpt", {});
  auto stub = v1::Inference::NewStub(grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
  v1::GenerateRequest req;
  auto* m = req.mutable_chat()->add_messages();
  m->set_role(v1::ROLE_USER);
  m->set_content("Hello, who are you?");
  req.mutable_chat()->set_thinking(v1::THINKING_HIGH);
  req.set_max_tokens(6);
  req.mutable_sampling()->set_temperature(0.0f);
  StreamResult r = generate(*stub, req, "");
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  std::string want, reasoning;
  for (size_t i = 0; i < r.tokens.size(); ++i) want += (i ? "," : "") + std::to_string(r.tokens[i]);
  for (const auto& msg : r.messages) reasoning += msg.reasoning_delta();
  ASSERT_EQ(run_command(dsv4_bin().string() + " generate --checkpoint " + dir + "/ckpt --numerics plain" +
                            " --prompt 'Hello, who are you?' --thinking high --temperature 0 --max-tokens 6" +
                            " --print-token-ids",
                        &out),
            0)
      << out;
  EXPECT_NE(out.find("[token_ids] " + want + "\n"), std::string::npos) << out << "\nserver: " << want;
  EXPECT_FALSE(reasoning.empty());
  EXPECT_NE(out.find(reasoning), std::string::npos) << "the same reasoning text streamed";

  grpc::ClientContext tctx;
  v1::TokenizeRequest treq;
  treq.set_text("Hello world");
  v1::TokenizeResponse tresp;
  ASSERT_TRUE(stub->Tokenize(&tctx, treq, &tresp).ok());
  ASSERT_GT(tresp.token_ids_size(), 0);
  grpc::ClientContext dctx;
  v1::DetokenizeRequest dreq;
  dreq.mutable_token_ids()->CopyFrom(tresp.token_ids());
  v1::DetokenizeResponse dresp;
  ASSERT_TRUE(stub->Detokenize(&dctx, dreq, &dresp).ok());
  EXPECT_EQ(dresp.text(), "Hello world");
  grpc::ClientContext bctx;
  dreq.add_token_ids(999999);
  EXPECT_EQ(stub->Detokenize(&bctx, dreq, &dresp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // Tokenize with invalid UTF-8 (text, and a chat message): INVALID_ARGUMENT naming the field and the byte,
  // not gRPC's bare UNIMPLEMENTED for a request protobuf refused to parse.
  grpc::ClientContext uctx;
  treq.set_text(std::string("Hello \xff world"));
  grpc::Status st = stub->Tokenize(&uctx, treq, &tresp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_EQ(st.error_message(), "text is not valid UTF-8: byte 6 (0xff) does not start a complete sequence");
  grpc::ClientContext cctx;
  v1::TokenizeRequest creq;
  creq.mutable_chat()->add_messages()->set_role(v1::ROLE_SYSTEM);
  creq.mutable_chat()->mutable_messages(0)->set_content("fine");
  creq.mutable_chat()->add_messages()->set_role(v1::ROLE_USER);
  creq.mutable_chat()->mutable_messages(1)->set_content(std::string("ab\xe2\x82", 4));  // truncated 3-byte sequence
  st = stub->Tokenize(&cctx, creq, &tresp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_EQ(st.error_message(),
            "chat.messages[1].content is not valid UTF-8: byte 2 (0xe2) does not start a complete sequence");
  // The same chat, valid, tokenizes like the prompt Generate renders (a non-empty id list).
  grpc::ClientContext vctx;
  creq.mutable_chat()->mutable_messages(1)->set_content("ab\xe2\x82\xac");  // U+20AC
  ASSERT_TRUE(stub->Tokenize(&vctx, creq, &tresp).ok());
  EXPECT_GT(tresp.token_ids_size(), 0);
}

// TLS + token: a TLS client with the token streams; without the token it is UNAUTHENTICATED; a plaintext client
// cannot talk to the TLS port at all.
TEST(ServeE2ETls, TlsWithTokenServesAndRefusesWithoutToken) {
  std::string out;
  const std::string dir = scratch_dir("serve_e2e_tls").string();
  if (run_command("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext "
                  "subjectAltName=IP:127.0.0.1 -keyout " + dir + "/key.pem -out " + dir + "/cert.pem",
                  &out) != 0) {
    GTEST_SKIP() << "no openssl to make a test certificate: " << out;
  }
  std::ofstream(dir + "/token") << "tls-token\n";
  ServerProcess server(golden_a(), {"--tls-cert", dir + "/cert.pem", "--tls-key", dir + "/key.pem",
                                    "--auth-token-file", dir + "/token"},
                       {}, /*tls_ca=*/dir + "/cert.pem");
  const std::string base = dsv4_bin().string() + " client --address " + server.address() + " --prompt-tokens 0,5,9" +
                           " --temperature 0 --max-tokens 3 --timeout 20";
  EXPECT_EQ(run_command(base + " --tls-ca " + dir + "/cert.pem --token tls-token", &out), 0) << out;
  EXPECT_NE(out.find("[finish] length"), std::string::npos) << out;
  EXPECT_EQ(run_command(base + " --tls-ca " + dir + "/cert.pem", &out), 100 + 16) << out;  // UNAUTHENTICATED
  EXPECT_EQ(run_command(base + " --token tls-token --timeout 3", &out), 100 + 14) << out;  // UNAVAILABLE
}

// The 64-request concurrency check again with the server on two MPI ranks (lock-step plans).
TEST(ServeE2EMpi, SixtyFourConcurrentRequestsOnTwoRanksEqualTheSameRequestAlone) {
  const char* mpiexec = std::getenv("DSV4_MPIEXEC");
  if (mpiexec == nullptr || *mpiexec == '\0') GTEST_SKIP() << "DSV4_MPIEXEC is not set";
  ServerProcess server(golden_a(),
                       {"--max-running", "32", "--max-step-tokens", "64", "--max-prefill-chunk", "8",
                        "--max-concurrent-requests", "64"},
                       {mpiexec, "-np", "2", "--oversubscribe"});
  ASSERT_EQ(server.rank_pids().size(), 2u);
  constexpr int kRequests = 64;
  EXPECT_EQ(expect_concurrent_equals_alone(server.address(), mixed_requests(kRequests), ""), kRequests);
  EXPECT_EQ(wait_metric(server.metrics_port(), "dsv4_requests_total{outcome=\"ok\"}", 2 * kRequests), 2 * kRequests);
  const std::string m = http_get_metrics(server.metrics_port());
  EXPECT_GT(metric_value(m, "dsv4_scheduler_overhead_seconds_count"), 0) << m;
  // SIGTERM to rank 0 (as an operator would; mpirun itself turns a SIGTERM into a failed job) drains it, and
  // the whole job exits 0.
  ASSERT_EQ(::kill(server.rank_pids()[0], SIGTERM), 0);
  EXPECT_EQ(server.wait_exit(30), 0) << server.log();
}

// Two ranks under mpirun (full replicas, lock-step plans): the same tokens as one process; killing rank 1
// mid-generation ends the in-flight calls with UNAVAILABLE within 10 s and the job exits non-zero.
TEST(ServeE2EMpi, TwoRanksServeAndARankFailureIsUnavailable) {
  const char* mpiexec = std::getenv("DSV4_MPIEXEC");
  if (mpiexec == nullptr || *mpiexec == '\0') GTEST_SKIP() << "DSV4_MPIEXEC is not set";
  ServerProcess server(golden_a(), {}, {mpiexec, "-np", "2", "--oversubscribe"});
  ASSERT_EQ(server.rank_pids().size(), 2u);
  auto stub = v1::Inference::NewStub(grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
  StreamResult two = generate(*stub, token_request(kPrompt, 8), "");
  ASSERT_TRUE(two.status.ok()) << two.status.error_message();
  std::string ids, want, out;
  for (size_t i = 0; i < kPrompt.size(); ++i) ids += (i ? "," : "") + std::to_string(kPrompt[i]);
  for (size_t i = 0; i < two.tokens.size(); ++i) want += (i ? "," : "") + std::to_string(two.tokens[i]);
  ASSERT_EQ(run_command(dsv4_bin().string() + " generate --checkpoint " + golden_a() +
                            " --numerics plain --temperature 0 --max-tokens 8 --print-token-ids --prompt-tokens " + ids,
                        &out),
            0)
      << out;
  EXPECT_NE(out.find("[token_ids] " + want + "\n"), std::string::npos) << out;

  // Several long requests, so that some are surely in flight when the rank dies.
  std::vector<std::future<StreamResult>> calls;
  for (int i = 0; i < 6; ++i) {
    calls.push_back(std::async(std::launch::async, [&, i] {
      auto own = v1::Inference::NewStub(grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
      return generate(*own, token_request({0, 11 + i, 22, 33}, 4000, 1.0f, 77 + i), "");
    }));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_EQ(::kill(server.rank_pids()[1], SIGKILL), 0);
  const auto killed = std::chrono::steady_clock::now();
  int unavailable = 0;
  for (auto& c : calls) {
    ASSERT_EQ(c.wait_until(killed + std::chrono::seconds(10)), std::future_status::ready) << "a call hangs";
    StreamResult r = c.get();
    if (r.status.ok()) continue;  // finished before the kill
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE) << r.status.error_message();
    ++unavailable;
  }
  EXPECT_GT(unavailable, 0);
  const int rc = server.wait_exit(15);
  EXPECT_NE(rc, 0) << server.log();
  EXPECT_NE(rc, -1) << "the job did not end within 15 s:\n" << server.log();
}

}  // namespace
}  // namespace dsv4::testing
