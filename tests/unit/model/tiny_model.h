// Test helper: a tiny DeepSeek-V4 model built in memory with random weights in the official storage
// formats (FP8 e4m3 + E8M0 128-blocks, packed FP4 experts + E8M0 per 32, BF16, F32, I64 tid2eid), so model
// tests run without a checkpoint on disk.
#pragma once

#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "runtime/core/float_formats.h"
#include "runtime/model/model.h"

namespace dsv4::testing {

inline ModelConfig tiny_config(std::vector<int64_t> ratios, int64_t window = 8, int64_t topk = 2) {
  ModelConfig c;
  c.vocab_size = 64;
  c.hidden_size = 64;
  c.num_layers = static_cast<int64_t>(ratios.size());
  c.num_heads = 4;
  c.head_dim = 64;
  c.rope_dim = 16;
  c.q_lora_rank = 32;
  c.o_groups = 2;
  c.o_lora_rank = 32;
  c.num_routed_experts = 4;
  c.num_experts_per_token = 2;
  c.moe_intermediate_size = 32;
  c.num_hash_layers = 1;
  c.routed_scaling_factor = 1.5;
  c.sliding_window = window;
  c.index_num_heads = 2;
  c.index_head_dim = 32;
  c.index_topk = topk;
  c.yarn = YarnScaling{true, 16.0, 65536, 32.0, 1.0};
  c.max_position_embeddings = 4096;
  c.num_mtp_layers = 1;
  c.compress_ratios = ratios;
  c.compress_ratios.push_back(0);
  return c;
}

/// Owns the tensors of a random tiny model and answers TensorLookup queries.
class TinyWeights {
 public:
  TinyWeights(const ModelConfig& c, uint32_t seed, bool with_mtp = true) : rng_(seed) {
    const int64_t D = c.hidden_size, H = c.num_heads, d = c.head_dim, n = c.hc_mult, V = c.vocab_size;
    bf16("embed.weight", {V, D}, 1.0f);
    bf16("head.weight", {V, D}, 1.0f / std::sqrt(static_cast<float>(D)));
    norm("norm.weight", D);
    hc("hc_head", n, 1, D * n);
    for (int64_t l = 0; l < c.num_layers; ++l) layer(c, "layers." + std::to_string(l) + ".", c.compress_ratio(l),
                                                     l < c.num_hash_layers);
    if (with_mtp) {
      fp8("mtp.0.e_proj", D, D);
      fp8("mtp.0.h_proj", D, D);
      norm("mtp.0.enorm.weight", D);
      norm("mtp.0.hnorm.weight", D);
      norm("mtp.0.norm.weight", D);
      hc("mtp.0.hc_head", n, 1, D * n);
      layer(c, "mtp.0.", 0, false);
    }
    (void)H;
    (void)d;
  }

  TensorLookup lookup() const {
    return [this](const std::string& name) -> std::optional<TensorView> {
      auto it = tensors_.find(name);
      if (it == tensors_.end()) return std::nullopt;
      return it->second.view();
    };
  }
  std::map<std::string, Tensor>& tensors() { return tensors_; }

 private:
  float normal(float sd) { return std::normal_distribution<float>(0.0f, sd)(rng_); }

