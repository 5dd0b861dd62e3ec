#include "runtime/config/deployment_config.h"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "runtime/core/error.h"

namespace dsv4 {
namespace {

// Walks one YAML mapping, remembering which keys were read so that anything left over (a typo) is an
// error naming its full dotted key.
class Section {
 public:
  Section(const YAML::Node& node, std::string prefix, const std::string& origin)
      : node_(node), prefix_(std::move(prefix)), origin_(origin) {
    DSV4_CHECK_ARG(node_.IsMap()) << origin_ << ": " << (prefix_.empty() ? "<top level>" : prefix_)
                                  << ": must be a mapping";
  }

  std::string key(const std::string& k) const { return prefix_.empty() ? k : prefix_ + "." + k; }
  const std::string& origin() const { return origin_; }

  bool has(const std::string& k) {
    seen_.insert(k);
    return node_[k].IsDefined() && !node_[k].IsNull();
  }

  Section section(const std::string& k) {
    seen_.insert(k);
    DSV4_CHECK_ARG(node_[k].IsDefined()) << origin_ << ": " << key(k) << ": missing";
    return Section(node_[k], key(k), origin_);
  }

  std::string get_string(const std::string& k) {
    YAML::Node v = scalar(k);
    return v.as<std::string>();
  }

  int64_t get_int(const std::string& k) {
    YAML::Node v = scalar(k);
    try {
      return v.as<int64_t>();
    } catch (const YAML::Exception&) {
      DSV4_THROW(kInvalidArgument) << origin_ << ": " << key(k) << ": expected an integer, got '" << v.as<std::string>()
                                   << "'";
    }
  }

  int64_t get_int(const std::string& k, int64_t fallback) { return has(k) ? get_int(k) : fallback; }
  std::string get_string(const std::string& k, const std::string& fallback) {
    return has(k) ? get_string(k) : fallback;
  }

  /// Throws on any key that was never asked for.
  void reject_unknown() const {
    for (const auto& entry : node_) {
      const std::string k = entry.first.as<std::string>();
      if (seen_.count(k) == 0) {
        std::ostringstream known;
        for (const auto& s : seen_) known << (known.tellp() > 0 ? ", " : "") << s;
        DSV4_THROW(kInvalidArgument) << origin_ << ": " << key(k) << ": unknown key (known here: " << known.str()
                                     << ")";
      }
    }
  }

 private:
  YAML::Node scalar(const std::string& k) {
    seen_.insert(k);
    YAML::Node v = node_[k];
    DSV4_CHECK_ARG(v.IsDefined() && !v.IsNull()) << origin_ << ": " << key(k) << ": missing";
    DSV4_CHECK_ARG(v.IsScalar()) << origin_ << ": " << key(k) << ": must be a single value";
    return v;
  }

