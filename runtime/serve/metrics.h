// Prometheus metrics of the server (text exposition format 0.0.4) and a tiny HTTP/1.1 responder for them.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace dsv4::serve {

/// A cumulative histogram with fixed upper bounds (seconds).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  /// Appends the _bucket / _sum / _count lines of `name`.
  void render(const std::string& name, std::string& out) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), plus +Inf
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

/// Every metric of the server. Thread-safe.
class ServerMetrics {
 public:
  ServerMetrics();
  /// outcome: ok | invalid_argument | resource_exhausted | unauthenticated | cancelled | aborted | error | ...
  void count_request(const std::string& outcome);
  void add_prompt_tokens(int64_t n);
  void add_generated_tokens(int64_t n);
  void observe_ttft(double seconds);
  void observe_inter_token(double seconds);
  /// One serving step of rank 0: `model_seconds` inside the model (Engine::step and the wait for the other ranks
  /// to finish theirs), `overhead_seconds` outside it (scheduling, plan build and broadcast, sampling,
  /// detokenizing and streaming the results, the gauges).
  void observe_step(double model_seconds, double overhead_seconds);
  /// Gauges, set by the serving loop each step.
  void set_queue(int64_t queued, int64_t running, int64_t state_bytes_reserved, int64_t state_bytes_used,
                 int64_t engine_sequences);
  /// The exposition text.
  std::string render() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, uint64_t> requests_;
  uint64_t prompt_tokens_ = 0, generated_tokens_ = 0;
  int64_t queued_ = 0, running_ = 0, reserved_ = 0, used_ = 0, engine_sequences_ = 0;
  Histogram ttft_, inter_token_, step_model_, step_overhead_;
};

/// Serves GET /metrics (anything else: 404) on `host:port` from one thread. Port 0 picks a free port.
class MetricsHttpServer {
 public:
  MetricsHttpServer(const ServerMetrics& metrics, const std::string& host, int port);
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;
  int port() const { return port_; }

 private:
  void serve();
  const ServerMetrics& metrics_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace dsv4::serve
