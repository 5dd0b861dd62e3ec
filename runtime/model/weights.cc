#include "runtime/model/weights.h"

#include <cstring>

#include "runtime/core/error.h"
#include "runtime/core/float_formats.h"

namespace dsv4 {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

class Binder {
 public:
  Binder(const ModelConfig& config, const TensorLookup& lookup, const ModelShard& shard)
      : cfg_(config), lookup_(lookup), shard_(shard) {}

  TensorView get(const std::string& name) const {
    auto t = lookup_(name);
    DSV4_CHECK_CODE(t.has_value(), ErrorCode::kInvalidCheckpoint) << "tensor " << name << " is missing";
    return *t;
  }

  void expect_shape(const std::string& name, const TensorView& t, Shape shape) const {
    DSV4_CHECK_CODE(t.shape == shape, ErrorCode::kInvalidCheckpoint)
        << "tensor " << name << " has shape " << t.shape.str() << " but the config needs " << shape.str();
  }

  F32Param f32(const std::string& name, Shape shape) const {
    TensorView t = get(name);
    expect_shape(name, t, shape);
    F32Param p;
    p.size = t.numel();
    if (t.dtype == DType::kF32) {
      p.mapped = t.as<const float>();
      return p;
    }
    p.owned.resize(p.size);
    if (t.dtype == DType::kBF16) {
      for (int64_t i = 0; i < p.size; ++i) p.owned[i] = bf16_to_f32(t.as<const uint16_t>()[i]);
    } else if (t.dtype == DType::kF16) {
      for (int64_t i = 0; i < p.size; ++i) p.owned[i] = f16_to_f32(t.as<const uint16_t>()[i]);
    } else {
      DSV4_THROW(kInvalidCheckpoint) << "tensor " << name << " has dtype " << dtype_name(t.dtype)
                                     << "; expected F32, BF16 or F16";
    }
    return p;
  }

  NormWeight norm(const std::string& name, int64_t dim) const {
    TensorView t = get(name);
    expect_shape(name, t, Shape{dim});
    DSV4_CHECK_CODE(t.dtype == DType::kBF16 || t.dtype == DType::kF32, ErrorCode::kInvalidCheckpoint)
        << "tensor " << name << " has dtype " << dtype_name(t.dtype) << "; expected BF16 or F32";
    return NormWeight{t.data, t.dtype, dim};
  }

  /// `prefix`.weight as [out, in]: FP8 (+ .scale), packed FP4 (+ .scale, when allow_fp4), BF16 or F32.
  kernels::WeightRef linear(const std::string& prefix, int64_t out, int64_t in, bool allow_fp4 = false) const {
    const std::string name = prefix + ".weight";
    TensorView t = get(name);
    kernels::WeightRef w;
    w.data = t.data;
    w.out = out;
    w.in = in;
    switch (t.dtype) {
      case DType::kBF16:
      case DType::kF32:
        expect_shape(name, t, Shape{out, in});
        w.dtype = t.dtype;
        return w;
      case DType::kF8E4M3: {
        expect_shape(name, t, Shape{out, in});
        const std::string sname = prefix + ".scale";
        TensorView s = get(sname);
        w.block = cfg_.fp8_block;
        expect_shape(sname, s, Shape{ceil_div(out, w.block), ceil_div(in, w.block)});
        DSV4_CHECK_CODE(s.dtype == DType::kF8E8M0 || s.dtype == DType::kF32, ErrorCode::kInvalidCheckpoint)
            << "tensor " << sname << " has dtype " << dtype_name(s.dtype) << "; expected F8_E8M0 or F32";
        w.dtype = DType::kF8E4M3;
        w.scale = s.data;
        w.scale_dtype = s.dtype;
        return w;
      }
      case DType::kI8:
      case DType::kU8:
      case DType::kFP4E2M1: {
        DSV4_CHECK_CODE(allow_fp4, ErrorCode::kInvalidCheckpoint)
            << "tensor " << name << " is packed FP4 (" << dtype_name(t.dtype) << "), allowed for routed experts only";
        w.block = cfg_.fp4_block;
        DSV4_CHECK_CODE(in % w.block == 0, ErrorCode::kInvalidCheckpoint)
            << "tensor " << name << ": input width " << in << " is not a multiple of the FP4 block " << w.block;
        expect_shape(name, t, Shape{out, in / 2});
        const std::string sname = prefix + ".scale";
        TensorView s = get(sname);
        expect_shape(sname, s, Shape{out, in / w.block});
        DSV4_CHECK_CODE(s.dtype == DType::kF8E8M0 || s.dtype == DType::kU8, ErrorCode::kInvalidCheckpoint)
            << "tensor " << sname << " has dtype " << dtype_name(s.dtype) << "; expected F8_E8M0";
        w.dtype = DType::kFP4E2M1;
        w.scale = s.data;
        w.scale_dtype = DType::kF8E8M0;
        return w;
      }
      default:
        DSV4_THROW(kInvalidCheckpoint) << "tensor " << name << " has dtype " << dtype_name(t.dtype)
                                       << "; expected F8_E4M3, BF16, F32 or packed FP4";
    }
  }

