// `dsv4 inspect` (summary + validation of a checkpoint directory, or one tensor dequantised to fp32 as JSON)
// and `dsv4 make-checkpoint` (a random-weight checkpoint in the official layout).
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "launcher/cli/command.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/expected_tensors.h"
#include "runtime/checkpoint/quant.h"
#include "runtime/checkpoint/validate.h"
#include "runtime/checkpoint/writer.h"
#include "runtime/config/model_config.h"
#include "runtime/core/error.h"

namespace dsv4::cli {
namespace {

// The published models, told apart by their dimensions (their config.json files carry no name).
std::string model_kind(const ModelConfig& c) {
  std::string base = c.expert_dtype == DType::kF8E4M3 ? "-Base" : "";
  if (c.hidden_size == 4096 && c.num_layers == 43 && c.num_routed_experts == 256) return "DeepSeek-V4-Flash" + base;
  if (c.hidden_size == 7168 && c.num_layers == 61 && c.num_routed_experts == 384) return "DeepSeek-V4-Pro" + base;
  return "custom";
}

// Prints `values` (row-major, `shape`) as nested JSON arrays; non-finite values as null (JSON has no NaN).
void print_json_array(std::ostream& os, const float* values, const Shape& shape) {
  if (shape.rank() == 0) {
    os << (std::isfinite(values[0]) ? nlohmann::json(values[0]).dump() : "null");
    return;
  }
  int64_t inner = 1;
  for (int d = 1; d < shape.rank(); ++d) inner *= shape[d];
  Shape rest;
  for (int d = 1; d < shape.rank(); ++d) rest.push_back(shape[d]);
  os << "[";
  for (int64_t i = 0; i < shape[0]; ++i) {
    if (i > 0) os << ",";
    if (shape.rank() == 1) {
      os << (std::isfinite(values[i]) ? nlohmann::json(values[i]).dump() : "null");
    } else {
      print_json_array(os, values + i * inner, rest);
    }
  }
  os << "]";
}

void print_tensor(const Checkpoint& ckpt, const std::string& name) {
  const TensorView stored = ckpt.tensor(name);
  std::optional<TensorView> scale;
  const std::string suffix = ".weight";
  if (name.size() > suffix.size() && name.ends_with(suffix) &&
      (stored.dtype == DType::kF8E4M3 || stored.dtype == DType::kI8)) {
    const std::string scale_name = name.substr(0, name.size() - suffix.size()) + ".scale";
    if (ckpt.has(scale_name)) scale = ckpt.tensor(scale_name);
  }
  const ModelConfig& c = ckpt.config();
  Tensor values;
  try {
    values = dequantize(stored, scale ? &*scale : nullptr, c.fp8_block, c.fp4_block);
  } catch (const Error& e) {
    DSV4_THROW(kInvalidCheckpoint) << ckpt.dir().string() << ": tensor '" << name << "': " << e.message();
  }
  std::ostringstream os;
  print_json_array(os, values.as<float>(), values.shape());
  std::cout << os.str() << "\n";
}

void inspect(const std::string& dir, const std::string& tensor, bool as_json, bool skip_scale_scan) {
  Checkpoint ckpt = Checkpoint::open(dir);
  if (!tensor.empty()) {
    print_tensor(ckpt, tensor);
    return;
  }
  const ModelConfig& c = ckpt.config();
  int64_t params = 0;
  std::map<std::string, std::pair<int64_t, uint64_t>> by_dtype;  // dtype -> (tensors, bytes)
  for (const std::string& name : ckpt.names()) {
    const TensorView v = ckpt.tensor(name);
    params += v.numel();
    auto& [count, bytes] = by_dtype[std::string(dtype_name(v.dtype))];
    ++count;
    bytes += v.nbytes();
  }
  int64_t swa = 0, c4 = 0, c128 = 0;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    switch (c.attention_kind(l)) {
      case AttentionKind::kSlidingWindow: ++swa; break;
      case AttentionKind::kCompressed4: ++c4; break;
      case AttentionKind::kCompressed128: ++c128; break;
    }
  }
  ValidateOptions options;
  options.scan_scales = !skip_scale_scan;
  const ValidationReport report = validate_checkpoint(ckpt, options);
  const int64_t names = static_cast<int64_t>(ckpt.names().size());

