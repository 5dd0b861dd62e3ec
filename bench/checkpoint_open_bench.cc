// How long opening a V4-Pro-sized checkpoint takes: index + 64 shard headers with Pro's full tensor set
// (expected_tensors of configs/models/pro.json, ~145,000 tensors), then open (config, index, every header
// parsed and validated, index/shard cross-check) and validation against the expected tensor set.
//
// Default mode writes the real shapes over sparse files (data areas are holes: ~805 GB apparent, a few MB on
// disk), so validation sees a correct checkpoint. --tiny shrinks every tensor to one element instead (for
// file systems without holes); validation then reports every shape and is not timed.
//
//   checkpoint_open_bench [--config configs/models/pro.json] [--shards 64] [--runs 7] [--dir /tmp/x] [--tiny] [--keep]
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/expected_tensors.h"
#include "runtime/checkpoint/index.h"
#include "runtime/checkpoint/validate.h"
#include "runtime/checkpoint/writer.h"
#include "runtime/config/model_config.h"
#include "runtime/core/error.h"

namespace fs = std::filesystem;
using namespace dsv4;

namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU time of the whole process (all threads): on a loaded shared machine wall time mostly measures waiting.
double cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

struct Stats {
  double median, min, max;
};
Stats stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

void build(const fs::path& config_path, const fs::path& dir, int num_shards, bool tiny) {
  const ModelConfig config = load_model_config(config_path);
  std::vector<ExpectedTensor> tensors = expected_tensors(config);
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(config_path, dir / "config.json");
  const size_t n = tensors.size();
  std::vector<std::pair<std::string, std::string>> weight_map;
  uint64_t total = 0;
  for (int s = 0; s < num_shards; ++s) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05d-of-%05d.safetensors", s + 1, num_shards);
    std::vector<TensorSpec> specs;
    for (size_t i = n * s / num_shards; i < n * (s + 1) / num_shards; ++i) {
      specs.push_back({tensors[i].name, tensors[i].dtype, tiny ? Shape({1}) : tensors[i].shape});
      weight_map.emplace_back(tensors[i].name, name);
    }
    SafetensorsWriter w(dir / name, std::move(specs));
    w.skip(w.data_bytes());
    total += w.data_bytes();
    w.finish();
  }
  write_safetensors_index(dir / kIndexFileName, weight_map, total);
  std::printf("built %zu tensors in %d shards under %s (%.1f GB of tensor data as holes)\n", n, num_shards,
              dir.c_str(), total / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  fs::path config = "configs/models/pro.json";
  fs::path dir = fs::temp_directory_path() / "dsv4_checkpoint_open_bench";
  int shards = 64, runs = 7;
  bool tiny = false, keep = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--config") config = next();
    else if (a == "--dir") dir = next();
    else if (a == "--shards") shards = std::stoi(next());
    else if (a == "--runs") runs = std::stoi(next());
    else if (a == "--tiny") tiny = true;
    else if (a == "--keep") keep = true;  // reuse --dir as built by an earlier --keep run, and leave it
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  try {
    const double t0 = now_ms();
    if (!keep || !fs::exists(dir / kIndexFileName)) {
      build(config, dir, shards, tiny);
      std::printf("build: %.0f ms\n", now_ms() - t0);
    }
    std::vector<double> open_ms, validate_ms, open_cpu, validate_cpu;
    size_t count = 0;
    for (int r = 0; r < runs; ++r) {
      const double a = now_ms(), ca = cpu_ms();
      Checkpoint ckpt = Checkpoint::open(dir);
      const double b = now_ms(), cb = cpu_ms();
      open_ms.push_back(b - a);
      open_cpu.push_back(cb - ca);
      count = ckpt.names().size();
      if (!tiny) {
        ValidateOptions opt;
        opt.scan_scales = false;  // data are holes; scale scanning reads data, not headers
        const ValidationReport report = validate_checkpoint(ckpt, opt);
        validate_ms.push_back(now_ms() - b);
        validate_cpu.push_back(cpu_ms() - cb);
        if (!report.ok()) {
          std::fprintf(stderr, "validation failed: %zu issues, first %s\n", report.issues.size(),
                       report.issues[0].tensor.c_str());
          return 1;
        }
      }
    }
    std::printf("\n%zu tensors, %d shards, %d runs%s\n", count, shards, runs, tiny ? " (tiny shapes)" : "");
    std::printf("%-34s %10s %10s %10s %12s\n", "phase", "median ms", "min ms", "max ms", "median cpu ms");
    auto row = [](const char* name, const std::vector<double>& wall, const std::vector<double>& cpu) {
      Stats w = stats(wall), c = stats(cpu);
      std::printf("%-34s %10.1f %10.1f %10.1f %12.1f\n", name, w.median, w.min, w.max, c.median);
    };
    row("open (index + headers + checks)", open_ms, open_cpu);
    if (!tiny) {
      row("validate against expected_tensors", validate_ms, validate_cpu);
      std::vector<double> sum(open_ms.size()), sum_cpu(open_ms.size());
      for (size_t i = 0; i < sum.size(); ++i) {
        sum[i] = open_ms[i] + validate_ms[i];
        sum_cpu[i] = open_cpu[i] + validate_cpu[i];
      }
      row("open + validate", sum, sum_cpu);
    }
    if (!keep) fs::remove_all(dir);
  } catch (const Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
