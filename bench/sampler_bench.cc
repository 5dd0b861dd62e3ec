// Cost of reducing logits to sampling candidates (shard_candidates), the per-sampled-row work every TP rank does
// each step. Prints two tables:
//   1. one row at a time: vocabulary shard size, temperature, candidates, microseconds per row, for requests
//      with top logprobs (every normaliser they use) and without (a greedy one then needs no normaliser, a
//      sampled one only the scaled one);
//   2. the rows of one step (shard_candidates_rows): serial loop against the CPU kernel thread pool
//      (DSV4_NUM_THREADS threads), milliseconds per step, with a check that both give the same candidates.
//
//   build/bench/sampler_bench [--rows 200]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/thread_pool.h"
#include "runtime/engine/sampler.h"

namespace {

// Logits shaped like a model's: mostly small, a few large (a peaked distribution); `rows` rows of `vocab`.
std::vector<float> make_logits(int64_t vocab, int rows) {
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<float> logits(static_cast<size_t>(vocab) * static_cast<size_t>(rows));
  for (float& x : logits) x = d(rng);
  return logits;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

bool same(const std::vector<dsv4::ShardCandidates>& a, const std::vector<dsv4::ShardCandidates>& b) {
  if (a.size() != b.size()) return false;
  for (size_t r = 0; r < a.size(); ++r) {
    if (std::memcmp(&a[r].raw_logsumexp, &b[r].raw_logsumexp, 8) != 0 ||
        std::memcmp(&a[r].scaled_logsumexp, &b[r].scaled_logsumexp, 8) != 0 || a[r].top.size() != b[r].top.size()) {
      return false;
    }
    for (size_t i = 0; i < a[r].top.size(); ++i) {
      if (a[r].top[i].id != b[r].top[i].id || a[r].top[i].logit != b[r].top[i].logit) return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int rows = 200;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--rows") == 0) rows = std::atoi(argv[i + 1]);
  }
  if (rows < 1) {
    std::fprintf(stderr, "--rows must be >= 1\n");
    return 2;
  }
  std::printf("| vocab shard | temperature | candidates | us per row |\n|---:|---:|---:|---:|\n");
  struct Case {
    float temperature;
    int32_t top_logprobs;
    const char* label;
  };
  const Case cases[] = {{0.0f, 1, "0.0 logprobs"}, {0.0f, 0, "0.0"},          {0.7f, 1, "0.7 logprobs"},
                        {0.7f, 0, "0.7"},          {1.0f, 1, "1.0 logprobs"}, {1.0f, 0, "1.0"}};
  for (int64_t vocab : {129280, 64640, 32320}) {
    const std::vector<float> logits = make_logits(vocab, 4);
    for (const Case& c : cases) {
      dsv4::SamplingParams params;
      params.temperature = c.temperature;
      params.top_logprobs = c.top_logprobs;
      const dsv4::Normalisers which = dsv4::normalisers_for(params);
      size_t kept = 0;
      const auto start = std::chrono::steady_clock::now();
      for (int r = 0; r < rows; ++r) {
        const float* row = logits.data() + (r % 4) * vocab;
        const dsv4::ShardCandidates out = dsv4::shard_candidates(
            std::span<const float>(row, static_cast<size_t>(vocab)), 0, c.temperature, 256, which);
        kept += out.top.size();
      }
      std::printf("| %lld | %s | %zu | %.1f |\n", static_cast<long long>(vocab), c.label, kept / rows,
                  seconds_since(start) * 1e6 / rows);
    }
  }

  const int threads = dsv4::kernels::cpu::ThreadPool::instance().num_threads();
  std::printf("\n| rows per step | vocab shard | temperature | serial ms | pool ms (%d threads) | same |\n"
              "|---:|---:|---:|---:|---:|:---:|\n",
              threads);
  for (int step_rows : {8, 64}) {
    for (int64_t vocab : {129280, 64640}) {
      const std::vector<float> logits = make_logits(vocab, step_rows);
      for (float temperature : {0.7f, 1.0f}) {
        std::vector<dsv4::CandidateRow> batch;
        for (int r = 0; r < step_rows; ++r) {
          batch.push_back({std::span<const float>(logits.data() + r * vocab, static_cast<size_t>(vocab)), 0,
                           temperature, 256, dsv4::Normalisers{}});
        }
        const int reps = std::max(1, rows / step_rows);
        double serial_s = 0.0, pool_s = 0.0;
        std::vector<dsv4::ShardCandidates> a, b;
        for (int k = 0; k < reps; ++k) {
          auto start = std::chrono::steady_clock::now();
          a = dsv4::shard_candidates_rows(batch, /*parallel=*/false);
          serial_s += seconds_since(start);
          start = std::chrono::steady_clock::now();
          b = dsv4::shard_candidates_rows(batch, /*parallel=*/true);
          pool_s += seconds_since(start);
        }
        std::printf("| %d | %lld | %.1f | %.2f | %.2f | %s |\n", step_rows, static_cast<long long>(vocab), temperature,
                    serial_s * 1e3 / reps, pool_s * 1e3 / reps, same(a, b) ? "yes" : "NO");
      }
    }
  }
  return 0;
}
