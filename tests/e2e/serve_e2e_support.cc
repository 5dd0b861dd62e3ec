#include "tests/e2e/serve_e2e_support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <grpcpp/generic/generic_stub.h>

#include <future>

#include "tests/support/test_paths.h"

namespace dsv4::testing {

ServerProcess::ServerProcess(const std::string& checkpoint, const std::vector<std::string>& extra_args,
                             const std::vector<std::string>& launcher, const std::string& tls_ca) {
  const char* bin = std::getenv("DSV4_SERVER_BIN");
  if (bin == nullptr) throw std::runtime_error("DSV4_SERVER_BIN is not set (run through ctest)");
  static int counter = 0;
  dir_ = scratch_dir("serve_e2e_" + std::to_string(counter++)).string();
  const std::string port_file = dir_ + "/ports";
  std::vector<std::string> args = {bin, "--checkpoint", checkpoint, "--port-file", port_file,
                                    "--address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0",
                                    "--numerics", "plain"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  args.insert(args.begin(), launcher.begin(), launcher.end());
  pid_ = ::fork();
  if (pid_ == 0) {
    const std::string log = dir_ + "/server.log";
    FILE* f = std::fopen(log.c_str(), "w");
    ::dup2(fileno(f), 1);
    ::dup2(fileno(f), 2);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    std::_Exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream in(port_file);
    std::string g, m, p;
    if (in >> g >> m >> p && g.rfind("grpc=", 0) == 0) {
      grpc_port_ = std::stoi(g.substr(5));
      metrics_port_ = std::stoi(m.substr(8));
      std::istringstream pids(p.substr(5));
      std::string pid;
      while (std::getline(pids, pid, ',')) rank_pids_.push_back(std::stoi(pid));
      break;
    }
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("dsv4-server exited early:\n" + log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (grpc_port_ == 0) throw std::runtime_error("dsv4-server did not report its ports:\n" + log());
  // Wait until the model is loaded: GetModelInfo answers UNAVAILABLE before.
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!tls_ca.empty()) {
    std::ifstream in(tls_ca);
    std::ostringstream pem;
    pem << in.rdbuf();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = pem.str();
    creds = grpc::SslCredentials(ssl);
  }
  auto channel = grpc::CreateChannel(address(), creds);
  auto stub = v1::Inference::NewStub(channel);
  while (std::chrono::steady_clock::now() < deadline) {
    grpc::ClientContext ctx;
    std::string token;
    for (size_t i = 0; i + 1 < extra_args.size(); ++i) {
      if (extra_args[i] == "--auth-token-file") std::ifstream(extra_args[i + 1]) >> token;
    }
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    v1::ModelInfo info;
    if (stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok()) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw std::runtime_error("dsv4-server never became ready:\n" + log());
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  std::filesystem::remove_all(dir_);
}

int ServerProcess::terminate_and_wait(int timeout_s) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  return wait_exit(timeout_s);
}

int ServerProcess::wait_exit(int timeout_s) {
  if (pid_ <= 0) return -1;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

std::string ServerProcess::log() const {
  std::ifstream in(dir_ + "/server.log");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string http_get_metrics(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  std::string body;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
    ::send(fd, req.data(), req.size(), 0);
    char buf[4096];
    ssize_t n;
    std::string all;
    while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) all.append(buf, static_cast<size_t>(n));
    const size_t head = all.find("\r\n\r\n");
    if (all.rfind("HTTP/1.1 200", 0) == 0 && head != std::string::npos) body = all.substr(head + 4);
  }
  ::close(fd);
  return body;
}

double metric_value(const std::string& text, const std::string& name_and_labels) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name_and_labels + " ", 0) == 0) return std::stod(line.substr(name_and_labels.size() + 1));
  }
  return -1;
}

int health_status(const std::string& address) {
  grpc::GenericStub stub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  // HealthCheckRequest{service: ""} serializes to no bytes; a default ByteBuffer would be "no message".
  grpc::Slice empty("", 0);
  grpc::ByteBuffer request(&empty, 1), response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&](grpc::Status st) { done.set_value(st); });
  const grpc::Status st = done.get_future().get();
  if (!st.ok()) return -static_cast<int>(st.error_code());
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return -1;
  std::string bytes;
  for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  // HealthCheckResponse{status = 1 (SERVING) or 2 (NOT_SERVING)}: field 1, varint -> 0x08 <status>.
  if (bytes.size() == 2 && bytes[0] == 0x08) return bytes[1];
  return -1;
}

StreamResult generate(v1::Inference::Stub& stub, const v1::GenerateRequest& request, const std::string& token) {
  grpc::ClientContext ctx;
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto reader = stub.Generate(&ctx, request);
  StreamResult r;
  v1::GenerateResponse m;
  while (reader->Read(&m)) {
    r.tokens.insert(r.tokens.end(), m.token_ids().begin(), m.token_ids().end());
    if (m.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) r.finish = m.finish_reason();
    r.messages.push_back(m);
  }
  r.status = reader->Finish();
  return r;
}

v1::GenerateRequest token_request(const std::vector<int32_t>& prompt, int32_t max_tokens, float temperature,
                                  uint64_t seed) {
  v1::GenerateRequest r;
  r.mutable_tokens()->mutable_token_ids()->Add(prompt.begin(), prompt.end());
  r.set_max_tokens(max_tokens);
  r.mutable_sampling()->set_temperature(temperature);
  r.mutable_sampling()->set_seed(seed);
  return r;
}

}  // namespace dsv4::testing
