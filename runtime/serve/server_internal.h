// Internals shared by the gRPC service (grpc_service.cc) and the serving loop (serving_loop.cc).
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "dsv4/v1/inference.grpc.pb.h"
#include "runtime/serve/metrics.h"
#include "runtime/serve/server.h"

namespace dsv4::serve {

using Clock = std::chrono::steady_clock;

class GenerateReactor;

/// The write side of one Generate stream: queues responses (serialized: the method is raw, see
/// InferenceService) and issues one StartWrite at a time, then Finish.
/// Lives as long as its longest holder (the reactor or the serving loop); after the reactor is done, pushes
/// are dropped.
class Outbox {
 public:
  explicit Outbox(GenerateReactor* reactor) : reactor_(reactor) {}
  void push(v1::GenerateResponse message);
  /// Finishes the stream after the queued messages (once; later calls are ignored).
  void finish(grpc::Status status);
  void write_done(bool ok);
  void detach();

 private:
  void pump(std::unique_lock<std::mutex>& lock);
  std::mutex mu_;
  GenerateReactor* reactor_;
  std::deque<grpc::ByteBuffer> queue_;
  bool writing_ = false;
  std::optional<grpc::Status> finish_;
  bool finish_called_ = false;
};

/// One accepted Generate request.
struct RequestState {
  uint64_t sequence_id = 0;
  std::string request_id;
  ValidatedRequest request;
  bool include_prompt_token_ids = false;
  std::shared_ptr<Outbox> outbox;
  /// Set from gRPC threads: 1 = the client cancelled, 2 = Abort().
  std::atomic<int> stop{0};
  // Serving loop only:
  std::optional<GenerationStream> stream;
  Clock::time_point arrival, first_token, last_token;
  bool sent_first = false;
};

class GenerateReactor : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  GenerateReactor(InferenceServer::Impl* server) : server_(server) {}
  void set_request(std::shared_ptr<RequestState> request) { request_ = std::move(request); }
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  InferenceServer::Impl* server_;
  std::shared_ptr<RequestState> request_;
};

/// Generate and Tokenize (the calls that carry text) are raw methods: protobuf's own parser rejects a proto3 string
/// that is not valid UTF-8 before any handler runs (the client would see a bare UNIMPLEMENTED), so the service
/// parses the bytes itself and answers INVALID_ARGUMENT naming the field and the byte offset instead.
class InferenceService final
    : public v1::Inference::WithRawCallbackMethod_Generate<
          v1::Inference::WithRawCallbackMethod_Tokenize<v1::Inference::CallbackService>> {
 public:
  explicit InferenceService(InferenceServer::Impl* server) : server_(server) {}
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context, const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context, const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* context, const v1::AbortRequest* request,
                                  v1::AbortResponse* response) override;

 private:
  InferenceServer::Impl* server_;
};

struct InferenceServer::Impl {
  ServerOptions options;
  parallel::Bootstrap* bootstrap = nullptr;
  ServerMetrics metrics;
  std::unique_ptr<MetricsHttpServer> metrics_http;
  std::unique_ptr<InferenceService> service;
  std::unique_ptr<grpc::Server> grpc_server;
  int grpc_port = 0;

  // Set by run() before `ready`; read by gRPC threads only once `ready` is true.
  const LoadedModel* loaded = nullptr;
  std::atomic<bool> ready{false};
  std::atomic<bool> draining{false};

  // Hand-over between gRPC threads and the serving loop.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<RequestState>> arrivals;
  std::unordered_map<std::string, std::shared_ptr<RequestState>> by_request_id;  // live, non-empty ids
  uint64_t next_sequence_id = 1;
  std::atomic<int32_t> active{0};  // accepted Generate calls not yet finished

  /// An auth failure as a status, or OK.
  grpc::Status check_auth(const grpc::CallbackServerContext* context) const;
  /// Ends an accepted request: the final message (when `final` is set), the status, the bookkeeping.
  void finish_request(RequestState& request, std::optional<v1::GenerateResponse> final, grpc::Status status,
                      const std::string& outcome);
  void wake() { cv.notify_all(); }
};

/// dsv4::Error code -> gRPC status code.
grpc::StatusCode grpc_code_for(const std::exception& error);

}  // namespace dsv4::serve