  HcWeights hc(const std::string& prefix, int64_t outputs, int64_t scales) const {
    const int64_t width = cfg_.hc_mult * cfg_.hidden_size;
    HcWeights h;
    h.fn = f32(prefix + "_fn", Shape{outputs, width});
    h.base = f32(prefix + "_base", Shape{outputs});
    h.scale = f32(prefix + "_scale", Shape{scales});
    return h;
  }

  CompressorWeights compressor(const std::string& prefix, int64_t ratio, int64_t dim) const {
    CompressorWeights c;
    c.ratio = ratio;
    c.dim = dim;
    c.overlap = ratio == 4 ? 2 : 1;
    const int64_t width = c.overlap * dim;
    c.wkv = linear(prefix + ".wkv", width, cfg_.hidden_size);
    c.wgate = linear(prefix + ".wgate", width, cfg_.hidden_size);
    c.ape = f32(prefix + ".ape", Shape{ratio, width});
    c.norm = norm(prefix + ".norm.weight", dim);
    return c;
  }

  LayerWeights layer(const std::string& p, int64_t layer, bool is_mtp) const {
    const int64_t D = cfg_.hidden_size, H = cfg_.num_heads, d = cfg_.head_dim, n = cfg_.hc_mult;
    // The shard's slices: heads (wq_b rows, sinks), output groups (wo_a rows, wo_b columns).
    const int64_t Hs = shard_.num_heads, Gs = shard_.num_groups;
    LayerWeights L;
    L.attn_norm = norm(p + "attn_norm.weight", D);
    L.ffn_norm = norm(p + "ffn_norm.weight", D);
    L.hc_attn = hc(p + "hc_attn", (2 + n) * n, 3);
    L.hc_ffn = hc(p + "hc_ffn", (2 + n) * n, 3);
    AttentionWeights& A = L.attn;
    A.wq_a = linear(p + "attn.wq_a", cfg_.q_lora_rank, D);
    A.q_norm = norm(p + "attn.q_norm.weight", cfg_.q_lora_rank);
    A.wq_b = linear(p + "attn.wq_b", Hs * d, cfg_.q_lora_rank);
    A.wkv = linear(p + "attn.wkv", d, D);
    A.kv_norm = norm(p + "attn.kv_norm.weight", d);
    A.wo_a = linear(p + "attn.wo_a", Gs * cfg_.o_lora_rank, (H / cfg_.o_groups) * d);
    A.wo_b = linear(p + "attn.wo_b", D, Gs * cfg_.o_lora_rank);
    A.sink = f32(p + "attn.attn_sink", Shape{Hs});
    const int64_t ratio = is_mtp ? 0 : cfg_.compress_ratio(layer);
    if (ratio != 0) {
      A.compressor = compressor(p + "attn.compressor", ratio, d);
      if (ratio == 4) {
        IndexerWeights I;
        I.wq_b = linear(p + "attn.indexer.wq_b", cfg_.index_num_heads * cfg_.index_head_dim, cfg_.q_lora_rank);
        I.weights_proj = linear(p + "attn.indexer.weights_proj", cfg_.index_num_heads, D);
        I.compressor = compressor(p + "attn.indexer.compressor", ratio, cfg_.index_head_dim);
        A.indexer = std::move(I);
      }
    }
    MoeWeights& M = L.moe;
    const int64_t E = cfg_.num_routed_experts, F = cfg_.moe_intermediate_size, k = cfg_.num_experts_per_token;
    M.gate = linear(p + "ffn.gate", E, D);
    if (!is_mtp && cfg_.is_hash_layer(layer)) {
      const std::string name = p + "ffn.gate.tid2eid";
      TensorView t = get(name);
      expect_shape(name, t, Shape{cfg_.vocab_size, k});
      DSV4_CHECK_CODE(t.dtype == DType::kI64, ErrorCode::kInvalidCheckpoint)
          << "tensor " << name << " has dtype " << dtype_name(t.dtype) << "; expected I64";
      M.tid2eid = t.as<const int64_t>();
      for (int64_t i = 0; i < t.numel(); ++i) {
        DSV4_CHECK_CODE(M.tid2eid[i] >= 0 && M.tid2eid[i] < E, ErrorCode::kInvalidCheckpoint)
            << "tensor " << name << " holds expert id " << M.tid2eid[i] << " outside [0, " << E << ")";
      }
    } else {
      M.bias = f32(p + "ffn.gate.bias", Shape{E});
    }
    DSV4_CHECK_CODE(cfg_.num_shared_experts == 1, ErrorCode::kInvalidCheckpoint)
        << "config n_shared_experts = " << cfg_.num_shared_experts << "; only 1 is supported";
    const int64_t S = shard_.shared_width;
    M.shared.w1 = linear(p + "ffn.shared_experts.w1", S, D);
    M.shared.w3 = linear(p + "ffn.shared_experts.w3", S, D);
    M.shared.w2 = linear(p + "ffn.shared_experts.w2", D, S);
    M.experts.resize(shard_.num_experts);
    for (int64_t i = 0; i < shard_.num_experts; ++i) {
      const std::string ep = p + "ffn.experts." + std::to_string(shard_.first_expert + i);
      M.experts[i].w1 = linear(ep + ".w1", F, D, true);
      M.experts[i].w3 = linear(ep + ".w3", F, D, true);
      M.experts[i].w2 = linear(ep + ".w2", D, F, true);
    }
    return L;
  }

