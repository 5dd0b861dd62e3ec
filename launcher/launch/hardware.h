// Hardware profiles for the simulator (configs/hardware/*.yaml). Every number carries its provenance, because
// a prediction is only as good as the least trustworthy input behind it:
//   measured   - measured by this project on this kind of machine
//   published  - measured by someone else and published (ANCHORS.md: DeepEP, DeepGEMM tables)
//   datasheet  - the vendor's specification (a peak, rarely reached)
//   estimate   - an engineering guess, stated as such
//   unmeasured - not known yet (value null); a simulation that needs it stops and names the field
#pragma once

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <map>
#include <string>

namespace dsv4::launch {

struct HardwareValue {
  double value = 0;
  std::string source;  // measured | published | datasheet | estimate | unmeasured
  std::string note;
};

struct HardwareProfile {
  std::string name;
  std::string device;  // "gpu" or "cpu"
  std::map<std::string, HardwareValue> values;

  /// The value of `field`; throws Error(kInvalidArgument) naming the profile and field when it is missing or
  /// unmeasured.
  double get(const std::string& field) const;
  const HardwareValue& entry(const std::string& field) const;
};

/// The fields a profile must define (value or explicit null), with their units:
///   memory_bytes (B per device), memory_bandwidth (B/s, achievable), bf16_flops and fp8_flops (FLOP/s,
///   achievable dense), intra_bandwidth / inter_bandwidth (B/s per device per direction, for collectives inside
///   a node and across nodes), intra_latency / inter_latency (s per collective hop), a2a_intra_bandwidth /
///   a2a_inter_bandwidth (B/s per device achieved by expert dispatch/combine kernels), a2a_latency (s per
///   dispatch or combine), step_overhead (s per engine step: launches, scheduling, sampling synchronisation).
const std::map<std::string, std::string>& hardware_fields();

/// The fields a `device: cpu` profile must also define (and a gpu profile must not): the CPU linear kernel
/// (kernels/cpu/linear.cc) decodes each 8-column group of a weight row once per pass of up to 8 tokens and
/// FMAs it into those tokens, so an [m, k] x [k, n] linear of format F takes
///   n * k * (ceil(m / 8) / cpu_F_pass + 2 m / cpu_F_flops)
/// with F in fp8, fp4, bf16, f32 (measured by bench/cpu_profile_bench.cc). All CPU rates, memory_bandwidth
/// included, are for the whole host; ranks on one host share them.
const std::map<std::string, std::string>& cpu_hardware_fields();

/// Parses a profile; unknown fields and fields without a `source` are errors naming the key.
HardwareProfile load_hardware_profile(const std::filesystem::path& path);
HardwareProfile parse_hardware_profile(const std::string& yaml_text, const std::string& origin);

/// Parses `yaml_text` whose top level must be a mapping; Error(kInvalidArgument) naming `origin` and the line of
/// a syntax error otherwise. Shared by the simulator's YAML inputs (hardware profiles, model descriptions).
YAML::Node load_yaml_mapping(const std::string& yaml_text, const std::string& origin);

}  // namespace dsv4::launch
