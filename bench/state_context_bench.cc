// Sequence state against context length (issue 5): prefills one sequence of a checkpoint (e.g. the narrow
// model: `dsv4 make-checkpoint --config configs/models/narrow.json --out /tmp/narrow`) to each context in
// chunks, then decodes a few tokens, with its state in a StatePool.
//
//   state_context_bench --checkpoint DIR [--contexts 16384,32768] [--chunk 4096] [--decode 16]
//                       [--page-bytes 65536] [--numerics plain]
//
// Per context: the pool bytes the sequence holds (and the CPU planner's prediction, which must be equal), bytes
// per token, compressed rows, prefill tokens/s and CPU seconds, decode ms per token (wall and CPU), and the
// process's peak RSS (ru_maxrss).
// The production FP8 planner's bytes (spec §5.3) are printed beside: the same rows in the layout a GPU holds.
// Run one context per process to see each context's own peak RSS.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "kernels/cpu/thread_pool.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/core/error.h"
#include "runtime/kv/cpu_state_bytes.h"
#include "runtime/kv/state_bytes.h"
#include "runtime/kv/state_pool.h"
#include "runtime/model/model.h"

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// User + system CPU seconds of the process (all threads): on a shared machine the wall time depends on how
// much of the cores the run got, the CPU time much less.
double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

int64_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;  // Linux reports KiB
}

std::vector<int64_t> parse_list(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoll(item));
  return out;
}

int32_t argmax(const float* x, int64_t n) { return static_cast<int32_t>(std::max_element(x, x + n) - x); }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sequence state and speed against context length"};
  std::string dir, numerics = "plain", contexts_text = "16384,32768,65536,131072";
  int64_t chunk = 4096, decode = 16, page_bytes = dsv4::kDefaultStatePageBytes;
  app.add_option("--checkpoint", dir, "checkpoint folder")->required();
  app.add_option("--contexts", contexts_text, "comma-separated context lengths, ascending");
  app.add_option("--chunk", chunk, "prefill chunk (tokens)");
  app.add_option("--decode", decode, "decode steps after each prefill");
  app.add_option("--page-bytes", page_bytes, "state pool page size");
  app.add_option("--numerics", numerics, "plain|reference");
  CLI11_PARSE(app, argc, argv);
  try {
    const std::vector<int64_t> contexts = parse_list(contexts_text);
    dsv4::Checkpoint ckpt = dsv4::Checkpoint::open(dir);
    dsv4::Model model = dsv4::Model::from_checkpoint(ckpt, dsv4::parse_numerics(numerics));
    const dsv4::ModelConfig& cfg = model.config();
    const int64_t mtp = model.has_mtp() ? cfg.num_mtp_layers : 0;
    const int64_t V = cfg.vocab_size;
    std::printf("checkpoint %s, %lld layers, window %lld, index top-k %lld, threads %d, chunk %lld, page %lld B\n",
                dir.c_str(), static_cast<long long>(cfg.num_layers), static_cast<long long>(cfg.sliding_window),
                static_cast<long long>(cfg.index_topk), dsv4::kernels::cpu::ThreadPool::instance().num_threads(),
                static_cast<long long>(chunk), static_cast<long long>(page_bytes));
    std::printf("peak RSS after loading: %.1f MiB\n", peak_rss_bytes() / 1048576.0);
    std::printf("%9s %10s %14s %13s %8s %12s %11s %11s %9s %10s %12s %11s\n", "context", "comp rows",
                "state B (pool)", "planner B", "B/token", "fp8 plan B", "prefill t/s", "prefill CPU", "decode ms",
                "decode CPU", "peak RSS MiB", "pool hw MiB");
    for (int64_t context : contexts) {
      dsv4::StatePool pool({page_bytes, dsv4::kUnlimitedStateBudget});
      dsv4::SequenceState st = model.new_sequence(&pool);
      std::mt19937 rng(static_cast<uint32_t>(context));
      std::vector<int32_t> tokens(static_cast<size_t>(context));
      for (auto& t : tokens) t = static_cast<int32_t>(rng() % static_cast<uint32_t>(V));
      int32_t next = 0;
      const auto t0 = Clock::now();
      const double c0 = cpu_seconds();
      for (int64_t i = 0; i < context; i += chunk) {
        const int64_t n = std::min(chunk, context - i);
        dsv4::SequenceChunk c{&st, std::span<const int32_t>(tokens.data() + i, static_cast<size_t>(n))};
        dsv4::ForwardOutput out =
            model.forward(std::span<const dsv4::SequenceChunk>(&c, 1), false, dsv4::LogitsRows::kLastOfEachChunk);
        next = argmax(out.logits.as<float>(), V);
      }
      const double prefill_s = seconds_since(t0);
      const double prefill_cpu = cpu_seconds() - c0;
      const int64_t prefill_bytes = st.memory_bytes();
      const auto t1 = Clock::now();
      const double c1 = cpu_seconds();
      for (int64_t s = 0; s < decode; ++s) {
        dsv4::Tensor logits = model.decode(st, next);
        next = argmax(logits.as<float>(), V);
      }
      const double decode_ms = decode > 0 ? seconds_since(t1) * 1e3 / static_cast<double>(decode) : 0.0;
      const double decode_cpu_ms = decode > 0 ? (cpu_seconds() - c1) * 1e3 / static_cast<double>(decode) : 0.0;
      const dsv4::CpuStateBytes plan = dsv4::cpu_state_bytes(cfg, context, page_bytes, mtp);
      DSV4_CHECK(plan.total() == prefill_bytes)
          << "planner " << plan.total() << " B != pool " << prefill_bytes << " B at " << context << " tokens";
      int64_t rows = 0;
      for (const dsv4::LayerState& ls : st.layers) rows += ls.main.num_rows() + ls.index.num_rows();
      const int64_t fp8 = dsv4::sequence_bytes(cfg, dsv4::KvLayout::kProductionFp8, context, mtp > 0);
      std::printf("%9lld %10lld %14lld %13lld %8.1f %12lld %11.0f %10.1fs %9.2f %9.2fms %12.1f %11.1f\n",
                  static_cast<long long>(context), static_cast<long long>(rows),
                  static_cast<long long>(prefill_bytes), static_cast<long long>(plan.total()),
                  static_cast<double>(prefill_bytes) / static_cast<double>(context), static_cast<long long>(fp8),
                  static_cast<double>(context) / prefill_s, prefill_cpu, decode_ms, decode_cpu_ms,
                  peak_rss_bytes() / 1048576.0, pool.high_water_bytes() / 1048576.0);
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "state_context_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