 private:
  const ModelConfig& cfg_;
  const TensorLookup& lookup_;
  const ModelShard& shard_;
};

// The shard must lie inside the model: a binder trusting it would index past the tensors' names.
void check_shard(const ModelConfig& config, const ModelShard& s) {
  const int64_t F = shared_expert_width(config);
  const bool ok = s.tp_size >= 1 && s.tp_rank >= 0 && s.tp_rank < s.tp_size && s.ep_size >= 1 && s.ep_rank >= 0 &&
                  s.ep_rank < s.ep_size && s.vocab_begin >= 0 && s.vocab_begin <= s.vocab_end &&
                  s.vocab_end <= config.vocab_size && s.head_begin >= 0 && s.num_heads >= 1 &&
                  s.head_begin + s.num_heads <= config.num_heads && s.group_begin >= 0 && s.num_groups >= 1 &&
                  s.group_begin + s.num_groups <= config.o_groups && s.shared_begin >= 0 && s.shared_width >= 0 &&
                  s.shared_begin + s.shared_width <= F && s.first_expert >= 0 && s.num_experts >= 0 &&
                  s.first_expert + s.num_experts <= config.num_routed_experts;
  DSV4_CHECK_ARG(ok) << "model shard (tp " << s.tp_rank << "/" << s.tp_size << ", ep " << s.ep_rank << "/" << s.ep_size
                     << ", vocab [" << s.vocab_begin << ", " << s.vocab_end << "), heads " << s.head_begin << "+"
                     << s.num_heads << ", groups " << s.group_begin << "+" << s.num_groups << ", shared "
                     << s.shared_begin << "+" << s.shared_width << ", experts " << s.first_expert << "+"
                     << s.num_experts << ") lies outside the model (vocab " << config.vocab_size << ", heads "
                     << config.num_heads << ", groups " << config.o_groups << ", shared width " << F << ", experts "
                     << config.num_routed_experts << ")";
}

}  // namespace

