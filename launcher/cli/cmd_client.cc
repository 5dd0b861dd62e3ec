// `dsv4 client`: a streaming gRPC client of dsv4-server. Sends one chat message (or raw token ids), prints the
// reply as it streams (reasoning between "[reasoning]" and "[content]" markers, tool calls on their own lines),
// then "[finish] REASON" with usage. Exit status: 0 on success, the gRPC status code + 100 otherwise.
#include <grpcpp/grpcpp.h>

#include <charconv>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include "dsv4/v1/inference.grpc.pb.h"
#include "launcher/cli/command.h"
#include "runtime/core/error.h"

namespace dsv4::cli {
namespace {

struct ClientArgs {
  std::string address = "127.0.0.1:50051", token, token_file, prompt, system, prompt_tokens, thinking = "none";
  std::string tls_ca, request_id;
  int32_t max_tokens = 128;
  float temperature = 1.0f, top_p = 1.0f, min_p = 0.0f;
  int32_t top_k = 0;
  uint64_t seed = 0;
  bool has_seed = false, print_token_ids = false, info = false;
  std::vector<std::string> stop;
  double timeout_s = 600;
};

std::string read_token(const ClientArgs& a) {
  if (!a.token.empty()) return a.token;
  if (a.token_file.empty()) return "";
  std::ifstream in(a.token_file);
  DSV4_CHECK_ARG(in.good()) << "--token-file: cannot read " << a.token_file;
  std::string t;
  std::getline(in, t);
  return t;
}

const char* finish_name(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_STOP: return "stop";
    case v1::FINISH_LENGTH: return "length";
    case v1::FINISH_TOOL_CALLS: return "tool_calls";
    case v1::FINISH_ABORTED: return "aborted";
    case v1::FINISH_ERROR: return "error";
    default: return "unspecified";
  }
}

void run_client(const ClientArgs& a) {
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!a.tls_ca.empty()) {
    std::ifstream in(a.tls_ca);
    DSV4_CHECK_ARG(in.good()) << "--tls-ca: cannot read " << a.tls_ca;
    std::ostringstream pem;
    pem << in.rdbuf();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = pem.str();
    creds = grpc::SslCredentials(ssl);
  }
  auto stub = v1::Inference::NewStub(grpc::CreateChannel(a.address, creds));
  const std::string token = read_token(a);
  grpc::ClientContext ctx;
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(a.timeout_s * 1000)));
  if (a.info) {
    v1::ModelInfo info;
    grpc::Status st = stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
    DSV4_CHECK_CODE(st.ok(), ErrorCode::kRpc) << "GetModelInfo: " << st.error_message() << " (code "
                                              << st.error_code() << ")";
    std::cout << "model_kind " << info.model_kind() << "\nvocab_size " << info.vocab_size() << "\nmax_context_tokens "
              << info.max_context_tokens() << "\nmax_prompt_tokens " << info.max_prompt_tokens()
              << "\nworld_size " << info.layout().world_size() << "\n";
    return;
  }
  v1::GenerateRequest req;
  req.set_request_id(a.request_id);
  DSV4_CHECK_ARG(a.prompt.empty() != a.prompt_tokens.empty()) << "give exactly one of --prompt and --prompt-tokens";
  if (!a.prompt.empty()) {
    v1::ChatPrompt* chat = req.mutable_chat();
    if (!a.system.empty()) {
      auto* m = chat->add_messages();
      m->set_role(v1::ROLE_SYSTEM);
      m->set_content(a.system);
    }
    auto* m = chat->add_messages();
    m->set_role(v1::ROLE_USER);
    m->set_content(a.prompt);
    if (a.thinking == "none") chat->set_thinking(v1::THINKING_NONE);
    else if (a.thinking == "high") chat->set_thinking(v1::THINKING_HIGH);
    else if (a.thinking == "max") chat->set_thinking(v1::THINKING_MAX);
    else DSV4_THROW(kInvalidArgument) << "--thinking must be none, high or max";
  } else {
    std::istringstream in(a.prompt_tokens);
    std::string item;
    while (std::getline(in, item, ',')) {
      int32_t v = 0;
      auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
      DSV4_CHECK_ARG(ec == std::errc() && p == item.data() + item.size()) << "--prompt-tokens: '" << item << "'";
      req.mutable_tokens()->add_token_ids(v);
    }
  }
  req.set_max_tokens(a.max_tokens);
  req.mutable_sampling()->set_temperature(a.temperature);
  req.mutable_sampling()->set_top_p(a.top_p);
  req.mutable_sampling()->set_top_k(a.top_k);
  req.mutable_sampling()->set_min_p(a.min_p);
  if (a.has_seed) req.mutable_sampling()->set_seed(a.seed);
  for (const std::string& s : a.stop) req.add_stop(s);

  auto reader = stub->Generate(&ctx, req);
  v1::GenerateResponse m;
  bool in_reasoning = false, in_content = false;
  std::vector<int32_t> ids;
  v1::GenerateResponse last;
  while (reader->Read(&m)) {
    for (const std::string& w : m.warnings()) std::cerr << "[warning] " << w << "\n";
    ids.insert(ids.end(), m.token_ids().begin(), m.token_ids().end());
    if (!m.reasoning_delta().empty()) {
      if (!in_reasoning) std::cout << "[reasoning]\n";
      in_reasoning = true;
      std::cout << m.reasoning_delta();
    }
    if (!m.content_delta().empty()) {
      if (in_reasoning && !in_content) std::cout << "\n[content]\n";
      in_content = true;
      std::cout << m.content_delta();
    }
    for (const auto& c : m.tool_calls()) std::cout << "\n[tool_call] " << c.name() << " " << c.arguments_json();
    std::cout.flush();
    if (m.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) last = m;
  }
  grpc::Status st = reader->Finish();
  if (!st.ok()) {
    std::cout << "\n";
    std::cerr << "dsv4 client: " << st.error_message() << " (gRPC code " << st.error_code() << ")\n";
    std::exit(100 + static_cast<int>(st.error_code()));
  }
  std::cout << "\n[finish] " << finish_name(last.finish_reason()) << " (" << last.usage().prompt_tokens()
            << " prompt tokens, " << last.usage().completion_tokens() << " generated, "
            << last.timing().total_seconds() << " s)\n";
  if (a.print_token_ids) {
    std::cout << "[token_ids] ";
    for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? "," : "") << ids[i];
    std::cout << "\n";
  }
}

