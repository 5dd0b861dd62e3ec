// A dsv4-server child process for e2e tests, and a small synchronous gRPC client.
#pragma once

#include <grpcpp/grpcpp.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "dsv4/v1/inference.grpc.pb.h"

namespace dsv4::testing {

/// Starts `$DSV4_SERVER_BIN --checkpoint CKPT --port-file ... EXTRA...` and waits for its ports.
class ServerProcess {
 public:
  /// `launcher` (e.g. {"mpiexec", "-np", "2"}) is put before the server binary.
  /// `tls_ca` (a PEM file): the server speaks TLS; the readiness probe connects with it.
  ServerProcess(const std::string& checkpoint, const std::vector<std::string>& extra_args,
                const std::vector<std::string>& launcher = {}, const std::string& tls_ca = "");
  ~ServerProcess();
  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  /// The pid of each rank (from the port file).
  const std::vector<int>& rank_pids() const { return rank_pids_; }
  /// Waits for the process (the launcher, if any) to exit by itself; returns its exit status, -1 on timeout.
  int wait_exit(int timeout_s);
  /// Sends SIGTERM and waits (up to `timeout_s`); returns the exit status, or -1 on timeout / signal death.
  int terminate_and_wait(int timeout_s);
  /// The server's stdout + stderr so far.
  std::string log() const;

 private:
  pid_t pid_ = -1;
  std::string dir_;
  int grpc_port_ = 0, metrics_port_ = 0;
  std::vector<int> rank_pids_;
};

/// GET http://127.0.0.1:PORT/metrics; returns the body ("" on failure).
std::string http_get_metrics(int port);
/// The value of one metric line ("name{labels} value"), or -1 when absent.
double metric_value(const std::string& text, const std::string& name_and_labels);

struct StreamResult {
  grpc::Status status;
  std::vector<v1::GenerateResponse> messages;
  std::vector<int32_t> tokens;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
};

/// grpc.health.v1.Health/Check for the whole server (""): 1 = SERVING, 2 = NOT_SERVING, -(gRPC code) on error.
/// Called with raw bytes, so no health stubs are needed.
int health_status(const std::string& address);

/// Runs one Generate call to the end.
StreamResult generate(v1::Inference::Stub& stub, const v1::GenerateRequest& request, const std::string& token);

/// A request on a raw token prompt: greedy unless `temperature` > 0.
v1::GenerateRequest token_request(const std::vector<int32_t>& prompt, int32_t max_tokens, float temperature = 0.0f,
                                  uint64_t seed = 0);

}  // namespace dsv4::testing
