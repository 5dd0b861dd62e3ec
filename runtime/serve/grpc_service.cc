// The gRPC side of the server: the callback service, the Generate stream's reactor, auth, limits, startup.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <fstream>
#include <sstream>

#include "runtime/core/error.h"
#include "runtime/core/logging.h"
#include "runtime/serve/server_internal.h"

namespace dsv4::serve {

grpc::StatusCode grpc_code_for(const std::exception& error) {
  const auto* e = dynamic_cast<const Error*>(&error);
  if (e == nullptr) return grpc::StatusCode::INTERNAL;
  switch (e->code()) {
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kOutOfRange: return grpc::StatusCode::INVALID_ARGUMENT;
    case ErrorCode::kResourceExhausted: return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case ErrorCode::kNotFound: return grpc::StatusCode::NOT_FOUND;
    case ErrorCode::kUnsupported: return grpc::StatusCode::UNIMPLEMENTED;
    case ErrorCode::kAborted: return grpc::StatusCode::ABORTED;
    case ErrorCode::kRemote:
    case ErrorCode::kTimeout: return grpc::StatusCode::UNAVAILABLE;
    default: return grpc::StatusCode::INTERNAL;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Outbox / reactor.

void Outbox::push(v1::GenerateResponse message) {
  grpc::ByteBuffer bytes;
  bool own = false;
  const grpc::Status st = grpc::SerializationTraits<v1::GenerateResponse>::Serialize(message, &bytes, &own);
  DSV4_CHECK(st.ok()) << "cannot serialize a GenerateResponse: " << st.error_message();
  std::unique_lock lock(mu_);
  if (reactor_ == nullptr || finish_) return;
  queue_.push_back(std::move(bytes));
  pump(lock);
}

void Outbox::finish(grpc::Status status) {
  std::unique_lock lock(mu_);
  if (finish_) return;
  finish_ = std::move(status);
  pump(lock);
}

void Outbox::write_done(bool ok) {
  std::unique_lock lock(mu_);
  writing_ = false;
  if (!queue_.empty()) queue_.pop_front();
  if (!ok) queue_.clear();  // the stream is broken (client gone): nothing more can be written
  pump(lock);
}

void Outbox::detach() {
  std::lock_guard lock(mu_);
  reactor_ = nullptr;
  queue_.clear();
}

void Outbox::pump(std::unique_lock<std::mutex>& lock) {
  // StartWrite / Finish are called without the lock: a reaction may run inline and re-enter the outbox. The
  // reactor stays alive until Finish has been called and every operation has completed.
  if (writing_ || reactor_ == nullptr || finish_called_) return;
  GenerateReactor* reactor = reactor_;
  if (!queue_.empty()) {
    writing_ = true;
    const grpc::ByteBuffer* message = &queue_.front();  // stable: deque push_back keeps references
    lock.unlock();
    reactor->StartWrite(message);
    return;
  }
  if (finish_) {
    finish_called_ = true;
    const grpc::Status status = *finish_;
    lock.unlock();
    reactor->Finish(status);
  }
}

void GenerateReactor::OnWriteDone(bool ok) { request_->outbox->write_done(ok); }

void GenerateReactor::OnCancel() {
  int expected = 0;
  request_->stop.compare_exchange_strong(expected, 1);
  server_->wake();
}

void GenerateReactor::OnDone() {
  if (request_) request_->outbox->detach();
  delete this;
}

// ---------------------------------------------------------------------------------------------------------
// Service.

grpc::Status InferenceServer::Impl::check_auth(const grpc::CallbackServerContext* context) const {
  if (options.auth_token.empty()) return grpc::Status::OK;
  const auto& md = context->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return {grpc::StatusCode::UNAUTHENTICATED, "missing 'authorization: Bearer <token>' metadata"};
  const std::string value(it->second.data(), it->second.size());
  if (value != "Bearer " + options.auth_token) return {grpc::StatusCode::UNAUTHENTICATED, "invalid bearer token"};
  return grpc::Status::OK;
}

void InferenceServer::Impl::finish_request(RequestState& request, std::optional<v1::GenerateResponse> final,
                                           grpc::Status status, const std::string& outcome) {
  if (final) request.outbox->push(std::move(*final));
  request.outbox->finish(std::move(status));
  {
    std::lock_guard lock(mu);
    auto it = by_request_id.find(request.request_id);
    if (it != by_request_id.end() && it->second.get() == &request) by_request_id.erase(it);
  }
  active.fetch_sub(1);
  metrics.count_request(outcome);
}

namespace {

std::string status_outcome(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT: return "invalid_argument";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "resource_exhausted";
    case grpc::StatusCode::UNAUTHENTICATED: return "unauthenticated";
    case grpc::StatusCode::UNAVAILABLE: return "unavailable";
    case grpc::StatusCode::ALREADY_EXISTS: return "already_exists";
    default: return "error";
  }
}

grpc::ServerUnaryReactor* finish_unary(grpc::CallbackServerContext* context, grpc::Status status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(std::move(status));
  return reactor;
}

grpc::Status unavailable_while_loading() { return {grpc::StatusCode::UNAVAILABLE, "the model is still loading"}; }

// Parses a raw request. proto3 refuses a `string` field holding invalid UTF-8 without saying which, and a
// generated handler would answer a bare UNIMPLEMENTED; the raw methods answer INVALID_ARGUMENT naming the field
// and the byte offset instead (describe_parse_failure).
template <typename Message>
grpc::Status parse_request(const grpc::ByteBuffer& raw, Message* out) {
  std::vector<grpc::Slice> slices;
  if (!raw.Dump(&slices).ok()) return {grpc::StatusCode::INTERNAL, "cannot read the request bytes"};
  std::string bytes;
  for (const grpc::Slice& slice : slices) bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  if (out->ParseFromString(bytes)) return grpc::Status::OK;
  return {grpc::StatusCode::INVALID_ARGUMENT, describe_parse_failure(*Message::descriptor(), bytes)};
}

grpc::ServerUnaryReactor* finish_raw_unary(grpc::CallbackServerContext* context, grpc::Status status,
                                           const google::protobuf::Message& response, grpc::ByteBuffer* out) {
  if (status.ok()) {
    bool own = false;
    status = grpc::SerializationTraits<google::protobuf::Message>::Serialize(response, out, &own);
  }
  return finish_unary(context, std::move(status));
}

}  // namespace

grpc::ServerWriteReactor<grpc::ByteBuffer>* InferenceService::Generate(grpc::CallbackServerContext* context,
                                                                       const grpc::ByteBuffer* request_bytes) {
  auto* reactor = new GenerateReactor(server_);
  auto state = std::make_shared<RequestState>();
  state->arrival = Clock::now();
  state->outbox = std::make_shared<Outbox>(reactor);
  reactor->set_request(state);
  auto refuse = [&](grpc::Status status) {
    server_->metrics.count_request(status_outcome(status.error_code()));
    state->outbox->finish(std::move(status));
    return reactor;
  };
  if (grpc::Status auth = server_->check_auth(context); !auth.ok()) return refuse(auth);
  if (!server_->ready.load()) return refuse(unavailable_while_loading());
  if (server_->draining.load()) return refuse({grpc::StatusCode::UNAVAILABLE, "the server is draining"});
  v1::GenerateRequest parsed;
  if (grpc::Status st = parse_request(*request_bytes, &parsed); !st.ok()) return refuse(st);
  const v1::GenerateRequest* request = &parsed;
  try {
    state->request = validate_generate_request(*request, server_->loaded->model->config(),
                                               server_->loaded->tokenizer_or_null(), server_->options.request_limits);
  } catch (const std::exception& e) {
    return refuse({grpc_code_for(e), e.what()});
  }
  state->request_id = request->request_id();
  state->include_prompt_token_ids = request->include_prompt_token_ids();
  // Count the request as active before the limit check, so that concurrent arrivals cannot both slip in.
  if (server_->active.fetch_add(1) >= server_->options.max_concurrent_requests) {
    server_->active.fetch_sub(1);
    return refuse({grpc::StatusCode::RESOURCE_EXHAUSTED,
                   "too many concurrent requests (limit " + std::to_string(server_->options.max_concurrent_requests) +
                       ")"});
  }
  {
    std::lock_guard lock(server_->mu);
    if (!state->request_id.empty()) {
      if (server_->by_request_id.count(state->request_id) != 0) {
        server_->active.fetch_sub(1);
        server_->metrics.count_request("already_exists");
        state->outbox->finish({grpc::StatusCode::ALREADY_EXISTS,
                               "request_id '" + state->request_id + "' is already running"});
        return reactor;
      }
      server_->by_request_id[state->request_id] = state;
    }
    state->sequence_id = server_->next_sequence_id++;
    server_->arrivals.push_back(state);
  }
  server_->wake();
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request_bytes,
                                                     grpc::ByteBuffer* response_bytes) {
  v1::TokenizeResponse response;
  auto done = [&](grpc::Status status) {
    return finish_raw_unary(context, std::move(status), response, response_bytes);
  };
  if (grpc::Status auth = server_->check_auth(context); !auth.ok()) return done(auth);
  if (!server_->ready.load()) return done(unavailable_while_loading());
  v1::TokenizeRequest request;
  if (grpc::Status st = parse_request(*request_bytes, &request); !st.ok()) return done(st);
  const BpeTokenizer* tok = server_->loaded->tokenizer_or_null();
  if (tok == nullptr) return done({grpc::StatusCode::FAILED_PRECONDITION, "this server has no tokenizer"});
  try {
    std::vector<int32_t> ids;
    if (request.input_case() == v1::TokenizeRequest::kText) {
      ids = tok->encode(request.text());
    } else if (request.input_case() == v1::TokenizeRequest::kChat) {
      ThinkingMode mode = ThinkingMode::kNone;
      switch (request.chat().thinking()) {
        case v1::THINKING_NONE: mode = ThinkingMode::kNone; break;
        case v1::THINKING_HIGH: mode = ThinkingMode::kHigh; break;
        case v1::THINKING_MAX: mode = ThinkingMode::kMax; break;
        default: DSV4_THROW(kInvalidArgument) << "chat.thinking: unknown mode " << request.chat().thinking();
      }
      ids = encode_chat_prompt(*tok, chat_from_proto(request.chat()), mode);
    } else {
      DSV4_THROW(kInvalidArgument) << "the request has no input (text or chat)";
    }
    response.mutable_token_ids()->Add(ids.begin(), ids.end());
  } catch (const std::exception& e) {
    return done({grpc_code_for(e), e.what()});
  }
  return done(grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceService::Detokenize(grpc::CallbackServerContext* context,
                                                       const v1::DetokenizeRequest* request,
                                                       v1::DetokenizeResponse* response) {
  if (grpc::Status auth = server_->check_auth(context); !auth.ok()) return finish_unary(context, auth);
  if (!server_->ready.load()) return finish_unary(context, unavailable_while_loading());
  const BpeTokenizer* tok = server_->loaded->tokenizer_or_null();
  if (tok == nullptr) return finish_unary(context, {grpc::StatusCode::FAILED_PRECONDITION, "this server has no tokenizer"});
  std::vector<int32_t> ids(request->token_ids().begin(), request->token_ids().end());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!tok->is_valid_id(ids[i])) {
      return finish_unary(context, {grpc::StatusCode::INVALID_ARGUMENT,
                                    "token_ids[" + std::to_string(i) + "] = " + std::to_string(ids[i]) +
                                        " is not in the vocabulary"});
    }
  }
  response->set_text(tok->decode(ids));
  return finish_unary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(grpc::CallbackServerContext* context,
                                                         const v1::GetModelInfoRequest*, v1::ModelInfo* response) {
  if (grpc::Status auth = server_->check_auth(context); !auth.ok()) return finish_unary(context, auth);
  if (!server_->ready.load()) return finish_unary(context, unavailable_while_loading());
  const ModelConfig& cfg = server_->loaded->model->config();
  const ServerOptions& o = server_->options;
  response->set_model_kind(cfg.num_layers >= 60 ? "pro" : cfg.num_layers >= 40 ? "flash" : "custom");
  response->set_config_json(model_config_to_json(cfg));
  v1::ParallelLayout* layout = response->mutable_layout();
  // The layout the ranks loaded their shards under (a single-process model: one rank holding everything).
  parallel::MeshConfig mesh;
  if (server_->loaded->groups) mesh = server_->loaded->groups->mesh.config();
  layout->set_world_size(server_->bootstrap->size());
  layout->set_dp(mesh.dp);
  layout->set_tp(mesh.tp);
  layout->set_ep(mesh.ep);
  layout->set_cp(mesh.cp);
  layout->set_backend("cpu");
  response->set_max_context_tokens(cfg.max_position_embeddings);
  response->set_max_prompt_tokens(o.request_limits.max_prompt_tokens > 0 ? o.request_limits.max_prompt_tokens
                                                                         : cfg.max_position_embeddings - 1);
  response->set_max_concurrent_requests(o.max_concurrent_requests);
  response->set_vocab_size(cfg.vocab_size);
  response->set_state_budget_bytes(o.scheduler.state_budget_bytes);
  return finish_unary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceService::Abort(grpc::CallbackServerContext* context,
                                                  const v1::AbortRequest* request, v1::AbortResponse* response) {
  if (grpc::Status auth = server_->check_auth(context); !auth.ok()) return finish_unary(context, auth);
  bool found = false;
  {
    std::lock_guard lock(server_->mu);
    auto it = server_->by_request_id.find(request->request_id());
    if (!request->request_id().empty() && it != server_->by_request_id.end()) {
      int expected = 0;
      found = it->second->stop.compare_exchange_strong(expected, 2);
    }
  }
  server_->wake();
  response->set_found(found);
  return finish_unary(context, grpc::Status::OK);
}

// ---------------------------------------------------------------------------------------------------------
// Startup.

namespace {
std::string read_pem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  DSV4_CHECK_ARG(in.good()) << "cannot read the TLS " << what << " file " << path;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::pair<std::string, int> split_host_port(const std::string& address, const char* what) {
  const size_t colon = address.rfind(':');
  DSV4_CHECK_ARG(colon != std::string::npos) << what << " '" << address << "' is not host:port";
  int port = -1;
  try {
    port = std::stoi(address.substr(colon + 1));
  } catch (const std::exception&) {
  }
  DSV4_CHECK_ARG(port >= 0 && port <= 65535) << what << " '" << address << "' has no valid port";
  return {address.substr(0, colon), port};
}
}  // namespace

InferenceServer::InferenceServer(ServerOptions options, parallel::Bootstrap& bootstrap)
    : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.options = std::move(options);
  s.bootstrap = &bootstrap;
  DSV4_CHECK_ARG(s.options.max_concurrent_requests > 0) << "max concurrent requests must be > 0";
  DSV4_CHECK_ARG(s.options.max_message_bytes > 0) << "max message bytes must be > 0";
  DSV4_CHECK_ARG(s.options.tls_cert_file.empty() == s.options.tls_key_file.empty())
      << "TLS needs both a certificate and a key file";
  split_host_port(s.options.address, "the gRPC address");
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!s.options.tls_cert_file.empty()) {
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back(
        {read_pem(s.options.tls_key_file, "key"), read_pem(s.options.tls_cert_file, "certificate")});
    creds = grpc::SslServerCredentials(ssl);
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  s.service = std::make_unique<InferenceService>(&s);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(s.options.address, creds, &s.grpc_port);
  builder.RegisterService(s.service.get());
  builder.SetMaxReceiveMessageSize(s.options.max_message_bytes);
  builder.SetMaxSendMessageSize(s.options.max_message_bytes);
  s.grpc_server = builder.BuildAndStart();
  DSV4_CHECK_CODE(s.grpc_server != nullptr && s.grpc_port > 0, ErrorCode::kIo)
      << "cannot listen on " << s.options.address;
  s.grpc_server->GetHealthCheckService()->SetServingStatus(false);
  if (!s.options.metrics_address.empty()) {
    auto [host, port] = split_host_port(s.options.metrics_address, "the metrics address");
    s.metrics_http = std::make_unique<MetricsHttpServer>(s.metrics, host, port);
  }
  DSV4_LOG(INFO) << "gRPC listening on port " << s.grpc_port << (s.options.tls_cert_file.empty() ? "" : " (TLS)")
                 << (s.metrics_http ? ", metrics on port " + std::to_string(s.metrics_http->port()) : "");
}

InferenceServer::~InferenceServer() {
  if (impl_->grpc_server) impl_->grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

int InferenceServer::grpc_port() const { return impl_->grpc_port; }
int InferenceServer::metrics_port() const { return impl_->metrics_http ? impl_->metrics_http->port() : 0; }
void InferenceServer::request_drain() noexcept { impl_->draining.store(true); }

}  // namespace dsv4::serve
