// CPU decode / prefill benchmark of the model on a checkpoint (e.g. `dsv4 make-checkpoint --config
// configs/models/small-1b.json`), next to a STREAM-like read-bandwidth probe of this machine.
//
//   cpu_decode_bench --checkpoint DIR [--prompt 128] [--steps 16] [--batch 8] [--numerics plain]
//
// Reports prefill tokens/s, decode tokens/s at batch 1 and at --batch, and for batch 1 the weight bytes a
// decode step touches (every dense weight, the active experts, the embedding row and the head) divided by
// the step time, as a fraction of the probed bandwidth.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/thread_pool.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/core/tensor.h"
#include "runtime/model/model.h"

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Read bandwidth: threads sum disjoint parts of a buffer much larger than the caches (best of 5 passes).
double probe_read_bandwidth(size_t bytes) {
  const int64_t n = static_cast<int64_t>(bytes / sizeof(float));
  dsv4::Buffer buf(bytes);
  float* data = static_cast<float*>(buf.data());
  dsv4::kernels::cpu::parallel_for(n, 1 << 20, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) data[i] = static_cast<float>(i & 7);
  });
  std::vector<float> ones(1 << 16, 1.0f);
  double best = 0.0;
  volatile float sink = 0.0f;
  for (int pass = 0; pass < 5; ++pass) {
    auto t0 = Clock::now();
    std::vector<float> partial(1024, 0.0f);
    const int64_t tile = static_cast<int64_t>(ones.size());
    dsv4::kernels::cpu::parallel_for((n + tile - 1) / tile, 16, [&](int64_t b, int64_t e) {
      float s = 0.0f;
      for (int64_t t = b; t < e; ++t) {
        const int64_t len = std::min(tile, n - t * tile);
        s += dsv4::kernels::cpu::dot(data + t * tile, ones.data(), len);
      }
      partial[b % 1024] += s;
    });
    const double dt = seconds_since(t0);
    for (float p : partial) sink = sink + p;
    best = std::max(best, static_cast<double>(bytes) / dt);
  }
  return best;
}

int64_t weight_bytes(const dsv4::kernels::WeightRef& w) {
  using dsv4::DType;
  switch (w.dtype) {
    case DType::kF8E4M3: return w.out * w.in + ((w.out + 127) / 128) * ((w.in + 127) / 128);
    case DType::kFP4E2M1: return w.out * w.in / 2 + w.out * w.in / 32;
    case DType::kBF16: return 2 * w.out * w.in;
    default: return 4 * w.out * w.in;
  }
}

// Bytes one decode token of batch 1 reads from the weights (k experts per layer assumed distinct).
int64_t decode_weight_bytes(const dsv4::Model& model) {
  const auto& cfg = model.config();
  const auto& W = model.weights();
  int64_t bytes = 2 * cfg.hidden_size + weight_bytes(W.head) + 4 * W.hc_head.fn.size;
  for (const auto& L : W.layers) {
    const auto& A = L.attn;
    bytes += weight_bytes(A.wq_a) + weight_bytes(A.wq_b) + weight_bytes(A.wkv) + weight_bytes(A.wo_a) +
             weight_bytes(A.wo_b) + 4 * (L.hc_attn.fn.size + L.hc_ffn.fn.size);
    if (A.compressor) bytes += weight_bytes(A.compressor->wkv) + weight_bytes(A.compressor->wgate);
    if (A.indexer) {
      bytes += weight_bytes(A.indexer->wq_b) + weight_bytes(A.indexer->weights_proj) +
               weight_bytes(A.indexer->compressor.wkv) + weight_bytes(A.indexer->compressor.wgate);
    }
    const auto& M = L.moe;
    bytes += weight_bytes(M.gate) + weight_bytes(M.shared.w1) + weight_bytes(M.shared.w2) + weight_bytes(M.shared.w3);
    bytes += cfg.num_experts_per_token *
             (weight_bytes(M.experts[0].w1) + weight_bytes(M.experts[0].w2) + weight_bytes(M.experts[0].w3));
  }
  return bytes;
}

