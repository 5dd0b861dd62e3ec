// Long-context prefill with context parallelism (issue 5): one sequence of --tokens random tokens prefilled
// in chunks by a CP group of all the job's ranks (TP = EP = 1: every rank holds the whole model), then a few
// decode steps. Run under mpirun; the CP size is the number of ranks (a plain run is CP = 1):
//
//   mpirun -np 2 cp_long_context_bench --checkpoint /tmp/narrow --tokens 262144 [--chunk 4096] [--decode 4]
//
// With --reserve-only nothing is run: the sequence state is made and its row pages are reserved for --tokens
// tokens (reserve_sequence_rows: this rank's share of floor(tokens / ratio) rows per compressor), which is
// what the pool books after a prefill of that length; a quick way to get the state bytes of a length too
// long to prefill on a small machine (cross-checked against real prefills in docs/PERFORMANCE.md).
//
// Each CP rank runs a contiguous sub-block of every chunk (runtime/model/context_parallel_attention.cc).
// Prints, per rank, the sequence-state bytes the state pool books (compressed-row pages plus the fixed ring
// and compressor windows), the compressed rows held, the peak resident set and the time and bytes of the CP
// exchanges during the prefill; and the prefill time of every block of --report-every tokens and the decode
// time per token (wall clock of rank 0, all ranks run in lock step). With --decode-at-reports the --decode
// steps also run at every report point (timed apart from the prefill; their tokens join the sequence, so the
// later prompt positions shift by that many), giving decode time against context length in one run.
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "parallel/bootstrap.h"
#include "parallel/communicator.h"
#include "parallel/context_parallel.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/core/error.h"
#include "runtime/model/model.h"

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Peak resident set of this process in bytes (VmHWM), 0 when unavailable.
int64_t peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return 0;
}

struct RankFigures {
  int64_t state_bytes = 0;
  int64_t rows = 0;       // compressed + indexer rows held, all layers
  int64_t row_bytes = 0;  // their payload (rows * dim * 4)
  int64_t peak_rss = 0;
  int64_t exchange_us = 0;     // prefill time inside the CP collectives (waiting for peers included)
  int64_t exchange_bytes = 0;  // bytes those collectives received during the prefill
};
constexpr int kFigures = 6;
static_assert(sizeof(RankFigures) == kFigures * sizeof(int64_t), "gathered as int64 values");