  if (as_json) {
    nlohmann::ordered_json j;
    j["checkpoint"] = dir;
    j["model"] = model_kind(c);
    j["layers"] = {{"total", c.num_layers}, {"sliding_window", swa}, {"compressed_4", c4}, {"compressed_128", c128},
                   {"hash", c.num_hash_layers}, {"mtp", c.num_mtp_layers}};
    j["experts"] = {{"routed", c.num_routed_experts}, {"per_token", c.num_experts_per_token},
                    {"shared", c.num_shared_experts}, {"format", dtype_name(c.expert_dtype)}};
    j["tensors"] = names;
    j["parameters"] = params;
    j["bytes"] = ckpt.total_bytes();
    for (const auto& [dtype, cb] : by_dtype) j["bytes_by_dtype"][dtype] = {{"tensors", cb.first}, {"bytes", cb.second}};
    j["valid"] = report.ok();
    j["issues"] = nlohmann::ordered_json::array();
    for (const auto& i : report.issues) {
      j["issues"].push_back({{"kind", issue_kind_name(i.kind)}, {"tensor", i.tensor}, {"detail", i.detail}});
    }
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << "checkpoint  " << dir << "\n"
              << "model       " << model_kind(c) << " (hidden " << c.hidden_size << ", vocab " << c.vocab_size << ")\n"
              << "layers      " << c.num_layers << " main: " << swa << " sliding-window, " << c4 << " compressed-4 (CSA), "
              << c128 << " compressed-128 (HCA); " << c.num_hash_layers << " hash-routed; " << c.num_mtp_layers
              << " MTP\n"
              << "experts     " << c.num_routed_experts << " routed (" << c.num_experts_per_token << " per token, "
              << dtype_name(c.expert_dtype) << "), " << c.num_shared_experts << " shared\n"
              << "tensors     " << names << " (" << report.expected_count << " expected)\n"
              << "parameters  " << params << " (stored elements, packed FP4 counted per byte)\n"
              << "bytes       " << ckpt.total_bytes() << "\n";
    for (const auto& [dtype, cb] : by_dtype) {
      std::printf("  %-8s %8lld tensors %16llu bytes\n", dtype.c_str(), static_cast<long long>(cb.first),
                  static_cast<unsigned long long>(cb.second));
    }
    std::fflush(stdout);
    constexpr size_t kShown = 20;
    for (size_t i = 0; i < report.issues.size() && i < kShown; ++i) {
      const auto& issue = report.issues[i];
      std::cout << "  " << issue_kind_name(issue.kind) << ": " << issue.tensor << " (" << issue.detail << ")\n";
    }
    if (report.issues.size() > kShown) std::cout << "  ... and " << report.issues.size() - kShown << " more\n";
    std::cout << "validation  " << (report.ok() ? "OK" : "FAILED") << "\n";
  }
  std::cout.flush();
  if (!report.ok()) {
    using K = CheckpointIssue::Kind;
    const auto& first = report.issues.front();
    DSV4_THROW(kInvalidCheckpoint) << dir << ": " << report.count(K::kMissing) << " missing, "
                                   << report.count(K::kUnexpected) << " unexpected, " << report.count(K::kWrongShape)
                                   << " wrong shape, " << report.count(K::kWrongDtype) << " wrong dtype, "
                                   << report.count(K::kNonFiniteScale) << " non-finite scale; first: tensor '"
                                   << first.tensor << "' " << issue_kind_name(first.kind) << " (" << first.detail << ")";
  }
}

void setup_inspect(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "Summarise and validate a checkpoint, or print one tensor as fp32 JSON");
  struct Args {
    std::string dir, tensor;
    bool json = false, skip_scan = false;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("--checkpoint", args->dir, "checkpoint directory")->required();
  cmd->add_option("--tensor", args->tensor, "print this tensor dequantised to fp32 as a JSON array");
  cmd->add_flag("--json", args->json, "print the summary and validation as JSON");
  cmd->add_flag("--skip-scale-scan", args->skip_scan, "do not read scale tensors to look for NaN/Inf");
  cmd->callback([args] { inspect(args->dir, args->tensor, args->json, args->skip_scan); });
}
DSV4_REGISTER_COMMAND(inspect, setup_inspect);

void setup_make_checkpoint(CLI::App& app) {
  auto* cmd = app.add_subcommand("make-checkpoint", "Write a random-weight checkpoint in the official layout");
  struct Args {
    std::string config, out;
    uint64_t seed = 0;
    int shards = 1;
    std::vector<std::string> tokenizer;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("--config", args->config, "model config.json (official or transformers form)")->required();
  cmd->add_option("--seed", args->seed, "random seed")->required();
  cmd->add_option("--out", args->out, "output directory")->required();
  cmd->add_option("--shards", args->shards, "number of safetensors shards (1: a single model.safetensors)");
  cmd->add_option("--tokenizer", args->tokenizer, "tokenizer files to copy (repeatable)");
  cmd->callback([args] {
    const ModelConfig config = load_model_config(args->config);
    std::vector<std::filesystem::path> tok(args->tokenizer.begin(), args->tokenizer.end());
    make_random_checkpoint(config, args->seed, args->out, args->shards, tok);
    const auto tensors = expected_tensors(config);
    std::cout << "wrote " << tensors.size() << " tensors (" << stored_parameter_count(tensors)
              << " stored parameters) in " << args->shards << " shard(s) to " << args->out << "\n";
  });
}
DSV4_REGISTER_COMMAND(make_checkpoint, setup_make_checkpoint);

}  // namespace
}  // namespace dsv4::cli