std::vector<int32_t> tokens_for(int64_t n, int64_t vocab, uint32_t seed) {
  std::vector<int32_t> t(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& v : t) {
    x = x * 1664525u + 1013904223u;
    v = static_cast<int32_t>((x >> 8) % vocab);
  }
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"CPU decode / prefill benchmark"};
  std::string dir, numerics = "plain";
  int64_t prompt = 128, steps = 16, batch = 8;
  app.add_option("--checkpoint", dir)->required();
  app.add_option("--prompt", prompt, "prompt tokens per sequence");
  app.add_option("--steps", steps, "decode steps timed");
  app.add_option("--batch", batch, "sequences decoded together in the batched run");
  app.add_option("--numerics", numerics, "plain|reference");
  CLI11_PARSE(app, argc, argv);
  try {
    const int threads = dsv4::kernels::cpu::ThreadPool::instance().num_threads();
    const double bw = probe_read_bandwidth(size_t{1} << 30);
    dsv4::Checkpoint ckpt = dsv4::Checkpoint::open(dir);
    dsv4::Model model = dsv4::Model::from_checkpoint(ckpt, dsv4::parse_numerics(numerics));
    const int64_t V = model.config().vocab_size;
    std::printf("threads %d, avx2 %d, numerics %s, checkpoint %s (%.2f GB)\n", threads,
                dsv4::kernels::cpu::simd_avx2() ? 1 : 0, numerics.c_str(), dir.c_str(), ckpt.total_bytes() / 1e9);
    std::printf("read bandwidth probe (1 GiB, best of 5): %.2f GB/s\n", bw / 1e9);

    // Warm the page cache / mappings once so the timings below measure compute, not first-touch I/O.
    {
      dsv4::SequenceState st = model.new_sequence();
      auto t = tokens_for(4, V, 99);
      model.prefill(st, t);
    }
    dsv4::SequenceState st = model.new_sequence();
    auto toks = tokens_for(prompt + steps, V, 1);
    auto t0 = Clock::now();
    model.prefill(st, std::span<const int32_t>(toks.data(), prompt));
    const double t_prefill = seconds_since(t0);
    t0 = Clock::now();
    for (int64_t i = 0; i < steps; ++i) model.decode(st, toks[prompt + i]);
    const double t_decode = seconds_since(t0) / steps;
    const double wbytes = static_cast<double>(decode_weight_bytes(model));
    std::printf("prefill %lld tokens: %.3f s, %.1f tokens/s\n", static_cast<long long>(prompt), t_prefill,
                prompt / t_prefill);
    std::printf("decode batch 1: %.1f ms/token, %.2f tokens/s; weights read per token %.1f MB -> %.2f GB/s = %.0f%% "
                "of the probe\n",
                t_decode * 1e3, 1.0 / t_decode, wbytes / 1e6, wbytes / t_decode / 1e9, 100.0 * wbytes / t_decode / bw);

    std::vector<dsv4::SequenceState> states;
    std::vector<std::vector<int32_t>> seqs;
    for (int64_t b = 0; b < batch; ++b) {
      states.push_back(model.new_sequence());
      seqs.push_back(tokens_for(prompt / 4 + steps, V, 10 + static_cast<uint32_t>(b)));
    }
    for (int64_t b = 0; b < batch; ++b) model.prefill(states[b], std::span<const int32_t>(seqs[b].data(), prompt / 4));
    t0 = Clock::now();
    for (int64_t i = 0; i < steps; ++i) {
      std::vector<dsv4::SequenceChunk> chunks;
      for (int64_t b = 0; b < batch; ++b) {
        chunks.push_back({&states[b], std::span<const int32_t>(seqs[b].data() + prompt / 4 + i, 1)});
      }
      model.forward(chunks);
    }
    const double t_batch = seconds_since(t0) / steps;
    std::printf("decode batch %lld: %.1f ms/step, %.2f tokens/s\n", static_cast<long long>(batch), t_batch * 1e3,
                batch / t_batch);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cpu_decode_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