int run(int argc, char** argv) {
  CLI::App app{"context-parallel long-context prefill benchmark"};
  std::string checkpoint_dir, numerics_name = "plain";
  int64_t tokens = 262144, chunk = 4096, decode = 4, report_every = 32768;
  bool reserve_only = false, decode_at_reports = false, no_overlap = false;
  app.add_option("--checkpoint", checkpoint_dir, "checkpoint directory (dsv4 make-checkpoint)")->required();
  app.add_option("--tokens", tokens, "prompt length");
  app.add_option("--chunk", chunk, "prefill chunk size");
  app.add_option("--decode", decode, "decode steps after the prefill");
  app.add_option("--numerics", numerics_name, "plain | reference");
  app.add_option("--report-every", report_every, "progress line every this many tokens (rank 0)");
  app.add_flag("--decode-at-reports", decode_at_reports, "also time --decode steps at every report point");
  app.add_flag("--reserve-only", reserve_only, "only reserve the state's rows for --tokens (no forward pass)");
  app.add_flag("--no-cp-overlap", no_overlap,
               "run every CP exchange in sequence with compute (ModelParallel::cp_overlap off; same logits)");
  int64_t pipeline_min_tokens = dsv4::ModelParallel{}.pipeline_min_tokens;
  app.add_option("--pipeline-min-tokens", pipeline_min_tokens,
                 "chunks of at least this many tokens run as two micro-batches (0: never; the model's default)");
  CLI11_PARSE(app, argc, argv);
  DSV4_CHECK_ARG(tokens > 0 && chunk > 0 && decode >= 0) << "--tokens and --chunk must be positive";

  auto bootstrap = dsv4::parallel::make_mpi_bootstrap();
  auto world = dsv4::parallel::make_communicator("mpi", *bootstrap);
  const int rank = world->rank(), P = world->size();
  auto tp = world->split(rank, 0);
  auto ep = world->split(rank, 0);
  auto cp = world->split(0, rank);
  // The pipeline's second micro-batch runs on its own groups (the same members).
  auto tp2 = world->split(rank, 0);
  auto ep2 = world->split(rank, 0);
  auto cp2 = world->split(0, rank);

  const dsv4::Checkpoint ckpt = dsv4::Checkpoint::open(checkpoint_dir);
  const dsv4::ModelConfig& cfg = ckpt.config();
  dsv4::TensorLookup lookup = [&ckpt](const std::string& name) -> std::optional<dsv4::TensorView> {
    if (!ckpt.has(name)) return std::nullopt;
    return ckpt.tensor(name);
  };
  dsv4::ModelParallel par;
  par.tp = tp.get();
  par.ep = ep.get();
  par.cp = cp.get();
  par.cp_overlap = !no_overlap;
  par.second = {tp2.get(), ep2.get(), cp2.get()};
  par.pipeline_min_tokens = pipeline_min_tokens;
  dsv4::Model model(cfg, dsv4::bind_weights(cfg, lookup), dsv4::kernels::make_cpu_backend(),
                    dsv4::parse_numerics(numerics_name), par);

  std::mt19937 rng(1234);
  std::vector<int32_t> ids(tokens + decode), decode_ids(static_cast<size_t>(decode));
  for (int32_t& t : decode_ids) t = static_cast<int32_t>(rng() % cfg.vocab_size);
  for (int32_t& t : ids) t = static_cast<int32_t>(rng() % cfg.vocab_size);

  dsv4::SequenceState st = model.new_sequence();
  if (reserve_only) {
    dsv4::reserve_sequence_rows(st, tokens);
    std::vector<int64_t> bytes(P);
    const int64_t mine = st.memory_bytes();
    world->all_gather(&mine, bytes.data(), 1, dsv4::DType::kI64, dsv4::parallel::kDefaultStream);
    if (rank == 0) {
      std::printf("cp %d, state reserved for %lld tokens\nrank  state MiB\n", P, static_cast<long long>(tokens));
      for (int p = 0; p < P; ++p) std::printf("%4d  %9.2f\n", p, bytes[p] / 1048576.0);
    }
    return 0;
  }
  if (rank == 0) {
    std::printf("cp %d, %lld tokens in chunks of %lld, %s numerics, %s; in-layer overlap %s, pipeline %s\n", P,
                static_cast<long long>(tokens), static_cast<long long>(chunk), numerics_name.c_str(),
                checkpoint_dir.c_str(), no_overlap ? "off" : "on",
                pipeline_min_tokens > 0 ? ("chunks >= " + std::to_string(pipeline_min_tokens)).c_str() : "off");
  }
  int32_t ready = 1;  // start the clock together
  world->all_reduce(&ready, &ready, 1, dsv4::DType::kI32, dsv4::parallel::ReduceOp::kSum,
                    dsv4::parallel::kDefaultStream);
  dsv4::parallel::reset_cp_exchange_stats();
  const auto t0 = Clock::now();
  int64_t next_report = report_every, block_start = 0;
  double block_t0 = 0.0;
  struct Block {
    int64_t end;
    double seconds;
    double decode_ms = 0.0;  // per token at this context (--decode-at-reports)
    double state_mib = 0.0;  // rank 0's sequence state at the end of the block
  };
  double decode_total_s = 0.0;  // decode time inside the prefill loop, not counted as prefill
  std::vector<Block> blocks;  // prefill time of each block of --report-every tokens (the last may be shorter)
  for (int64_t at = 0; at < tokens; at += chunk) {
    const int64_t n = std::min(chunk, tokens - at);
    dsv4::SequenceChunk c{&st, std::span<const int32_t>(ids.data() + at, n)};
    model.forward(std::span<const dsv4::SequenceChunk>(&c, 1), false, dsv4::LogitsRows::kLastOfEachChunk);
    if (at + n >= next_report || at + n == tokens) {
      const double now = seconds_since(t0) - decode_total_s;
      blocks.push_back({at + n, now - block_t0, 0.0, st.memory_bytes() / 1048576.0});
      if (rank == 0) {
        std::printf("  %8lld tokens  %8.1f s  block %lld tokens in %.2f s  state %.1f MiB\n",
                    static_cast<long long>(at + n), now, static_cast<long long>(at + n - block_start), now - block_t0,
                    st.memory_bytes() / 1048576.0);
        std::fflush(stdout);
      }
      block_t0 = now;
      block_start = at + n;
      if (decode_at_reports && decode > 0) {
        const auto td = Clock::now();
        for (int32_t id : decode_ids) model.decode(st, id);
        const double ds = seconds_since(td);
        decode_total_s += ds;
        blocks.back().decode_ms = 1e3 * ds / static_cast<double>(decode);
      }
      while (next_report <= at + n) next_report += report_every;
    }
  }
  const double prefill_s = seconds_since(t0) - decode_total_s;
  const dsv4::parallel::CpExchangeStats exchange = dsv4::parallel::cp_exchange_stats();
  const auto t1 = Clock::now();
  for (int64_t i = 0; i < decode; ++i) model.decode(st, ids[tokens + i]);
  const double decode_s = seconds_since(t1);

  RankFigures mine;
  mine.state_bytes = st.memory_bytes();
  for (const dsv4::LayerState& ls : st.layers) {
    mine.rows += ls.main.num_rows() + ls.index.num_rows();
    mine.row_bytes += (ls.main.num_rows() * ls.main.dim + ls.index.num_rows() * ls.index.dim) * 4;
  }
  mine.peak_rss = peak_rss_bytes();
  mine.exchange_us = static_cast<int64_t>(exchange.seconds * 1e6);
  mine.exchange_bytes = exchange.bytes;
  std::vector<RankFigures> all(P);
  world->all_gather(&mine, all.data(), kFigures, dsv4::DType::kI64, dsv4::parallel::kDefaultStream);
  if (rank == 0) {
    std::printf("prefill time per block (cp %d):\n   end token  block tokens  block s  tokens/s  state MiB%s\n", P,
                decode_at_reports ? "  decode ms/token" : "");
    int64_t prev = 0;
    for (const Block& b : blocks) {
      std::printf("  %10lld  %12lld  %7.2f  %8.1f  %9.2f", static_cast<long long>(b.end),
                  static_cast<long long>(b.end - prev), b.seconds, (b.end - prev) / b.seconds, b.state_mib);
      if (decode_at_reports) std::printf("  %15.2f", b.decode_ms);
      std::printf("\n");
      prev = b.end;
    }
    std::printf("prefill %.1f s (%.1f tokens/s, %lld forwards pipelined); decode %lld steps at %.1f ms/token\n",
                prefill_s, tokens / prefill_s, static_cast<long long>(exchange.pipelined_forwards),
                static_cast<long long>(decode), decode ? 1e3 * decode_s / decode : 0.0);
    std::printf("rank  state MiB  rows held  row MiB  peak RSS MiB  prefill exchange s (%% of prefill)  MiB in\n");
    for (int p = 0; p < P; ++p) {
      std::printf("%4d  %9.2f  %9lld  %7.2f  %12.1f  %10.2f (%4.1f%%)  %18.1f\n", p, all[p].state_bytes / 1048576.0,
                  static_cast<long long>(all[p].rows), all[p].row_bytes / 1048576.0, all[p].peak_rss / 1048576.0,
                  all[p].exchange_us * 1e-6, 100.0 * all[p].exchange_us * 1e-6 / prefill_s,
                  all[p].exchange_bytes / 1048576.0);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;  // MULTIPLE: the pipelined prefill calls MPI from two threads
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rc = 0;
  try {
    rc = run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cp_long_context_bench: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);  // a peer may be waiting in a collective
  }
  MPI_Finalize();
  return rc;
}
