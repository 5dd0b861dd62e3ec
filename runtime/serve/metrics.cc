#include "runtime/serve/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>

#include "parallel/context_parallel.h"
#include "runtime/core/error.h"

namespace dsv4::serve {

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  const size_t i = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::render(const std::string& name, std::string& out) const {
  std::ostringstream s;
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    s << name << "_bucket{le=\"" << bounds_[i] << "\"} " << cumulative << "\n";
  }
  s << name << "_bucket{le=\"+Inf\"} " << count_ << "\n" << name << "_sum " << sum_ << "\n"
    << name << "_count " << count_ << "\n";
  out += s.str();
}

namespace {
std::vector<double> latency_bounds() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}
// The scheduler's own work per step is micro- to milliseconds: six buckets per decade from 10 us to 7 s, so
// that a quantile read from the histogram (interpolated within a bucket) is within a factor 1.5 of the truth.
std::vector<double> step_bounds() {
  std::vector<double> b;
  for (double decade = 1e-5; decade < 10.0; decade *= 10.0) {
    for (double m : {1.0, 1.5, 2.0, 3.0, 5.0, 7.0}) b.push_back(m * decade);
  }
  return b;
}
}  // namespace

ServerMetrics::ServerMetrics()
    : ttft_(latency_bounds()),
      inter_token_(latency_bounds()),
      step_model_(step_bounds()),
      step_overhead_(step_bounds()) {}

void ServerMetrics::count_request(const std::string& outcome) {
  std::lock_guard lock(mu_);
  ++requests_[outcome];
}
void ServerMetrics::add_prompt_tokens(int64_t n) {
  std::lock_guard lock(mu_);
  prompt_tokens_ += static_cast<uint64_t>(n);
}
void ServerMetrics::add_generated_tokens(int64_t n) {
  std::lock_guard lock(mu_);
  generated_tokens_ += static_cast<uint64_t>(n);
}
void ServerMetrics::observe_ttft(double seconds) {
  std::lock_guard lock(mu_);
  ttft_.observe(seconds);
}
void ServerMetrics::observe_inter_token(double seconds) {
  std::lock_guard lock(mu_);
  inter_token_.observe(seconds);
}
void ServerMetrics::observe_step(double model_seconds, double overhead_seconds) {
  std::lock_guard lock(mu_);
  step_model_.observe(model_seconds);
  step_overhead_.observe(overhead_seconds);
}
void ServerMetrics::set_queue(int64_t queued, int64_t running, int64_t reserved, int64_t used, int64_t engine_sequences) {
  std::lock_guard lock(mu_);
  queued_ = queued;
  running_ = running;
  reserved_ = reserved;
  used_ = used;
  engine_sequences_ = engine_sequences;
}

