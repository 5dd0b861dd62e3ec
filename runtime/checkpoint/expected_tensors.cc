// The tensor set of spec §7.2, derived from a ModelConfig. Facts it encodes (checked against the real
// checkpoints' tensor and element counts in tests/unit/config/expected_tensors_test.cc):
//  * compressor tensors only on layers with ratio != 0 (width 2*head_dim for ratio 4, which overlaps windows);
//  * indexer tensors only on ratio-4 layers;
//  * gate.tid2eid [vocab, k] on hash layers, gate.bias [E] on the others (the MTP layers included);
//  * the MTP block mtp.<i>.* is a sliding-window layer plus e_proj/h_proj/enorm/hnorm/norm/hc_head_*;
//    it shares embed and head with the main model.
#include "runtime/checkpoint/expected_tensors.h"

#include <utility>

#include "runtime/core/error.h"

namespace dsv4 {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

class TensorListBuilder {
 public:
  explicit TensorListBuilder(const ModelConfig& config) : c_(config) {}

  std::vector<ExpectedTensor> build() {
    const int64_t D = c_.hidden_size;
    layer_ = -1;
    prefix_ = "";
    plain("embed.weight", DType::kBF16, {c_.vocab_size, D});
    plain("head.weight", DType::kBF16, {c_.vocab_size, D});
    plain("norm.weight", DType::kBF16, {D});
    hc_head();
    for (int64_t l = 0; l < c_.num_layers; ++l) {
      layer_ = l;
      prefix_ = "layers." + std::to_string(l) + ".";
      block(l);
    }
    for (int64_t m = 0; m < c_.num_mtp_layers; ++m) {
      layer_ = c_.num_layers + m;
      prefix_ = "mtp." + std::to_string(m) + ".";
      block(layer_);
      fp8("e_proj.weight", D, D);
      fp8("h_proj.weight", D, D);
      plain("enorm.weight", DType::kBF16, {D});
      plain("hnorm.weight", DType::kBF16, {D});
      plain("norm.weight", DType::kBF16, {D});
      hc_head();
    }
    return std::move(out_);
  }

 private:
  void add(const std::string& name, DType dtype, Shape shape, TensorRole role, int64_t expert = -1) {
    out_.push_back(ExpectedTensor{prefix_ + name, dtype, shape, role, layer_, expert});
  }
  void plain(const std::string& name, DType dtype, Shape shape) { add(name, dtype, shape, TensorRole::kPlain); }

  // F8_E4M3 [out, in] with `.scale` [ceil(out/128), ceil(in/128)] (E8M0, or F32 in Base checkpoints).
  void fp8(const std::string& weight_name, int64_t out, int64_t in, int64_t expert = -1) {
    const std::string base = weight_name.substr(0, weight_name.size() - std::string(".weight").size());
    add(weight_name, DType::kF8E4M3, {out, in}, TensorRole::kFp8Weight, expert);
    add(base + ".scale", c_.fp8_scale_dtype, {ceil_div(out, c_.fp8_block), ceil_div(in, c_.fp8_block)},
        TensorRole::kFp8Scale, expert);
  }

  // Routed expert weight: packed FP4 (I8 [out, in/2] + E8M0 [out, in/32]) or FP8 blocks (Base).
  void expert_weight(const std::string& weight_name, int64_t out, int64_t in, int64_t expert) {
    if (c_.expert_dtype == DType::kF8E4M3) {
      fp8(weight_name, out, in, expert);
      return;
    }
    const std::string base = weight_name.substr(0, weight_name.size() - std::string(".weight").size());
    add(weight_name, DType::kI8, {out, in / 2}, TensorRole::kFp4Weight, expert);
    add(base + ".scale", DType::kF8E8M0, {out, in / c_.fp4_block}, TensorRole::kFp4Scale, expert);
  }

  // mHC parameters of one sublayer: fn [(2+n)n, nD], base [(2+n)n], scale [3].
  void hc_sublayer(const std::string& name) {
    const int64_t n = c_.hc_mult;
    plain(name + "_fn", DType::kF32, {(2 + n) * n, n * c_.hidden_size});
    plain(name + "_base", DType::kF32, {(2 + n) * n});
    plain(name + "_scale", DType::kF32, {3});
  }

