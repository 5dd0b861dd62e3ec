// The typed, validated configuration of one deployment: which model, on how many ranks laid out how, with
// what memory budget, scheduler limits, server endpoint and logging. Parsed from a deployment YAML
// (configs/deployments/*.yaml); read by `dsv4-launch` (plan, run, slurm) and by the server.
//
// Unknown keys are errors: a typo such as `max_runing` must not silently fall back to a default. Every error
// names the file and the full YAML key (e.g. "tiny-cpu.yaml: scheduler.max_running: must be >= 1").
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/config/model_config.h"
#include "runtime/core/logging.h"

namespace dsv4 {

/// How the world of ranks is split (ARCHITECTURE.md "Parallel layout"). world = dp * tp * cp; the expert
/// group (ep ranks) is laid over the same world, so ep must divide it.
struct ParallelLayout {
  int64_t dp = 1;  // attention replicas
  int64_t tp = 1;  // tensor parallel width of the dense part (heads, output groups, shared expert, vocab)
  int64_t ep = 1;  // ranks the routed experts are spread over
  int64_t cp = 1;  // context-parallel ranks a single long request spans

  int64_t world() const { return dp * tp * cp; }
  bool operator==(const ParallelLayout&) const = default;
};

/// Admission and batching limits of the scheduler.
struct SchedulerLimits {
  int64_t max_batch_tokens = 8192;    // tokens (prefill + decode) in one engine step
  int64_t max_running = 256;          // sequences holding state at once
  int64_t max_queue = 1024;           // requests waiting for admission; more are refused (RESOURCE_EXHAUSTED)
  int64_t max_prompt_tokens = 65536;  // longer prompts are refused (INVALID_ARGUMENT)

  bool operator==(const SchedulerLimits&) const = default;
};

/// The gRPC endpoint.
struct ServerSettings {
  std::string address = "127.0.0.1:50051";  // host:port
  std::filesystem::path tls_cert;           // PEM; empty with tls_key empty = plaintext
  std::filesystem::path tls_key;
  std::filesystem::path auth_token_file;  // empty = no bearer token required
  int64_t metrics_port = 0;               // Prometheus /metrics; 0 = disabled

  bool tls_enabled() const { return !tls_cert.empty(); }
  bool operator==(const ServerSettings&) const = default;
};

struct DeploymentConfig {
  std::filesystem::path source;        // the YAML file it came from ("" when parsed from a string)
  std::string name;                    // optional label; defaults to the file stem
  std::filesystem::path model_config;  // config.json of the model (absolute, or relative to the YAML's folder)
  std::filesystem::path checkpoint;    // folder of safetensors shards (same path rule)
  ParallelLayout layout;
  int64_t nodes = 1;
  int64_t gpus_per_node = 0;           // 0 = CPU ranks
  int64_t ranks_per_node = 0;          // = gpus_per_node for GPU deployments; required for CPU ones
  int64_t memory_budget_per_rank = 0;  // bytes a rank may use (HBM for GPU ranks, host memory for CPU ranks)
  SchedulerLimits scheduler;
  ServerSettings server;
  LogLevel log_level = LogLevel::kInfo;

  bool uses_gpus() const { return gpus_per_node > 0; }
  int64_t world_size() const { return nodes * ranks_per_node; }

  /// Self-consistency (without the model): positive sizes, world = nodes * ranks_per_node = dp*tp*cp,
  /// ep divides the world, TLS cert and key given together, address "host:port". Throws
  /// Error(kInvalidArgument) naming the YAML key.
  void validate() const;
};

/// Parses and validates a deployment YAML. Relative paths inside it are resolved against the YAML's folder.
DeploymentConfig load_deployment_config(const std::filesystem::path& path);
/// Same, from text; `base_dir` resolves relative paths, `origin` prefixes error messages.
DeploymentConfig parse_deployment_config(const std::string& yaml_text, const std::string& origin = "deployment",
                                         const std::filesystem::path& base_dir = {});

/// "80GiB", "512 MiB", "4GB", "1073741824" -> bytes. Throws Error(kInvalidArgument) naming `key`.
int64_t parse_byte_size(std::string_view text, std::string_view key);

/// Every reason `layout` cannot shard `model` (empty when it can). The rules, which mirror issue 4's Mesh:
///  - world = dp * tp * cp, and ep divides the world;
///  - attention heads and output groups divisible by tp; routed experts divisible by ep;
///  - every TP slice of an FP8 (128 x 128 block-scaled) tensor a multiple of the block: the shared expert's
///    FFN width / tp, o_lora_rank * o_groups / tp (wo_a rows, wo_b columns) and heads * head_dim / tp (wq_b
///    rows). wq_a (q_lora_rank), the single KV head, the compressors and the lightning indexer are
///    replicated on every TP rank (splitting the indexer by heads would need an all-reduce of a score per
///    compressed row per query), so they impose nothing.
std::vector<std::string> layout_problems(const ModelConfig& model, const ParallelLayout& layout);

/// Throws Error(kInvalidArgument) listing every problem from layout_problems().
void check_layout(const ModelConfig& model, const ParallelLayout& layout);

/// "dp=16 tp=8 ep=128 cp=1".
std::string to_string(const ParallelLayout& layout);

}  // namespace dsv4