  YAML::Node node_;
  std::string prefix_;
  const std::string& origin_;
  std::set<std::string> seen_;
};

std::filesystem::path resolve(const std::filesystem::path& base, const std::string& value) {
  if (value.empty()) return {};
  std::filesystem::path p(value);
  if (p.is_absolute() || base.empty()) return p.lexically_normal();
  return (base / p).lexically_normal();
}

std::string origin_name(const DeploymentConfig& c) {
  return c.source.empty() ? std::string("deployment") : c.source.filename().string();
}

}  // namespace

int64_t parse_byte_size(std::string_view text, std::string_view key) {
  size_t i = 0;
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  size_t digits_begin = i;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  std::string number(text.substr(digits_begin, i - digits_begin));
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  std::string unit(text.substr(i));
  DSV4_CHECK_ARG(!number.empty()) << key << ": expected a size such as '80GiB', got '" << text << "'";
  static const std::map<std::string, double> kUnits = {{"", 1.0},
                                                       {"B", 1.0},
                                                       {"KB", 1e3},
                                                       {"MB", 1e6},
                                                       {"GB", 1e9},
                                                       {"TB", 1e12},
                                                       {"KiB", 1024.0},
                                                       {"MiB", 1024.0 * 1024},
                                                       {"GiB", 1024.0 * 1024 * 1024},
                                                       {"TiB", 1024.0 * 1024 * 1024 * 1024}};
  auto it = kUnits.find(unit);
  DSV4_CHECK_ARG(it != kUnits.end()) << key << ": unknown size unit '" << unit
                                     << "' (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)";
  double value = 0;
  try {
    size_t used = 0;
    value = std::stod(number, &used);
    DSV4_CHECK_ARG(used == number.size()) << key << ": malformed number '" << number << "'";
  } catch (const std::logic_error&) {
    DSV4_THROW(kInvalidArgument) << key << ": malformed number '" << number << "'";
  }
  double bytes = value * it->second;
  DSV4_CHECK_ARG(bytes >= 1.0 && bytes < 9.0e18) << key << ": size out of range: '" << text << "'";
  return static_cast<int64_t>(bytes);
}

void DeploymentConfig::validate() const {
  const std::string o = origin_name(*this);
  DSV4_CHECK_ARG(!model_config.empty()) << o << ": model.config: missing";
  DSV4_CHECK_ARG(nodes >= 1) << o << ": nodes: must be >= 1, got " << nodes;
  DSV4_CHECK_ARG(gpus_per_node >= 0) << o << ": gpus_per_node: must be >= 0 (0 = CPU ranks), got " << gpus_per_node;
  DSV4_CHECK_ARG(ranks_per_node >= 1) << o << ": ranks_per_node: must be >= 1, got " << ranks_per_node;
  if (uses_gpus()) {
    DSV4_CHECK_ARG(ranks_per_node == gpus_per_node)
        << o << ": ranks_per_node: GPU deployments run one rank per GPU, so it must equal gpus_per_node ("
        << gpus_per_node << "), got " << ranks_per_node;
  }
  const std::pair<const char*, int64_t> dims[] = {
      {"layout.dp", layout.dp}, {"layout.tp", layout.tp}, {"layout.ep", layout.ep}, {"layout.cp", layout.cp}};
  for (const auto& [k, v] : dims) DSV4_CHECK_ARG(v >= 1) << o << ": " << k << ": must be >= 1, got " << v;
  DSV4_CHECK_ARG(layout.world() == world_size())
      << o << ": layout: dp*tp*cp = " << layout.dp << "*" << layout.tp << "*" << layout.cp << " = " << layout.world()
      << " ranks, but nodes*ranks_per_node = " << nodes << "*" << ranks_per_node << " = " << world_size();
  DSV4_CHECK_ARG(world_size() % layout.ep == 0)
      << o << ": layout.ep: " << layout.ep << " does not divide the world of " << world_size() << " ranks";
  DSV4_CHECK_ARG(memory_budget_per_rank > 0) << o << ": memory.budget_per_rank: missing or zero";

  const std::pair<const char*, int64_t> limits[] = {{"scheduler.max_batch_tokens", scheduler.max_batch_tokens},
                                                    {"scheduler.max_running", scheduler.max_running},
                                                    {"scheduler.max_queue", scheduler.max_queue},
                                                    {"scheduler.max_prompt_tokens", scheduler.max_prompt_tokens}};
  for (const auto& [k, v] : limits) DSV4_CHECK_ARG(v >= 1) << o << ": " << k << ": must be >= 1, got " << v;

  const auto colon = server.address.rfind(':');
  DSV4_CHECK_ARG(colon != std::string::npos && colon > 0 && colon + 1 < server.address.size())
      << o << ": server.address: expected host:port, got '" << server.address << "'";
  int64_t port = -1;
  try {
    size_t used = 0;
    const std::string port_text = server.address.substr(colon + 1);
    port = std::stoll(port_text, &used);
    if (used != port_text.size()) port = -1;
  } catch (const std::logic_error&) {
    port = -1;
  }
  DSV4_CHECK_ARG(port >= 1 && port <= 65535)
      << o << ": server.address: port must be 1..65535, got '" << server.address << "'";
  DSV4_CHECK_ARG(server.tls_cert.empty() == server.tls_key.empty())
      << o << ": server.tls: cert and key must be given together";
  DSV4_CHECK_ARG(server.metrics_port >= 0 && server.metrics_port <= 65535)
      << o << ": server.metrics_port: must be 0 (off) or 1..65535, got " << server.metrics_port;
  DSV4_CHECK_ARG(server.metrics_port == 0 || server.metrics_port != port)
      << o << ": server.metrics_port: must differ from the gRPC port " << port;
}

DeploymentConfig parse_deployment_config(const std::string& yaml_text, const std::string& origin,
                                         const std::filesystem::path& base_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    DSV4_THROW(kInvalidArgument) << origin << ": YAML syntax error at line " << e.mark.line + 1 << ": " << e.msg;
  }
  DeploymentConfig c;
  Section top(root, "", origin);
  c.name = top.get_string("name", "");

  Section model = top.section("model");
  c.model_config = resolve(base_dir, model.get_string("config"));
  c.checkpoint = resolve(base_dir, model.get_string("checkpoint", ""));
  model.reject_unknown();

  Section layout = top.section("layout");
  c.layout.dp = layout.get_int("dp", 1);
  c.layout.tp = layout.get_int("tp", 1);
  c.layout.ep = layout.get_int("ep", 1);
  c.layout.cp = layout.get_int("cp", 1);
  layout.reject_unknown();

  c.nodes = top.get_int("nodes", 1);
  c.gpus_per_node = top.get_int("gpus_per_node");
  if (top.has("ranks_per_node")) {
    c.ranks_per_node = top.get_int("ranks_per_node");
  } else {
    DSV4_CHECK_ARG(c.gpus_per_node > 0) << origin << ": ranks_per_node: missing (required when gpus_per_node = 0)";
    c.ranks_per_node = c.gpus_per_node;
  }

  Section memory = top.section("memory");
  c.memory_budget_per_rank = parse_byte_size(memory.get_string("budget_per_rank"), origin + ": memory.budget_per_rank");
  memory.reject_unknown();

