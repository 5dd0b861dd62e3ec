// The CPU KernelBackend: forwards each call to the kernels in kernels/cpu.
#include "kernels/backend.h"

namespace dsv4::kernels {
namespace {

class CpuBackend final : public KernelBackend {
 public:
  std::string_view name() const override { return "cpu"; }
  void linear(const LinearParams& p) override { cpu::linear(p); }
  void rms_norm(const RmsNormParams& p) override { cpu::rms_norm(p); }
  void rope(const RopeParams& p) override { cpu::rope(p); }
  void fp8_round_trip(const Fp8RoundTripParams& p) override { cpu::fp8_round_trip(p); }
  void fp4_round_trip(const Fp4RoundTripParams& p) override { cpu::fp4_round_trip(p); }
  void hadamard(const HadamardParams& p) override { cpu::hadamard(p); }
  void sparse_attention(const SparseAttentionParams& p) override { cpu::sparse_attention(p); }
  void indexer_scores(const IndexerScoreParams& p) override { cpu::indexer_scores(p); }
  void compressor_pool(const CompressorPoolParams& p) override { cpu::compressor_pool(p); }
  void hc_mix(const HcMixParams& p) override { cpu::hc_mix(p); }
  void hc_pre(const HcPreParams& p) override { cpu::hc_pre(p); }
  void hc_post(const HcPostParams& p) override { cpu::hc_post(p); }
  void hc_head(const HcHeadParams& p) override { cpu::hc_head(p); }
};

}  // namespace

std::unique_ptr<KernelBackend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace dsv4::kernels
