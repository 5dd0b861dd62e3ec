// Cost of reducing one row of logits to sampling candidates (shard_candidates), the per-sampled-row work every
// TP rank does each step. Prints a table: vocabulary shard size, temperature, candidates, microseconds per row.
//
//   build/bench/sampler_bench [--rows 200]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "runtime/engine/sampler.h"

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
  for (int64_t vocab : {129280, 64640, 32320}) {
    // Logits shaped like a model's: mostly small, a few large (a peaked distribution).
    std::mt19937 rng(1);
    std::normal_distribution<float> d(0.0f, 2.0f);
    std::vector<float> logits(static_cast<size_t>(vocab) * 4);
    for (float& x : logits) x = d(rng);
    for (float temperature : {0.0f, 0.7f, 1.0f}) {
      size_t kept = 0;
      const auto start = std::chrono::steady_clock::now();
      for (int r = 0; r < rows; ++r) {
        const float* row = logits.data() + (r % 4) * vocab;
        const dsv4::ShardCandidates c =
            dsv4::shard_candidates(std::span<const float>(row, static_cast<size_t>(vocab)), 0, temperature, 256);
        kept += c.top.size();
      }
      const double us =
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() / rows;
      std::printf("| %lld | %.1f | %zu | %.1f |\n", static_cast<long long>(vocab), temperature, kept / rows, us);
    }
  }
  return 0;
}
