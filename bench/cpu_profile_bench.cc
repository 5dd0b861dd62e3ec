// Measures, on this machine, what the simulator's CPU hardware profile (configs/hardware/cpu-2core.yaml) needs,
// with the project's own kernels and communicators, and can write the measured fields into that profile.
//
//   cpu_profile_bench [--yaml PATH] [--reps N]                      one rank: memory + linear kernel rates
//   mpirun --oversubscribe -np 2 cpu_profile_bench [--yaml PATH]    two ranks: MPI latency, bandwidth, a2a
//   scripts/scaling/measure_cpu_profile.sh                          both, into configs/hardware/cpu-2core.yaml
//
// One rank (all pool threads, DSV4_NUM_THREADS unset = every core):
//   memory_bandwidth   read-only streaming over 1 GiB (threads sum disjoint parts), median of --reps passes
//   linear kernel      kernels::cpu::linear on [2048 x 1024] weights of each format (FP8 + E8M0 128-blocks, FP4 +
//                      E8M0 per 32, BF16, F32), rotating over 128 MiB of matrices (4x the L3, so weights come from
//                      memory as in a decode step) at m = 1 and 8 tokens, and m = 64 on 8 matrices. The kernel
//                      decodes each 8-column weight group once per pass of 8 tokens and FMAs it into those
//                      tokens, so its time is modelled as
//                          t(m) = out * in * (ceil(m / 8) / cpu_<fmt>_pass + 2 m / cpu_<fmt>_flops)
//                      fitted per format from m = 1 and m = 8; the m = 64 column shows the model's error on a
//                      shape it was not fitted on.
// Two or more ranks (one thread each; rank 0's numbers, each iteration the max over ranks, medians):
//   MPI_Send/Recv ping-pong (8 B: latency; 4 MiB: bandwidth), Communicator::all_reduce of f32 (8 floats and 1 Mi
//   floats: intra_latency = t_small / (2 ceil(log2 n)), intra_bandwidth from the ring term), all_to_all_v (bare)
//   and MoeDispatcher dispatch + combine of f32 rows (hidden 1024, top-6 of 64 experts, what the CPU model sends)
//   at 1 and 512 tokens per rank: a2a_latency = half the 1-token round trip, a2a_intra_bandwidth = bytes that
//   cross ranks / (t - 2 latency) at 512 tokens.
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/ops/linear.h"
#include "parallel/bootstrap.h"
#include "parallel/communicator.h"
#include "parallel/moe_dispatch.h"
#include "runtime/core/float_formats.h"
#include "runtime/core/tensor.h"

namespace {

using namespace dsv4;
using Clock = std::chrono::steady_clock;

double now_s() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }

// CPU seconds of the whole process (all threads): over wall time, the cores the process really got.
double cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// One measured field for the profile: value, and the note written next to it.
struct Field {
  double value;
  std::string note;
};
using Fields = std::map<std::string, Field>;

// ---- one rank: memory and the linear kernel ---------------------------------------------------------------

double read_bandwidth(size_t bytes, int reps) {
  const int64_t n = static_cast<int64_t>(bytes / sizeof(float));
  Buffer buf(bytes);
  float* data = static_cast<float*>(buf.data());
  kernels::cpu::parallel_for(n, 1 << 20, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) data[i] = static_cast<float>(i & 7);
  });
  std::vector<float> ones(1 << 16, 1.0f);
  const int64_t tile = static_cast<int64_t>(ones.size());
  std::vector<double> rates;
  volatile float sink = 0.0f;
  for (int pass = 0; pass < reps; ++pass) {
    std::vector<float> partial(1024, 0.0f);
    const double t0 = now_s();
    kernels::cpu::parallel_for((n + tile - 1) / tile, 16, [&](int64_t b, int64_t e) {
      float s = 0.0f;
      for (int64_t t = b; t < e; ++t)
        s += kernels::cpu::dot(data + t * tile, ones.data(), std::min(tile, n - t * tile));
      partial[static_cast<size_t>(b % 1024)] += s;
    });
    rates.push_back(static_cast<double>(bytes) / (now_s() - t0));
    for (float p : partial) sink = sink + p;
  }
  return median(rates);
}

struct Format {
  const char* name;
  DType dtype;
  double bytes_per_weight;  // including scales
};

// `count` matrices [out, in] of one format with finite random codes and unit scales.
struct MatrixSet {
  std::vector<Buffer> data, scales;
  std::vector<kernels::WeightRef> refs;
};

