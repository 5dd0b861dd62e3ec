#include "launcher/launch/hardware.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <set>
#include <sstream>

#include "runtime/core/error.h"

namespace dsv4::launch {

const std::map<std::string, std::string>& hardware_fields() {
  static const std::map<std::string, std::string> kFields = {
      {"memory_bytes", "B per device"},
      {"memory_bandwidth", "B/s achievable"},
      {"bf16_flops", "FLOP/s achievable dense BF16 GEMM"},
      {"fp8_flops", "FLOP/s achievable dense FP8 GEMM"},
      {"intra_bandwidth", "B/s per device per direction inside a node (collectives)"},
      {"intra_latency", "s per collective hop inside a node"},
      {"inter_bandwidth", "B/s per device per direction across nodes (collectives)"},
      {"inter_latency", "s per collective hop across nodes"},
      {"a2a_intra_bandwidth", "B/s per device, expert dispatch/combine inside a node"},
      {"a2a_inter_bandwidth", "B/s per device, expert dispatch/combine across nodes"},
      {"a2a_latency", "s fixed cost of one dispatch or combine"},
      {"step_overhead", "s per engine step"},
  };
  return kFields;
}

const std::map<std::string, std::string>& cpu_hardware_fields() {
  static const std::map<std::string, std::string> kFields = {
      {"cpu_fp8_pass", "FP8 weights per s per 8-token pass of the CPU linear kernel (host, all cores)"},
      {"cpu_fp8_flops", "FLOP/s per token of the CPU linear kernel on FP8 weights (host)"},
      {"cpu_fp4_pass", "FP4 weights per s per 8-token pass (host)"},
      {"cpu_fp4_flops", "FLOP/s per token on FP4 weights (host)"},
      {"cpu_bf16_pass", "BF16 weights per s per 8-token pass (host)"},
      {"cpu_bf16_flops", "FLOP/s per token on BF16 weights (host)"},
      {"cpu_f32_pass", "F32 weights per s per 8-token pass (host)"},
      {"cpu_f32_flops", "FLOP/s per token on F32 weights (host)"},
  };
  return kFields;
}

const HardwareValue& HardwareProfile::entry(const std::string& field) const {
  auto it = values.find(field);
  DSV4_CHECK_ARG(it != values.end()) << "hardware profile " << name << ": field '" << field << "' missing";
  return it->second;
}

double HardwareProfile::get(const std::string& field) const {
  const HardwareValue& v = entry(field);
  DSV4_CHECK_ARG(v.source != "unmeasured")
      << "hardware profile " << name << ": '" << field << "' is not measured yet (" << v.note
      << "); measure it and fill it in before simulating with this profile";
  return v.value;
}

YAML::Node load_yaml_mapping(const std::string& yaml_text, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    DSV4_THROW(kInvalidArgument) << origin << ": YAML syntax error at line " << e.mark.line + 1 << ": " << e.msg;
  }
  DSV4_CHECK_ARG(root.IsMap()) << origin << ": must be a mapping";
  return root;
}

HardwareProfile parse_hardware_profile(const std::string& yaml_text, const std::string& origin) {
  const YAML::Node root = load_yaml_mapping(yaml_text, origin);
  HardwareProfile p;
  static const std::set<std::string> kSources = {"measured", "published", "datasheet", "estimate", "unmeasured"};
  std::set<std::string> top_seen;
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    top_seen.insert(key);
    if (key == "name") {
      p.name = kv.second.as<std::string>();
    } else if (key == "device") {
      p.device = kv.second.as<std::string>();
      DSV4_CHECK_ARG(p.device == "gpu" || p.device == "cpu") << origin << ": device: must be gpu or cpu";
    } else if (key == "notes") {
      // free text
    } else if (hardware_fields().count(key) != 0 || cpu_hardware_fields().count(key) != 0) {
      const YAML::Node& n = kv.second;
      DSV4_CHECK_ARG(n.IsMap()) << origin << ": " << key << ": expected {value: X, source: S, note: ...}";
      HardwareValue v;
      for (const auto& f : n) {
        const std::string sub = f.first.as<std::string>();
        DSV4_CHECK_ARG(sub == "value" || sub == "source" || sub == "note")
            << origin << ": " << key << "." << sub << ": unknown key (value, source, note)";
      }
      DSV4_CHECK_ARG(n["source"].IsDefined()) << origin << ": " << key << ".source: missing";
      v.source = n["source"].as<std::string>();
      DSV4_CHECK_ARG(kSources.count(v.source) != 0)
          << origin << ": " << key << ".source: must be measured|published|datasheet|estimate|unmeasured, got '"
          << v.source << "'";
      v.note = n["note"].IsDefined() ? n["note"].as<std::string>() : "";
      const bool null_value = !n["value"].IsDefined() || n["value"].IsNull();
      if (v.source == "unmeasured") {
        DSV4_CHECK_ARG(null_value) << origin << ": " << key << ": an unmeasured field must have value null";
      } else {
        DSV4_CHECK_ARG(!null_value) << origin << ": " << key << ".value: missing";
        try {
          v.value = n["value"].as<double>();
        } catch (const YAML::Exception&) {
          DSV4_THROW(kInvalidArgument) << origin << ": " << key << ".value: expected a number";
        }
        DSV4_CHECK_ARG(v.value >= 0) << origin << ": " << key << ".value: must be >= 0";
      }
      p.values[key] = v;
    } else {
      DSV4_THROW(kInvalidArgument) << origin << ": " << key << ": unknown key";
    }
  }
  DSV4_CHECK_ARG(!p.name.empty()) << origin << ": name: missing";
  DSV4_CHECK_ARG(!p.device.empty()) << origin << ": device: missing";
  for (const auto& [field, unit] : hardware_fields()) {
    DSV4_CHECK_ARG(p.values.count(field) != 0) << origin << ": " << field << ": missing (" << unit << ")";
  }
  // The CPU linear-kernel fields describe the project's CPU kernels: required for a cpu device, meaningless
  // (and refused, so that a typo cannot hide) for a gpu.
  for (const auto& [field, unit] : cpu_hardware_fields()) {
    if (p.device == "cpu") {
      DSV4_CHECK_ARG(p.values.count(field) != 0) << origin << ": " << field << ": missing (" << unit << ")";
    } else {
      DSV4_CHECK_ARG(p.values.count(field) == 0) << origin << ": " << field << ": only for device: cpu";
    }
  }
  return p;
}

HardwareProfile load_hardware_profile(const std::filesystem::path& path) {
  std::ifstream in(path);
  DSV4_CHECK_CODE(in.good(), ErrorCode::kIo) << "cannot read hardware profile " << path.string();
  std::stringstream text;
  text << in.rdbuf();
  return parse_hardware_profile(text.str(), path.filename().string());
}

}  // namespace dsv4::launch
