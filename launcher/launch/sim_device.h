// The rates one simulated rank sees (GPU roofline or the CPU linear-kernel model), shared by the V4 step model
// (simulator.cc) and the MLA (DeepSeek-V3) step model (simulator_mla.cc). Internal to the simulator.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "launcher/launch/hardware.h"
#include "launcher/launch/simulator.h"

namespace dsv4::launch::sim_detail {

inline const char* format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::kFp8: return "fp8";
    case WeightFormat::kFp4: return "fp4";
    case WeightFormat::kBf16: return "bf16";
    case WeightFormat::kF32: return "f32";
  }
  return "?";
}

// The rates one rank sees. A GPU is its own device; CPU ranks on one host share its cores and memory
// bandwidth (the profile's rates are per host), so each gets 1 / ranks_per_host of them.
struct Device {
  const HardwareProfile& hw;
  bool cpu;
  double share;             // ranks sharing the host's rates (1 on a GPU)
  double bandwidth;         // memory bytes/s of this rank
  double attention_flops;   // core attention (GPU: bf16 MMA; CPU: f32 FMAs at the f32 linear rate)
  double indexer_flops;     // indexer scoring (GPU: FP8 MMA; CPU: f32)
  double activation_bytes;  // bytes per activation element moved by collectives (GPU bf16, CPU f32)

  Device(const HardwareProfile& h, int64_t ranks_per_node)
      : hw(h),
        cpu(h.device == "cpu"),
        share(cpu ? static_cast<double>(std::max<int64_t>(1, ranks_per_node)) : 1.0),
        bandwidth(h.get("memory_bandwidth") / share),
        attention_flops((cpu ? h.get("cpu_f32_flops") : h.get("bf16_flops")) / share),
        indexer_flops((cpu ? h.get("cpu_f32_flops") : h.get("fp8_flops")) / share),
        activation_bytes(cpu ? 4.0 : 2.0) {}

  double pass_rate(WeightFormat f) const { return hw.get(std::string("cpu_") + format_name(f) + "_pass") / share; }
  double token_flops(WeightFormat f) const { return hw.get(std::string("cpu_") + format_name(f) + "_flops") / share; }

  // [m, k] x [k, n] with weights of format f.
  double gemm(double m, double n, double k, WeightFormat f) const {
    if (cpu) return cpu_linear_time(m, n, k, pass_rate(f), token_flops(f));
    switch (f) {
      case WeightFormat::kFp8: return gemm_time(m, n, k, 1.0, hw.get("fp8_flops"), bandwidth).seconds;
      case WeightFormat::kFp4: return gemm_time(m, n, k, 0.5 + 1.0 / 32.0, hw.get("fp8_flops"), bandwidth).seconds;
      case WeightFormat::kBf16: return gemm_time(m, n, k, 2.0, hw.get("bf16_flops"), bandwidth).seconds;
      case WeightFormat::kF32: return gemm_time(m, n, k, 4.0, hw.get("bf16_flops"), bandwidth).seconds;
    }
    return 0.0;
  }

  // One layer's routed experts on the busiest rank: `hit` local experts receive `copies` token copies in all;
  // `gpu_weight_bytes` per expert weight (V4: FP4 + one E8M0 per 32; V3: FP8).
  // GPU: FP8 grouped GEMMs (Hopper has no FP4 MMA; FP4 weights are dequantised in the GEMM), one roofline
  // term over the hit experts' weights and the copies' flops. CPU: one linear call per hit expert and matrix;
  // each hit expert costs one pass over its weights for its first token and one more per 8 further tokens,
  // i.e. hit + (copies - hit) / 8 passes in all (copies spread evenly over the hit experts).
  double experts(double hit, double copies, double dmodel, double ff,
                 double gpu_weight_bytes = 0.5 + 1.0 / 32.0) const {
    const double weights = 3.0 * dmodel * ff;
    if (cpu) {
      if (copies <= 0) return 0.0;
      const double passes = hit + std::max(0.0, copies - hit) / 8.0;
      return weights * (passes / pass_rate(WeightFormat::kFp4) + 2.0 * copies / token_flops(WeightFormat::kFp4));
    }
    const double flops = 2.0 * weights * copies;
    const double bytes = hit * weights * gpu_weight_bytes + copies * (2 * dmodel + 3 * ff) * 2.0;
    return std::max(flops / hw.get("fp8_flops"), bytes / bandwidth);
  }
};

/// Applies two-micro-batch overlap to `full` (the step of all tokens, run serially) given `half` (the same step
/// on half the tokens and sequences): 2 max(compute(half) - overhead, communication(half)) + overhead, when that
/// beats the serial step (an engine overlaps only where it pays: a memory-bound step reads every weight twice and
/// pays each collective's latency twice when split).
inline void apply_overlap(StepResult& full, const StepResult& half, double step_overhead) {
  const double overlapped = 2.0 * std::max(half.compute - step_overhead, half.communication) + step_overhead;
  full.micro_compute = half.compute;
  full.micro_communication = half.communication;
  if (overlapped < full.total) {
    full.overlapped = true;
    full.total = overlapped;
  }
}

}  // namespace dsv4::launch::sim_detail