  Tensor& add(const std::string& name, DType dt, Shape s) {
    tensors_[name] = Tensor(dt, s);
    return tensors_[name];
  }
  void f32(const std::string& name, Shape s, float sd, float mean = 0.0f) {
    Tensor& t = add(name, DType::kF32, s);
    for (int64_t i = 0; i < t.numel(); ++i) t.as<float>()[i] = mean + normal(sd);
  }
  void bf16(const std::string& name, Shape s, float sd, float mean = 0.0f) {
    Tensor& t = add(name, DType::kBF16, s);
    for (int64_t i = 0; i < t.numel(); ++i) t.as<uint16_t>()[i] = f32_to_bf16(mean + normal(sd));
  }
  void norm(const std::string& name, int64_t dim) { bf16(name, Shape{dim}, 0.1f, 1.0f); }
  void hc(const std::string& prefix, int64_t outputs, int64_t scales, int64_t width) {
    f32(prefix + "_fn", Shape{outputs, width}, 0.2f);
    f32(prefix + "_base", Shape{outputs}, 0.5f);
    f32(prefix + "_scale", Shape{scales}, 0.1f, 0.8f);
  }
  // FP8 e4m3 with E8M0 scales per 128x128 block (power of two over amax / 448).
  void fp8(const std::string& prefix, int64_t out, int64_t in) {
    const float sd = 1.0f / std::sqrt(static_cast<float>(in));
    std::vector<float> w(out * in);
    for (float& v : w) v = normal(sd);
    const int64_t bo = (out + 127) / 128, bi = (in + 127) / 128;
    Tensor& q = add(prefix + ".weight", DType::kF8E4M3, Shape{out, in});
    Tensor& s = add(prefix + ".scale", DType::kF8E8M0, Shape{bo, bi});
    for (int64_t a = 0; a < bo; ++a) {
      for (int64_t b = 0; b < bi; ++b) {
        float amax = 0.0f;
        for (int64_t r = a * 128; r < std::min(out, a * 128 + 128); ++r)
          for (int64_t k = b * 128; k < std::min(in, b * 128 + 128); ++k) amax = std::max(amax, std::fabs(w[r * in + k]));
        const float scale = amax > 0 ? pow2_ceil(amax / kE4M3Max) : 1.0f;
        s.as<uint8_t>()[a * bi + b] = f32_to_e8m0(scale);
        for (int64_t r = a * 128; r < std::min(out, a * 128 + 128); ++r)
          for (int64_t k = b * 128; k < std::min(in, b * 128 + 128); ++k)
            q.as<uint8_t>()[r * in + k] = f32_to_e4m3(w[r * in + k] / scale);
      }
    }
  }
  // Packed FP4 (low nibble = even column) with E8M0 scales per 32 inputs.
  void fp4(const std::string& prefix, int64_t out, int64_t in) {
    const float sd = 1.0f / std::sqrt(static_cast<float>(in));
    Tensor& q = add(prefix + ".weight", DType::kI8, Shape{out, in / 2});
    Tensor& s = add(prefix + ".scale", DType::kF8E8M0, Shape{out, in / 32});
    std::vector<float> blk(32);
    for (int64_t r = 0; r < out; ++r) {
      for (int64_t b = 0; b < in / 32; ++b) {
        float amax = 0.0f;
        for (float& v : blk) amax = std::max(amax, std::fabs(v = normal(sd)));
        const float scale = pow2_ceil(amax / kE2M1Max);
        s.as<uint8_t>()[r * (in / 32) + b] = f32_to_e8m0(scale);
        for (int j = 0; j < 16; ++j) {
          uint8_t lo = f32_to_e2m1(blk[2 * j] / scale), hi = f32_to_e2m1(blk[2 * j + 1] / scale);
          q.as<uint8_t>()[r * (in / 2) + b * 16 + j] = static_cast<uint8_t>(lo | (hi << 4));
        }
      }
    }
  }
  void compressor(const std::string& p, int64_t ratio, int64_t dim, int64_t D) {
    const int64_t width = (ratio == 4 ? 2 : 1) * dim;
    bf16(p + ".wkv.weight", Shape{width, D}, 1.0f / std::sqrt(static_cast<float>(D)));
    bf16(p + ".wgate.weight", Shape{width, D}, 1.0f / std::sqrt(static_cast<float>(D)));
    f32(p + ".ape", Shape{ratio, width}, 0.5f);
    norm(p + ".norm.weight", dim);
  }
  void layer(const ModelConfig& c, const std::string& p, int64_t ratio, bool hash) {
    const int64_t D = c.hidden_size, H = c.num_heads, d = c.head_dim, n = c.hc_mult;
    const int64_t E = c.num_routed_experts, F = c.moe_intermediate_size;
    norm(p + "attn_norm.weight", D);
    norm(p + "ffn_norm.weight", D);
    hc(p + "hc_attn", (2 + n) * n, 3, n * D);
    hc(p + "hc_ffn", (2 + n) * n, 3, n * D);
    fp8(p + "attn.wq_a", c.q_lora_rank, D);
    norm(p + "attn.q_norm.weight", c.q_lora_rank);
    fp8(p + "attn.wq_b", H * d, c.q_lora_rank);
    fp8(p + "attn.wkv", d, D);
    norm(p + "attn.kv_norm.weight", d);
    fp8(p + "attn.wo_a", c.o_groups * c.o_lora_rank, (H / c.o_groups) * d);
    fp8(p + "attn.wo_b", D, c.o_groups * c.o_lora_rank);
    f32(p + "attn.attn_sink", Shape{H}, 1.0f);
    if (ratio != 0) compressor(p + "attn.compressor", ratio, d, D);
    if (ratio == 4) {
      fp8(p + "attn.indexer.wq_b", c.index_num_heads * c.index_head_dim, c.q_lora_rank);
      bf16(p + "attn.indexer.weights_proj.weight", Shape{c.index_num_heads, D}, 1.0f / std::sqrt(static_cast<float>(D)));
      compressor(p + "attn.indexer.compressor", ratio, c.index_head_dim, D);
    }
    bf16(p + "ffn.gate.weight", Shape{E, D}, 1.0f / std::sqrt(static_cast<float>(D)));
    if (hash) {
      Tensor& t = add(p + "ffn.gate.tid2eid", DType::kI64, Shape{c.vocab_size, c.num_experts_per_token});
      for (int64_t v = 0; v < c.vocab_size; ++v)
        for (int64_t j = 0; j < c.num_experts_per_token; ++j) t.as<int64_t>()[v * c.num_experts_per_token + j] = (v + j) % E;
    } else {
      f32(p + "ffn.gate.bias", Shape{E}, 0.1f);
    }
    fp8(p + "ffn.shared_experts.w1", F, D);
    fp8(p + "ffn.shared_experts.w3", F, D);
    fp8(p + "ffn.shared_experts.w2", D, F);
    for (int64_t e = 0; e < E; ++e) {
      const std::string ep = p + "ffn.experts." + std::to_string(e);
      fp4(ep + ".w1", F, D);
      fp4(ep + ".w3", F, D);
      fp4(ep + ".w2", D, F);
    }
  }

  std::mt19937 rng_;
  std::map<std::string, Tensor> tensors_;
};

/// A Model over `weights` (which must outlive it) with the CPU backend.
inline Model make_tiny_model(const ModelConfig& c, const TinyWeights& weights, Numerics numerics) {
  return Model(c, bind_weights(c, weights.lookup()), kernels::make_cpu_backend(), numerics);
}

/// n token ids drawn uniformly from [0, vocab) by a seeded generator (the same ids on every platform).
inline std::vector<int32_t> random_token_ids(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& v : t) v = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  return t;
}

}  // namespace dsv4::testing