  if (top.has("scheduler")) {
    Section s = top.section("scheduler");
    c.scheduler.max_batch_tokens = s.get_int("max_batch_tokens", c.scheduler.max_batch_tokens);
    c.scheduler.max_running = s.get_int("max_running", c.scheduler.max_running);
    c.scheduler.max_queue = s.get_int("max_queue", c.scheduler.max_queue);
    c.scheduler.max_prompt_tokens = s.get_int("max_prompt_tokens", c.scheduler.max_prompt_tokens);
    s.reject_unknown();
  }

  if (top.has("server")) {
    Section s = top.section("server");
    c.server.address = s.get_string("address", c.server.address);
    if (s.has("tls")) {
      Section tls = s.section("tls");
      c.server.tls_cert = resolve(base_dir, tls.get_string("cert"));
      c.server.tls_key = resolve(base_dir, tls.get_string("key"));
      tls.reject_unknown();
    }
    c.server.auth_token_file = resolve(base_dir, s.get_string("auth_token_file", ""));
    c.server.metrics_port = s.get_int("metrics_port", 0);
    s.reject_unknown();
  }

  if (top.has("logging")) {
    Section s = top.section("logging");
    const std::string level = s.get_string("level", "info");
    try {
      c.log_level = parse_log_level(level);
    } catch (const Error&) {
      DSV4_THROW(kInvalidArgument) << origin << ": logging.level: expected trace|debug|info|warn|error|off, got '"
                                   << level << "'";
    }
    s.reject_unknown();
  }
  top.reject_unknown();
  c.source = origin;  // load_deployment_config replaces it with the absolute path
  c.validate();
  return c;
}

DeploymentConfig load_deployment_config(const std::filesystem::path& path) {
  std::ifstream in(path);
  DSV4_CHECK_CODE(in.good(), ErrorCode::kIo) << "cannot read deployment config " << path.string();
  std::stringstream text;
  text << in.rdbuf();
  const auto absolute = std::filesystem::absolute(path);
  DeploymentConfig c = parse_deployment_config(text.str(), path.filename().string(), absolute.parent_path());
  c.source = absolute.lexically_normal();
  if (c.name.empty()) c.name = path.stem().string();
  return c;
}

std::vector<std::string> layout_problems(const ModelConfig& m, const ParallelLayout& l) {
  std::vector<std::string> out;
  auto add = [&out](const std::string& s) { out.push_back(s); };
  const int64_t world = l.world();
  if (world % l.ep != 0) {
    add("ep=" + std::to_string(l.ep) + " does not divide the world of dp*tp*cp=" + std::to_string(world) + " ranks");
  }
  auto divisible = [&](int64_t n, int64_t by, const char* by_name, const std::string& what) {
    if (n % by != 0) {
      add(what + " = " + std::to_string(n) + " is not divisible by " + by_name + "=" + std::to_string(by));
      return false;
    }
    return true;
  };
  divisible(m.num_heads, l.tp, "tp", "attention heads (num_attention_heads)");
  divisible(m.o_groups, l.tp, "tp", "output groups (o_groups)");
  divisible(m.num_routed_experts, l.ep, "ep", "routed experts (n_routed_experts)");

  // TP slices of FP8 block-scaled tensors must cover whole 128 x 128 scale blocks, or a rank would own part
  // of a block whose single scale it shares with another rank (the vLLM / SGLang TP=16 V4-Pro failure).
  const int64_t block = m.fp8_block;
  auto aligned = [&](int64_t width, const std::string& what) {
    if (width % l.tp != 0) return;  // reported by a divisibility check above, or below
    const int64_t slice = width / l.tp;
    if (slice % block != 0) {
      add(what + ": " + std::to_string(width) + " / tp=" + std::to_string(l.tp) + " = " + std::to_string(slice) +
          " columns per rank, not a multiple of the " + std::to_string(block) + "-wide FP8 scale block");
    }
  };
  divisible(m.moe_intermediate_size, l.tp, "tp", "shared expert FFN width (moe_intermediate_size)");
  if (m.num_shared_experts > 0) {
    aligned(m.moe_intermediate_size * m.num_shared_experts, "shared expert FFN width (moe_intermediate_size)");
  }
  if (m.o_groups % l.tp == 0) aligned(m.o_groups * m.o_lora_rank, "output LoRA rows o_groups*o_lora_rank (wo_a/wo_b)");
  if (m.num_heads % l.tp == 0) aligned(m.num_heads * m.head_dim, "query rows num_heads*head_dim (wq_b)");
  return out;
}

void check_layout(const ModelConfig& model, const ParallelLayout& layout) {
  const auto problems = layout_problems(model, layout);
  if (problems.empty()) return;
  std::ostringstream msg;
  msg << "layout " << to_string(layout) << " cannot shard this model:";
  for (const auto& p : problems) msg << "\n  - " << p;
  DSV4_THROW(kInvalidArgument) << msg.str();
}

std::string to_string(const ParallelLayout& l) {
  std::ostringstream s;
  s << "dp=" << l.dp << " tp=" << l.tp << " ep=" << l.ep << " cp=" << l.cp;
  return s.str();
}

}  // namespace dsv4