void setup(CLI::App& app) {
  auto a = std::make_shared<ClientArgs>();
  auto* cmd = app.add_subcommand("client", "Stream a reply from a running dsv4-server");
  cmd->add_option("--address", a->address, "server host:port");
  cmd->add_option("--token", a->token, "bearer token");
  cmd->add_option("--token-file", a->token_file, "file holding the bearer token");
  cmd->add_option("--tls-ca", a->tls_ca, "PEM root certificate: connect with TLS");
  cmd->add_option("--prompt", a->prompt, "user message");
  cmd->add_option("--system", a->system, "system message");
  cmd->add_option("--prompt-tokens", a->prompt_tokens, "raw prompt token ids, comma-separated");
  cmd->add_option("--thinking", a->thinking, "none|high|max");
  cmd->add_option("--max-tokens", a->max_tokens, "tokens to generate at most");
  cmd->add_option("--temperature", a->temperature, "0 = greedy");
  cmd->add_option("--top-p", a->top_p, "in (0, 1]");
  cmd->add_option("--top-k", a->top_k, "0 = off");
  cmd->add_option("--min-p", a->min_p, "0 = off");
  cmd->add_option("--seed", a->seed, "sampling seed")->each([a](const std::string&) { a->has_seed = true; });
  cmd->add_option("--stop", a->stop, "stop string (repeatable)");
  cmd->add_option("--request-id", a->request_id, "id usable with Abort");
  cmd->add_option("--timeout", a->timeout_s, "seconds before the call is abandoned");
  cmd->add_flag("--print-token-ids", a->print_token_ids, "print the generated ids at the end");
  cmd->add_flag("--info", a->info, "print GetModelInfo instead of generating");
  cmd->callback([a] { run_client(*a); });
}

}  // namespace
DSV4_REGISTER_COMMAND(client, setup);

}  // namespace dsv4::cli