MatrixSet make_matrices(const Format& f, int64_t out, int64_t in, int count) {
  MatrixSet s;
  for (int i = 0; i < count; ++i) {
    kernels::WeightRef w;
    w.dtype = f.dtype;
    w.out = out;
    w.in = in;
    size_t bytes = 0, scale_entries = 0;
    switch (f.dtype) {
      case DType::kF8E4M3:
        bytes = out * in;
        scale_entries = ((out + 127) / 128) * ((in + 127) / 128);
        break;
      case DType::kFP4E2M1:
        bytes = out * in / 2;
        scale_entries = out * in / 32;
        w.block = 32;
        break;
      case DType::kBF16: bytes = 2 * out * in; break;
      default: bytes = 4 * out * in; break;
    }
    s.data.emplace_back(bytes);
    auto* p = static_cast<uint8_t*>(s.data.back().data());
    uint64_t state = 0x5eed + static_cast<uint64_t>(i) * 7919;
    if (f.dtype == DType::kBF16) {
      auto* q = reinterpret_cast<uint16_t*>(p);
      for (size_t j = 0; j < bytes / 2; ++j)
        q[j] = f32_to_bf16(static_cast<float>(mix(++state) % 2001) / 1000.0f - 1.0f);
    } else if (f.dtype == DType::kF32) {
      auto* q = reinterpret_cast<float*>(p);
      for (size_t j = 0; j < bytes / 4; ++j) q[j] = static_cast<float>(mix(++state) % 2001) / 1000.0f - 1.0f;
    } else {
      // e4m3: clear the exponent's top bit so no code is NaN; FP4 codes are all finite.
      const uint8_t mask = f.dtype == DType::kF8E4M3 ? 0xBF : 0xFF;
      for (size_t j = 0; j < bytes; ++j) p[j] = static_cast<uint8_t>(mix(++state)) & mask;
    }
    if (scale_entries) {
      s.scales.emplace_back(scale_entries);
      std::memset(s.scales.back().data(), 127, scale_entries);  // E8M0 127 = 1.0
      w.scale = s.scales.back().data();
      w.scale_dtype = DType::kF8E8M0;
    }
    w.data = p;
    s.refs.push_back(w);
  }
  return s;
}

// One sweep of one linear over `m` tokens on each of the first `use` matrices: seconds per matrix.
double sweep_linear(const MatrixSet& s, int use, int64_t m, const std::vector<float>& x, std::vector<float>& y) {
  const kernels::WeightRef& w0 = s.refs[0];
  const double t0 = now_s();
  for (int i = 0; i < use; ++i) {
    kernels::LinearParams p;
    p.x = x.data();
    p.m = m;
    p.x_stride = w0.in;
    p.w = s.refs[static_cast<size_t>(i)];
    p.rows = w0.out;
    p.y = y.data();
    p.y_stride = w0.out;
    kernels::cpu::linear(p);
  }
  return (now_s() - t0) / use;
}

// Medians over `reps` of the seconds per matrix at each of `ms` token counts. The counts alternate inside every
// repetition, so that on a machine whose load drifts each count sees the same conditions (the fit compares them).
std::vector<double> time_linear(const MatrixSet& s, int use, const std::vector<int64_t>& ms, int reps) {
  const kernels::WeightRef& w0 = s.refs[0];
  const int64_t mmax = *std::max_element(ms.begin(), ms.end());
  std::vector<float> x(static_cast<size_t>(mmax * w0.in)), y(static_cast<size_t>(mmax * w0.out));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(mix(i) % 2001) / 1000.0f - 1.0f;
  std::vector<std::vector<double>> t(ms.size());
  for (int rep = -1; rep < reps; ++rep) {  // one warm-up round
    for (size_t j = 0; j < ms.size(); ++j) {
      const double dt = sweep_linear(s, use, ms[j], x, y);
      if (rep >= 0) t[j].push_back(dt);
    }
  }
  std::vector<double> out;
  for (auto& v : t) out.push_back(median(v));
  return out;
}