ModelShard ModelShard::whole(const ModelConfig& config) {
  ModelShard s;
  s.vocab_end = config.vocab_size;
  s.num_heads = config.num_heads;
  s.num_groups = config.o_groups;
  s.shared_width = shared_expert_width(config);
  s.num_experts = config.num_routed_experts;
  return s;
}

int64_t shared_expert_width(const ModelConfig& config) {
  return config.num_shared_experts * config.moe_intermediate_size;
}

ModelWeights bind_weights(const ModelConfig& config, const TensorLookup& lookup) {
  return bind_weights(config, lookup, ModelShard::whole(config));
}

ModelWeights bind_weights(const ModelConfig& config, const TensorLookup& lookup, const ModelShard& shard) {
  check_shard(config, shard);
  Binder b(config, lookup, shard);
  const int64_t D = config.hidden_size, n = config.hc_mult;
  DSV4_CHECK_CODE(config.num_heads % config.o_groups == 0 && config.rope_dim % 2 == 0 &&
                      config.rope_dim <= config.head_dim && config.num_layers > 0,
                  ErrorCode::kInvalidCheckpoint)
      << "config: inconsistent head layout (heads " << config.num_heads << ", o_groups " << config.o_groups
      << ", rope_dim " << config.rope_dim << ", head_dim " << config.head_dim << ")";
  DSV4_CHECK_CODE(static_cast<int64_t>(config.compress_ratios.size()) >= config.num_layers,
                  ErrorCode::kInvalidCheckpoint)
      << "config: compress_ratios has " << config.compress_ratios.size() << " entries for " << config.num_layers
      << " layers";
  ModelWeights w;
  w.shard = shard;
  const int64_t Vs = shard.vocab_rows();
  w.embed = b.get("embed.weight");
  b.expect_shape("embed.weight", w.embed, Shape{Vs, D});
  DSV4_CHECK_CODE(w.embed.dtype == DType::kBF16 || w.embed.dtype == DType::kF32, ErrorCode::kInvalidCheckpoint)
      << "tensor embed.weight has dtype " << dtype_name(w.embed.dtype) << "; expected BF16 or F32";
  w.head = b.linear("head", Vs, D);
  w.norm = b.norm("norm.weight", D);
  w.hc_head = b.hc("hc_head", n, 1);
  w.layers.reserve(config.num_layers);
  for (int64_t l = 0; l < config.num_layers; ++l) {
    w.layers.push_back(b.layer("layers." + std::to_string(l) + ".", l, false));
  }
  for (int64_t m = 0; m < config.num_mtp_layers; ++m) {
    const std::string p = "mtp." + std::to_string(m) + ".";
    if (!lookup(p + "e_proj.weight")) break;  // checkpoints may ship without the MTP block
    MtpWeights mt;
    mt.e_proj = b.linear(p + "e_proj", D, D);
    mt.h_proj = b.linear(p + "h_proj", D, D);
    mt.enorm = b.norm(p + "enorm.weight", D);
    mt.hnorm = b.norm(p + "hnorm.weight", D);
    mt.norm = b.norm(p + "norm.weight", D);
    mt.hc_head = b.hc(p + "hc_head", n, 1);
    mt.block = b.layer(p, config.num_layers + m, true);
    w.mtp.push_back(std::move(mt));
  }
  return w;
}

}  // namespace dsv4
