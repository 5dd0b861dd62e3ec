// KernelBackend: the one interface through which the model calls kernels. The CPU backend runs the
// implementations in kernels/cpu on host pointers; a CUDA backend implements the same calls on device
// pointers. Params structs are plain data (kernels/ops/*.h) so both sides share them.
#pragma once

#include <memory>
#include <string_view>

#include "kernels/ops/attention.h"
#include "kernels/ops/compressor.h"
#include "kernels/ops/elementwise.h"
#include "kernels/ops/hyper_connection.h"
#include "kernels/ops/linear.h"

namespace dsv4::kernels {

class KernelBackend {
 public:
  virtual ~KernelBackend() = default;
  virtual std::string_view name() const = 0;

  virtual void linear(const LinearParams& p) = 0;
  virtual void rms_norm(const RmsNormParams& p) = 0;
  virtual void rope(const RopeParams& p) = 0;
  virtual void fp8_round_trip(const Fp8RoundTripParams& p) = 0;
  virtual void fp4_round_trip(const Fp4RoundTripParams& p) = 0;
  virtual void hadamard(const HadamardParams& p) = 0;
  virtual void sparse_attention(const SparseAttentionParams& p) = 0;
  virtual void indexer_scores(const IndexerScoreParams& p) = 0;
  virtual void compressor_pool(const CompressorPoolParams& p) = 0;
  virtual void hc_mix(const HcMixParams& p) = 0;
  virtual void hc_pre(const HcPreParams& p) = 0;
  virtual void hc_post(const HcPostParams& p) = 0;
  virtual void hc_head(const HcHeadParams& p) = 0;
};

/// The CPU backend (threads from DSV4_NUM_THREADS).
std::unique_ptr<KernelBackend> make_cpu_backend();

}  // namespace dsv4::kernels