void measure_compute(int reps, Fields& fields, const std::string& by) {
  const int threads = kernels::cpu::ThreadPool::instance().num_threads();
  const double bw = read_bandwidth(size_t{1} << 30, reps);
  std::printf("memory: read bandwidth %.2f GB/s (%d threads, 1 GiB, median of %d)\n\n", bw / 1e9, threads, reps);
  fields["memory_bandwidth"] = {
      bw, "measured " + by + ": read-only streaming of 1 GiB, " + std::to_string(threads) + " threads, median"};

  const int64_t out = 2048, in = 1024;
  const Format formats[] = {{"fp8", DType::kF8E4M3, 1.0 + 1.0 / (128.0 * 128.0)},
                            {"fp4", DType::kFP4E2M1, 0.5 + 1.0 / 32.0},
                            {"bf16", DType::kBF16, 2.0},
                            {"f32", DType::kF32, 4.0}};
  const double elems = static_cast<double>(out * in);
  std::printf("linear kernel, [%lld x %lld] weights, %d threads (ms per matrix, median of %d sweeps)\n",
              static_cast<long long>(out), static_cast<long long>(in), threads, reps);
  std::printf("%-5s %8s %8s %8s | %10s %12s | %12s %10s %9s\n", "fmt", "m=1", "m=8", "m=64", "m=1 GB/s", "m=64 GFLOP/s",
              "pass Gw/s", "token GF/s", "m=64 err");
  struct Fit {
    double a, b, t64;
  };
  std::map<std::string, Fit> fits;
  const double cpu0 = cpu_s(), wall0 = now_s();
  for (const Format& f : formats) {
    const int count = static_cast<int>(std::max<double>(8.0, (128.0 * (1 << 20)) / (elems * f.bytes_per_weight)));
    const MatrixSet set = make_matrices(f, out, in, count);
    const std::vector<double> t18 = time_linear(set, count, {1, 8}, reps);
    const double t1 = t18[0], t8 = t18[1];
    const double t64 = time_linear(set, 8, {64}, std::max(1, reps / 2))[0];
    // t(m) = a * ceil(m/8) + b * m per matrix: t1 = a + b, t8 = a + 8 b.
    const double b = std::max(0.0, (t8 - t1) / 7.0);
    const double a = t1 - b;
    if (a <= 0)
      throw std::runtime_error(std::string(f.name) +
                               ": m=8 took under 8/7 of m=1 minus one pass; the machine "
                               "was too noisy for the fit, run again");
    fits[f.name] = {a, b, t64};
    std::printf("%-5s %8.3f %8.3f %8.3f | %10.2f %12.2f | %12.3f %10.2f %8.1f%%\n", f.name, t1 * 1e3, t8 * 1e3,
                t64 * 1e3, elems * f.bytes_per_weight / t1 / 1e9, 2.0 * 64 * elems / t64 / 1e9, elems / a / 1e9,
                2.0 * elems / b / 1e9, 100.0 * ((8 * a + 64 * b) / t64 - 1.0));
  }
  // On a machine shared with other work the rates are those of the share of the cores the bench got: say which.
  const double cores = (cpu_s() - cpu0) / (now_s() - wall0);
  std::printf("\nthe linear measurements got %.2f cores on average (CPU time / wall time; %u hardware threads)\n",
              cores, std::thread::hardware_concurrency());
  char got[64];
  std::snprintf(got, sizeof(got), "; got %.2f cores", cores);
  // Per format: the cost of one pass over the weights (decode + stream, per 8 tokens) and the per-token FMA rate.
  // (The FMA term differs by format: the decoded group is consumed from registers, and the compiler schedules
  // the decode of FP8/FP4 and the FMAs together, so the two are not separable into a shared FMA rate.)
  for (const Format& f : formats) {
    const Fit& fit = fits[f.name];
    const std::string by_t =
        "measured " + by + ": linear kernel [2048 x 1024] " + f.name + ", " + std::to_string(threads) +
        " threads, fit of m=1 and m=8; m=64 off by " +
        std::to_string(static_cast<int>(std::lround(100.0 * ((8 * fit.a + 64 * fit.b) / fit.t64 - 1.0)))) + "%" + got;
    fields[std::string("cpu_") + f.name + "_pass"] = {elems / fit.a, by_t + " (weights per s per 8-token pass)"};
    fields[std::string("cpu_") + f.name + "_flops"] = {2.0 * elems / std::max(1e-15, fit.b),
                                                       by_t + " (per-token FLOP/s)"};
  }
  fields["bf16_flops"] = {2.0 * 64 * elems / fits["bf16"].t64,
                          "measured " + by + ": linear kernel, bf16 weights, m=64 (the CPU model uses cpu_* fields)"};
  fields["fp8_flops"] = {2.0 * 64 * elems / fits["fp8"].t64,
                         "measured " + by + ": linear kernel, fp8 weights, m=64 (the CPU model uses cpu_* fields)"};
}

// ---- several ranks: MPI and the project's communicator ------------------------------------------------------

