// The dsv4 inference server: the gRPC service on rank 0 and the lock-step step loop on every rank.
//
// Rank 0 runs an InferenceServer: gRPC callback threads validate requests and hand them to the serving loop
// (InferenceServer::run, on the calling thread), which owns the Scheduler, sends each StepPlan over a
// PlanChannel, runs Engine::step like every other rank (each rank holds its shard of the model and runs its
// replica's sequences; rank 0 receives the merged sampling candidates), samples with each request's
// GenerationStream and streams the results back. Other ranks run run_follower().
//
// Idle: rank 0 sends no plan while nothing is queued or running (it waits on its request queue), so the
// followers wait in PlanChannel::exchange; a channel over MPI must wait there without spinning (see
// launcher/server/mpi_plan_channel.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "dsv4/v1/control.pb.h"
#include "parallel/bootstrap.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/loaded_model.h"
#include "runtime/serve/request_validation.h"
#include "runtime/serve/scheduler.h"

namespace dsv4::serve {

struct ServerOptions {
  /// gRPC listening address; port 0 picks a free port (see InferenceServer::grpc_port()).
  std::string address = "127.0.0.1:0";
  /// When not empty, every call must carry metadata "authorization: Bearer <token>".
  std::string auth_token;
  /// PEM files; both or neither. Without them the server speaks plaintext.
  std::string tls_cert_file, tls_key_file;
  /// Largest request / response message (bytes).
  int32_t max_message_bytes = 4 << 20;
  /// Generate calls accepted at once (queued + running); beyond: RESOURCE_EXHAUSTED.
  int32_t max_concurrent_requests = 64;
  RequestLimits request_limits;
  /// state_budget_bytes 0 = the engine's state pool budget when bounded, else room for max_running sequences of
  /// 4096 tokens; never more than a bounded pool holds (run() refuses).
  SchedulerLimits scheduler;
  /// "host:port" of the Prometheus endpoint (port 0 = free port); empty = no metrics endpoint.
  std::string metrics_address;
};

/// Broadcasts `plan` from rank 0 to every rank (serialized proto: a size, then the bytes). Collective.
void broadcast_plan(parallel::Bootstrap& bootstrap, v1::StepPlan& plan);

/// How step plans travel from rank 0 to the other ranks. Collective: every rank calls exchange() once per plan.
class PlanChannel {
 public:
  virtual ~PlanChannel() = default;
  /// Rank 0 sends `plan`; the other ranks receive it into `plan` (waiting as long as rank 0 sends nothing).
  virtual void exchange(v1::StepPlan& plan) = 0;
};

/// A channel over the Bootstrap (broadcast_plan). Its wait is the bootstrap's: a condition variable in-process,
/// a blocking MPI_Bcast over MPI (which polls).
std::unique_ptr<PlanChannel> make_bootstrap_plan_channel(parallel::Bootstrap& bootstrap);

/// Ranks other than 0: receive plans and step until the shutdown plan. `channel` null: the bootstrap's.
void run_follower(parallel::Bootstrap& bootstrap, Engine& engine, PlanChannel* channel = nullptr);

class InferenceServer {
 public:
  /// Starts gRPC (health NOT_SERVING, Generate answers UNAVAILABLE) and the metrics endpoint. Rank 0 only.
  InferenceServer(ServerOptions options, parallel::Bootstrap& bootstrap);
  ~InferenceServer();
  InferenceServer(const InferenceServer&) = delete;
  InferenceServer& operator=(const InferenceServer&) = delete;

  int grpc_port() const;
  /// 0 without a metrics endpoint.
  int metrics_port() const;

  /// Serves `model` until drained: health SERVING, requests admitted; returns after the shutdown plan was
  /// broadcast and the gRPC server stopped. `loaded` and `engine` must outlive the call. Sequences are spread
  /// over engine.dp_size() replicas. `channel` null: plans go over the bootstrap.
  void run(const LoadedModel& loaded, Engine& engine, PlanChannel* channel = nullptr);

  /// Stop admitting (health NOT_SERVING, new Generate calls UNAVAILABLE), finish everything accepted, then
  /// return from run(). Async-signal-safe (only stores an atomic flag).
  void request_drain() noexcept;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsv4::serve