std::string ServerMetrics::render() const {
  std::lock_guard lock(mu_);
  std::ostringstream s;
  s << "# HELP dsv4_requests_total Finished Generate requests by outcome.\n# TYPE dsv4_requests_total counter\n";
  for (const auto& [outcome, n] : requests_) s << "dsv4_requests_total{outcome=\"" << outcome << "\"} " << n << "\n";
  s << "# HELP dsv4_queue_depth Requests waiting for admission.\n# TYPE dsv4_queue_depth gauge\n"
    << "dsv4_queue_depth " << queued_ << "\n"
    << "# HELP dsv4_running_sequences Sequences admitted and not finished.\n# TYPE dsv4_running_sequences gauge\n"
    << "dsv4_running_sequences " << running_ << "\n"
    << "# HELP dsv4_engine_sequences Sequences holding state in the engines of every DP replica.\n# TYPE dsv4_engine_sequences gauge\n"
    << "dsv4_engine_sequences " << engine_sequences_ << "\n"
    << "# HELP dsv4_state_bytes_reserved State bytes reserved by admitted sequences.\n"
    << "# TYPE dsv4_state_bytes_reserved gauge\ndsv4_state_bytes_reserved " << reserved_ << "\n"
    << "# HELP dsv4_state_bytes_used State bytes held by the sequences of every DP replica (pool pages and fixed buffers).\n"
    << "# TYPE dsv4_state_bytes_used gauge\ndsv4_state_bytes_used " << used_ << "\n"
    << "# HELP dsv4_prompt_tokens_total Prompt tokens admitted.\n# TYPE dsv4_prompt_tokens_total counter\n"
    << "dsv4_prompt_tokens_total " << prompt_tokens_ << "\n"
    << "# HELP dsv4_generated_tokens_total Tokens generated.\n# TYPE dsv4_generated_tokens_total counter\n"
    << "dsv4_generated_tokens_total " << generated_tokens_ << "\n"
    << "# HELP dsv4_time_to_first_token_seconds Arrival to first token.\n"
    << "# TYPE dsv4_time_to_first_token_seconds histogram\n";
  std::string out = s.str();
  ttft_.render("dsv4_time_to_first_token_seconds", out);
  out += "# HELP dsv4_inter_token_seconds Time between tokens of one request.\n"
         "# TYPE dsv4_inter_token_seconds histogram\n";
  inter_token_.render("dsv4_inter_token_seconds", out);
  out += "# HELP dsv4_step_model_seconds Per serving step: rank 0's time inside the model (and waiting for the "
         "other ranks).\n# TYPE dsv4_step_model_seconds histogram\n";
  step_model_.render("dsv4_step_model_seconds", out);
  out += "# HELP dsv4_scheduler_overhead_seconds Per serving step: rank 0's time outside the model (scheduling, "
         "plan broadcast, sampling, streaming).\n# TYPE dsv4_scheduler_overhead_seconds histogram\n";
  step_overhead_.render("dsv4_scheduler_overhead_seconds", out);
  // The model counts them (process-wide): rank 0 runs the same forwards as every rank of its replica.
  out += "# HELP dsv4_pipelined_forwards_total Forward passes rank 0 ran as two micro-batches (chunks of at least "
         "DSV4_PIPELINE_MIN_TOKENS tokens).\n# TYPE dsv4_pipelined_forwards_total counter\n"
         "dsv4_pipelined_forwards_total " +
         std::to_string(parallel::cp_exchange_stats().pipelined_forwards) + "\n";
  return out;
}

MetricsHttpServer::MetricsHttpServer(const ServerMetrics& metrics, const std::string& host, int port)
    : metrics_(metrics) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  DSV4_CHECK_CODE(fd_ >= 0, ErrorCode::kIo) << "metrics: socket(): " << std::strerror(errno);
  const int one = 1;
  ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    ::close(fd_);
    DSV4_THROW(kInvalidArgument) << "metrics: '" << host << "' is not an IPv4 address";
  }
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd_, 16) != 0) {
    const int err = errno;
    ::close(fd_);
    DSV4_THROW(kIo) << "metrics: cannot listen on " << host << ":" << port << ": " << std::strerror(err);
  }
  socklen_t len = sizeof(addr);
  ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { serve(); });
}

MetricsHttpServer::~MetricsHttpServer() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  ::close(fd_);
}

void MetricsHttpServer::serve() {
  while (!stop_) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    // Read the request head (bounded: 8 KiB or 2 s), then answer and close: one request per connection.
    std::string head;
    char buf[1024];
    while (head.find("\r\n\r\n") == std::string::npos && head.size() < 8192) {
      pollfd q{c, POLLIN, 0};
      if (::poll(&q, 1, 2000) <= 0) break;
      const ssize_t n = ::recv(c, buf, sizeof(buf), 0);
      if (n <= 0) break;
      head.append(buf, static_cast<size_t>(n));
    }
    std::string status = "404 Not Found", body = "not found\n";
    if (head.rfind("GET /metrics ", 0) == 0 || head.rfind("GET /metrics?", 0) == 0) {
      status = "200 OK";
      body = metrics_.render();
    }
    const std::string response = "HTTP/1.1 " + status + "\r\nContent-Type: text/plain; version=0.0.4\r\n" +
                                 "Content-Length: " + std::to_string(body.size()) +
                                 "\r\nConnection: close\r\n\r\n" + body;
    size_t sent = 0;
    while (sent < response.size()) {
      const ssize_t n = ::send(c, response.data() + sent, response.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    ::close(c);
  }
}

}  // namespace dsv4::serve