// Median over iterations of the max over ranks of fn()'s time.
template <typename Fn>
double timed(int iters, Fn&& fn) {
  std::vector<double> t;
  for (int it = -2; it < iters; ++it) {
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = now_s();
    fn();
    double dt = now_s() - t0, mx = 0;
    MPI_Allreduce(&dt, &mx, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (it >= 0) t.push_back(mx);
  }
  return median(t);
}

void measure_comm(int iters, Fields& fields, const std::string& by) {
  auto bootstrap = parallel::make_mpi_bootstrap();
  auto comm = parallel::make_communicator("mpi", *bootstrap);
  const int n = comm->size(), r = comm->rank();
  const double hops = std::ceil(std::log2(static_cast<double>(n)));
  auto say = [r](const char* fmt, auto... args) {
    if (r == 0) std::printf(fmt, args...);
  };
  say("\nMPI / communicator, %d ranks (median over %d iterations of the max over ranks)\n", n, iters);

  // Ping-pong between ranks 0 and 1 (the others idle): one-way time = round trip / 2.
  auto pingpong = [&](size_t bytes) {
    std::vector<char> buf(bytes, 1);
    return timed(iters,
                 [&] {
                   if (r == 0) {
                     MPI_Send(buf.data(), static_cast<int>(bytes), MPI_BYTE, 1, 0, MPI_COMM_WORLD);
                     MPI_Recv(buf.data(), static_cast<int>(bytes), MPI_BYTE, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                   } else if (r == 1) {
                     MPI_Recv(buf.data(), static_cast<int>(bytes), MPI_BYTE, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                     MPI_Send(buf.data(), static_cast<int>(bytes), MPI_BYTE, 0, 0, MPI_COMM_WORLD);
                   }
                 }) /
           2.0;
  };
  const double pp_small = pingpong(8), pp_big = pingpong(size_t{4} << 20);
  say("ping-pong: 8 B one way %.2f us; 4 MiB one way %.3f ms = %.2f GB/s\n", pp_small * 1e6, pp_big * 1e3,
      (4 << 20) / pp_big / 1e9);

  // all_reduce of f32 through the project's communicator (host reduction in rank order included).
  auto allreduce = [&](size_t count) {
    std::vector<float> a(count, 1.0f), b(count);
    return timed(iters, [&] {
      comm->all_reduce(a.data(), b.data(), count, DType::kF32, parallel::ReduceOp::kSum, parallel::kDefaultStream);
    });
  };
  const size_t big = size_t{1} << 20;
  const double ar_small = allreduce(8), ar_big = allreduce(big);
  const double lat = ar_small / (2.0 * hops);
  const double ar_bw = 2.0 * (n - 1) / n * static_cast<double>(big * 4) / std::max(1e-9, ar_big - ar_small);
  say("all_reduce f32: 32 B %.2f us (latency per hop %.2f us); 4 MiB %.3f ms (ring bandwidth %.2f GB/s)\n",
      ar_small * 1e6, lat * 1e6, ar_big * 1e3, ar_bw / 1e9);

  // Bare all_to_all_v: every rank sends `per_peer` bytes to every rank (itself included).
  auto a2a_bare = [&](size_t per_peer) {
    std::vector<char> s(per_peer * n, 1), d(per_peer * n);
    std::vector<size_t> counts(n, per_peer), displs(n);
    for (int p = 0; p < n; ++p) displs[p] = per_peer * p;
    parallel::AllToAllVArgs args{s.data(), counts, displs, d.data(), counts, displs, DType::kU8};
    return timed(iters, [&] { comm->all_to_all_v(args, parallel::kDefaultStream); });
  };
  const size_t row = 1024 * 4;
  const double bare_small = a2a_bare(row), bare_big = a2a_bare(row * 512 * 6 / n);
  say("all_to_all_v bare: 1 row/peer %.2f us; %zu KiB/peer %.3f ms (%.2f GB/s crossing)\n", bare_small * 1e6,
      row * 512 * 6 / n / 1024, bare_big * 1e3,
      static_cast<double>(row * 512 * 6 / n) * (n - 1) / std::max(1e-9, bare_big - bare_small) / 1e9);

  // The MoE exchange the CPU model runs: f32 rows, hidden 1024, top-6 of 64 experts, dispatch + combine.
  const int experts = 64, top_k = 6;
  const int64_t hidden = 1024;
  auto moe = [&](int64_t tokens, double* crossing_bytes) {
    parallel::MoeDispatcher disp(*comm, {experts, hidden, DType::kF32, parallel::MoeExchange::kAuto});
    std::vector<int32_t> ids(static_cast<size_t>(tokens * top_k));
    uint64_t state = 0x1234 + static_cast<uint64_t>(r) * 7919;
    for (int64_t t = 0; t < tokens; ++t)
      for (int k = 0; k < top_k; ++k) {
        int32_t e;
        bool repeat;
        do {
          e = static_cast<int32_t>(mix(++state) % experts);
          repeat = false;
          for (int j = 0; j < k; ++j) repeat |= ids[static_cast<size_t>(t * top_k + j)] == e;
        } while (repeat);
        ids[static_cast<size_t>(t * top_k + k)] = e;
      }
    std::vector<float> x(static_cast<size_t>(tokens * hidden), 0.5f), y(x.size());
    std::vector<float> w(ids.size(), 1.0f / top_k);
    const parallel::MoeDispatchInput in{tokens, top_k, ids.data(), x.data()};
    const double t = timed(iters, [&] {
      const auto& d = disp.dispatch(in);
      disp.combine(d.rows, w.data(), y.data());
    });
    // Rows this rank received from other ranks, both directions, max over ranks.
    const auto& plan = disp.result();
    double cross = 0;
    for (int p = 0; p < n; ++p)
      if (p != r) cross += static_cast<double>(plan.recv_rows[p] + plan.send_rows[p]) * hidden * 4;
    MPI_Allreduce(MPI_IN_PLACE, &cross, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    *crossing_bytes = cross;
    return t;
  };
  double cross_small = 0, cross_big = 0;
  const double moe_small = moe(1, &cross_small), moe_big = moe(512, &cross_big);
  const double a2a_lat = moe_small / 2.0;
  const double a2a_bw = cross_big / std::max(1e-9, moe_big - moe_small);
  say("moe dispatch+combine f32 (hidden 1024, top-6/64): 1 token %.2f us; 512 tokens %.3f ms, %.2f MiB crossing "
      "-> %.2f GB/s\n",
      moe_small * 1e6, moe_big * 1e3, cross_big / (1 << 20), a2a_bw / 1e9);

  const std::string ranks = std::to_string(n) + " ranks";
  fields["intra_latency"] = {lat,
                             "measured " + by + ": Communicator::all_reduce of 8 f32 / (2 ceil(log2 n)), " + ranks};
  fields["intra_bandwidth"] = {ar_bw, "measured " + by + ": all_reduce of 4 MiB f32, ring term, " + ranks};
  fields["a2a_latency"] = {a2a_lat, "measured " + by + ": MoeDispatcher dispatch+combine of 1 token / 2, " + ranks};
  fields["a2a_intra_bandwidth"] = {a2a_bw, "measured " + by +
                                               ": MoeDispatcher f32 rows crossing ranks, 512 tokens/rank, " + ranks +
                                               " (the exchange kAuto takes: the shared window on one node)"};
}

// Replaces the line `key: {...}` of each measured field in the profile (other lines untouched).
void write_yaml(const std::string& path, const Fields& fields) {
  std::ifstream in(path);
  if (!in.good()) throw std::runtime_error("cannot read " + path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  for (const auto& [key, f] : fields) {
    char value[64];
    std::snprintf(value, sizeof(value), "%.4g", f.value);
    const std::string text = key + ": {value: " + value + ", source: measured, note: \"" + f.note + "\"}";
    bool found = false;
    for (auto& line : lines)
      if (line.rfind(key + ":", 0) == 0) {
        line = text;
        found = true;
      }
    if (!found) lines.push_back(text);
  }
  std::ofstream out(path);
  for (const auto& line : lines) out << line << "\n";
  std::printf("wrote %zu measured fields into %s\n", fields.size(), path.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  CLI::App app{"cpu_profile_bench: measures the CPU hardware profile of the simulator"};
  std::string yaml;
  int reps = 5;
  app.add_option("--yaml", yaml, "profile to update with the measured fields (rank 0 writes)");
  app.add_option("--reps", reps, "repetitions (medians)")->check(CLI::Range(1, 1000));
  // (A failed fit exits with status 1 on one rank, so that scripts can retry.)
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    MPI_Finalize();
    return rc;
  }
  int size = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  char date[32];
  const std::time_t t = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%d", std::gmtime(&t));
  Fields fields;
  try {
    if (size == 1) {
      measure_compute(reps, fields, std::string(date) + " by cpu_profile_bench");
    } else {
      measure_comm(std::max(10, 4 * reps), fields,
                   std::string(date) + " by mpirun -np " + std::to_string(size) + " cpu_profile_bench");
    }
    if (rank == 0 && !yaml.empty()) write_yaml(yaml, fields);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[rank %d] cpu_profile_bench: %s\n", rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return 0;
}