  void hc_head() {
    const int64_t n = c_.hc_mult;
    plain("hc_head_fn", DType::kF32, {n, n * c_.hidden_size});
    plain("hc_head_base", DType::kF32, {n});
    plain("hc_head_scale", DType::kF32, {1});
  }

  // Compressor of one attention (h = head width): wkv/wgate [c*h, D] BF16, ape [ratio, c*h] F32, norm [h] BF16.
  void compressor(const std::string& p, int64_t ratio, int64_t h) {
    const int64_t width = (ratio == 4 ? 2 : 1) * h;  // ratio 4 pools overlapping windows: two halves per token
    plain(p + "wkv.weight", DType::kBF16, {width, c_.hidden_size});
    plain(p + "wgate.weight", DType::kBF16, {width, c_.hidden_size});
    plain(p + "ape", DType::kF32, {ratio, width});
    plain(p + "norm.weight", DType::kBF16, {h});
  }

  void block(int64_t layer) {
    const int64_t D = c_.hidden_size;
    const int64_t H = c_.num_heads;
    const int64_t d = c_.head_dim;
    const int64_t ratio = c_.compress_ratio(layer);
    hc_sublayer("hc_attn");
    hc_sublayer("hc_ffn");
    plain("attn_norm.weight", DType::kBF16, {D});
    plain("ffn_norm.weight", DType::kBF16, {D});

    fp8("attn.wq_a.weight", c_.q_lora_rank, D);
    plain("attn.q_norm.weight", DType::kBF16, {c_.q_lora_rank});
    fp8("attn.wq_b.weight", H * d, c_.q_lora_rank);
    fp8("attn.wkv.weight", d, D);
    plain("attn.kv_norm.weight", DType::kBF16, {d});
    fp8("attn.wo_a.weight", c_.o_groups * c_.o_lora_rank, H * d / c_.o_groups);
    fp8("attn.wo_b.weight", D, c_.o_groups * c_.o_lora_rank);
    plain("attn.attn_sink", DType::kF32, {H});
    if (ratio != 0) compressor("attn.compressor.", ratio, d);
    if (ratio == 4) {
      const int64_t ih = c_.index_num_heads;
      const int64_t ihd = c_.index_head_dim;
      fp8("attn.indexer.wq_b.weight", ih * ihd, c_.q_lora_rank);
      plain("attn.indexer.weights_proj.weight", DType::kBF16, {ih, D});
      compressor("attn.indexer.compressor.", ratio, ihd);
    }

    const int64_t E = c_.num_routed_experts;
    const int64_t F = c_.moe_intermediate_size;
    plain("ffn.gate.weight", DType::kBF16, {E, D});
    if (c_.is_hash_layer(layer)) {
      add("ffn.gate.tid2eid", DType::kI64, {c_.vocab_size, c_.num_experts_per_token}, TensorRole::kIndex);
    } else {
      plain("ffn.gate.bias", DType::kF32, {E});
    }
    const int64_t shared = F * c_.num_shared_experts;
    fp8("ffn.shared_experts.w1.weight", shared, D);
    fp8("ffn.shared_experts.w2.weight", D, shared);
    fp8("ffn.shared_experts.w3.weight", shared, D);
    for (int64_t e = 0; e < E; ++e) {
      const std::string p = "ffn.experts." + std::to_string(e) + ".";
      expert_weight(p + "w1.weight", F, D, e);
      expert_weight(p + "w2.weight", D, F, e);
      expert_weight(p + "w3.weight", F, D, e);
    }
  }

  const ModelConfig& c_;
  std::vector<ExpectedTensor> out_;
  std::string prefix_;
  int64_t layer_ = -1;
};

}  // namespace

std::vector<ExpectedTensor> expected_tensors(const ModelConfig& config) {
  config.validate();  // the shapes below divide by o_groups and fp4_block
  return TensorListBuilder(config).build();
}

int64_t stored_parameter_count(const std::vector<ExpectedTensor>& tensors) {
  int64_t total = 0;
  for (const ExpectedTensor& t : tensors) total += t.shape.numel();
  return total;
}

}  // namespace dsv4
