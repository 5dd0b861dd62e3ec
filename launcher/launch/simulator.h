// The performance simulator behind `dsv4-launch simulate`: a roofline model per part of one engine step of a
// DeepSeek-V4 model on a given layout and hardware profile. docs/SIMULATOR.md states every formula and its
// limits; the primitives (GEMM, collectives, expert load) are exposed so they can be checked by hand.
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "launcher/launch/hardware.h"
#include "runtime/config/deployment_config.h"
#include "runtime/config/model_config.h"

namespace dsv4::launch {

// ---- primitives -------------------------------------------------------------------------------------

/// One roofline term: time = max(flops / rate, bytes / bandwidth).
struct Roofline {
  double flops = 0;
  double bytes = 0;
  double seconds = 0;
  bool compute_bound = false;
};

/// [m, k] x [k, n] with weights of `weight_bytes` per element and bf16 activations in and out.
Roofline gemm_time(double m, double n, double k, double weight_bytes, double flops_rate, double bandwidth);

/// Weight formats of the model's linears (the CPU kernel's rate depends on the format; on a GPU, the bytes).
enum class WeightFormat { kFp8, kFp4, kBf16, kF32 };

/// The CPU linear kernel (kernels/cpu/linear.cc) on [m, k] x [k, n]: n * k * (ceil(m / 8) / pass_rate +
/// 2 m / token_flops), the rates being one rank's share of cpu_<fmt>_pass / cpu_<fmt>_flops (see
/// cpu_hardware_fields). 0 for m <= 0.
double cpu_linear_time(double m, double n, double k, double pass_rate, double token_flops);

/// All-reduce of `bytes` over `ranks`: the ring's bandwidth term 2(n-1)/n * bytes / bandwidth plus a
/// tree-like latency term 2 * ceil(log2 n) * latency (NCCL switches to low-latency protocols for the small
/// messages of decode, where a ring's 2(n-1) hops would overstate the cost).
double allreduce_time(double bytes, int64_t ranks, double bandwidth, double latency);
/// All-gather producing `bytes` on every rank: (n-1)/n * bytes / bandwidth + ceil(log2 n) * latency.
double allgather_time(double bytes, int64_t ranks, double bandwidth, double latency);

/// Expected maximum, over `ranks` EP ranks, of the token copies one rank receives when `assignments` routed
/// copies fall uniformly at random on the ranks, times `skew` (>= 1) for popularity imbalance that routing
/// noise does not explain: skew * mean + sigma * z(ranks), with sigma the binomial standard deviation and
/// z(n) = Phi^-1((n - 0.375) / (n + 0.25)) (Blom's approximation of the expected maximum of n normals).
/// Capped at `assignments`.
double expected_max_load(double assignments, int64_t ranks, double skew);

/// Standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9).
double normal_quantile(double p);

/// One expert dispatch or combine: every EP rank receives `max_copies` token copies of `bytes_per_copy`;
/// of the EP group, min(ep, gpus_per_node) ranks share a node. Time = max(intra share / a2a_intra_bandwidth,
/// inter share / a2a_inter_bandwidth) + a2a_latency; zero when ep == 1.
double all_to_all_time(double max_copies, double bytes_per_copy, int64_t ep, int64_t gpus_per_node,
                       const HardwareProfile& hw);

// ---- the step model ----------------------------------------------------------------------------------

enum Part : int {
  kDenseGemm,        // projections, shared expert, router gate, HC mixing, LM head
  kAttention,        // core attention over window + compressed rows
  kIndexer,          // compressors (all compressed layers) and the lightning indexer (CSA layers)
  kExperts,          // routed expert grouped GEMMs on the busiest rank
  kDispatchCombine,  // expert all-to-all, both directions
  kTpCollectives,    // TP all-reduces / all-gathers (and CP merges)
  kSampling,         // softmax / top-k over this rank's vocabulary shard and the candidate gather
  kOther,            // norms and residual-stream traffic, fixed per-step overhead
  kNumParts
};
const char* part_name(Part part);

struct SimSetup {
  ParallelLayout layout;
  int64_t nodes = 1;
  int64_t gpus_per_node = 8;
  double expert_skew = 1.0;       // >= 1; 1 = every expert equally popular (routing noise only)
  bool overlap = true;            // two-micro-batch overlap of communication with computation (GPU, >= 2 tokens)
  int64_t prefill_chunk = 16384;  // tokens per replica per prefill step
};

struct Workload {
  int64_t batch = 1;       // concurrent sequences over the whole deployment
  int64_t context = 4096;  // KV length at which decode steps run
  int64_t prompt = 1024;
  int64_t output = 256;
};

struct StepResult {
  std::array<double, kNumParts> seconds{};
  double compute = 0;  // everything but the two communication parts
  double communication = 0;
  // Without overlap: compute + communication. With two-micro-batch overlap (DeepSeek's scheme: one half of the
  // tokens computes while the other half's dispatch/combine is in flight) the step is two halves in a
  // ping-pong, 2 x max(compute(T/2), communication(T/2)) plus the fixed step overhead once, if that is shorter
  // than the serial step: each half still reads every weight, so a memory-bound step gains little from overlap.
  // micro_* hold the half step whenever overlap was considered; `overlapped` says whether it was used.
  double total = 0;
  bool overlapped = false;
  double micro_compute = 0, micro_communication = 0;
  double tokens = 0;               // tokens one replica processes in the step
  double max_copies_per_rank = 0;  // expert token copies on the busiest EP rank
  Part bottleneck = kDenseGemm;

  /// Sums seconds[] into compute and communication (dispatch/combine and TP collectives are
  /// communication), picks the bottleneck part, and sets total to the serial step (no overlap).
  void finish_serial();
};

struct MemoryPerGpu {
  double weights = 0;
  double state = 0;  // decode state of this rank's sequences at `context`
  double workspace = 0;
  double total() const { return weights + state + workspace; }
  double capacity = 0;  // hardware memory_bytes
};

struct SimResult {
  StepResult decode;
  StepResult prefill;
  double decode_tokens_per_s_per_gpu = 0;
  double prefill_tokens_per_s_per_gpu = 0;
  double request_seconds = 0;  // prefill of one prompt chunk share + `output` decode steps
  MemoryPerGpu memory;
  bool fits = false;
};

/// Simulates one decode step (batch / dp sequences per replica at `context`) and one prefill step
/// (min(batch / dp * prompt, prefill_chunk) tokens per replica, causal attention over the prompt).
/// Throws if the layout cannot shard the model or the batch is smaller than dp.
SimResult simulate(const ModelConfig& model, const SimSetup& setup, const HardwareProfile& hw, const Workload& w);

nlohmann::json result_to_json(const SimResult& r);
std::string format_result(const SimSetup& setup, const HardwareProfile& hw, const Workload& w, const SimResult& r);

/// One row of a sweep over GPU counts: tp and cp as given, dp = gpus / (tp * cp), ep = the largest divisor of
/// the GPU count that divides the routed experts, the per-replica batch held at the base workload's.
struct SweepRow {
  int64_t gpus = 0;
  SimSetup setup;
  Workload workload;
  SimResult result;
  std::string refused;  // non-empty when the layout is refused (the reason)
};
std::vector<SweepRow> sweep(const ModelConfig& model, const SimSetup& base, const HardwareProfile& hw,
                            const Workload& base_workload, int64_t min_gpus, int64_t max_gpus);
std::string sweep_csv(const std::vector<SweepRow>& rows);
std::string format_sweep(const std::vector<SweepRow>& rows);

}  // namespace dsv4::launch
