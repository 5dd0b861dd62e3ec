// The sharded model against the single-process one, for any communicator backend: shared by the in-process
// unit test (tests/unit/model/model_parallel_inproc_test.cc) and the MPI test (tests/mp/model_layouts_mpi.cc).
//
// A workload is two sequences, A and B: a prompt each, then a few decode steps. The single-process Model
// runs them one by one (the reference). A sharded run makes the layout's groups from the world communicator,
// loads this rank's shard (load_shard) and replays the workload as a DP deployment would: with dp = 1 the
// one replica batches A and B together; with dp = 2 replica 0 serves A and replica 1 serves B, and replica 1
// idles at the first decode step (forward with no chunks) while replica 0 works. Each forward's logits are
// gathered to full rows (gather_full_logits) and kept per sequence, together with the MTP draft logits of
// each prompt, so one comparison covers prefill, decode, MTP and every rank.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/context_parallel.h"
#include "parallel/mesh.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/model/model.h"
#include "runtime/model/shard_load.h"

namespace dsv4::testing {

struct Layout {
  int tp = 1, ep = 1, dp = 1;
  int world() const { return tp * dp; }
  std::string str() const {
    return "tp" + std::to_string(tp) + " ep" + std::to_string(ep) + " dp" + std::to_string(dp);
  }
  parallel::MeshConfig mesh_config() const {
    parallel::MeshConfig m;
    m.world_size = world();
    m.tp = tp;
    m.ep = ep;
    m.dp = dp;
    return m;
  }
};

/// The layouts of tp in {1, 2} x ep in {1, 2, 4} x dp in {1, 2} on `world` ranks that `config` accepts
/// (Mesh constraints and a vocabulary row for every TP rank); `refused` gets the others' reasons.
inline std::vector<Layout> layouts_for(const ModelConfig& config, int world, std::vector<std::string>* refused) {
  std::vector<Layout> out;
  for (int tp : {1, 2})
    for (int dp : {1, 2})
      for (int ep : {1, 2, 4}) {
        Layout l{tp, ep, dp};
        if (l.world() != world || world % ep != 0) continue;
        const auto why = parallel::Mesh::violations(l.mesh_config(), mesh_dims(config));
        if (why.empty()) {
          out.push_back(l);
        } else if (refused) {
          refused->push_back(l.str() + ": " + why.front());
        }
      }
  return out;
}

struct Workload {
  std::vector<int32_t> a, b;           // the two sequences' tokens
  int64_t prompt_a = 0, prompt_b = 0;  // prompt lengths; the remaining tokens are decoded one at a time
};

inline Workload random_workload(int64_t vocab, int64_t len_a, int64_t prompt_a, int64_t len_b, int64_t prompt_b,
                                uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(vocab - 1));
  Workload w;
  for (int64_t i = 0; i < len_a; ++i) w.a.push_back(tok(rng));
  for (int64_t i = 0; i < len_b; ++i) w.b.push_back(tok(rng));
  w.prompt_a = prompt_a;
  w.prompt_b = prompt_b;
  return w;
}

/// Full-vocabulary logits of one sequence: one row per position (prompt rows, then decode rows), and the
/// MTP draft rows of its prompt (positions 0 .. prompt-2, predicting from the prompt's next tokens).
struct SeqTrace {
  std::vector<float> logits;
  std::vector<float> mtp;
};

struct Trace {
  SeqTrace a, b;
  bool has_a = false, has_b = false;
};

inline void append_rows(std::vector<float>& dst, const Tensor& t) {
  dst.insert(dst.end(), t.as<const float>(), t.as<const float>() + t.numel());
}

/// The hidden rows [row, row + count) of a forward's hidden output.
inline Tensor hidden_rows(const Tensor& hidden, int64_t row, int64_t count) {
  const int64_t per = hidden.shape()[1] * hidden.shape()[2];
  Tensor h(DType::kF32, Shape{count, hidden.shape()[1], hidden.shape()[2]});
  std::copy_n(hidden.as<const float>() + row * per, count * per, h.as<float>());
  return h;
}

/// The reference: the single-process model on each sequence alone.
inline Trace reference_trace(Model& model, const Workload& w) {
  Trace t;
  auto run = [&](const std::vector<int32_t>& tokens, int64_t prompt, SeqTrace& out) {
    SequenceState st = model.new_sequence();
    SequenceChunk chunk{&st, std::span<const int32_t>(tokens.data(), prompt)};
    ForwardOutput o = model.forward(std::span<const SequenceChunk>(&chunk, 1), model.has_mtp());
    append_rows(out.logits, o.logits);
    for (size_t i = prompt; i < tokens.size(); ++i) append_rows(out.logits, model.decode(st, tokens[i]));
    if (model.has_mtp()) {
      append_rows(out.mtp, model.mtp_draft(st, hidden_rows(o.hidden, 0, prompt - 1),
                                           std::span<const int32_t>(tokens.data() + 1, prompt - 1)));
    }
  };
  run(w.a, w.prompt_a, t.a);
  run(w.b, w.prompt_b, t.b);
  t.has_a = t.has_b = true;
  return t;
}

/// What the sharded runs pipeline (ModelParallel::pipeline_min_tokens).
inline constexpr int64_t kLayoutsPipelineMinTokens = 20;

/// One rank's part of a sharded run of `w` under `layout` over `world` (a communicator of layout.world()
/// ranks): returns the full logits of the sequences this rank's replica serves.
inline Trace sharded_trace(parallel::Communicator& world, const Checkpoint& ckpt, const Layout& layout,
                           Numerics numerics, bool deterministic, const Workload& w) {
  const ModelConfig& cfg = ckpt.config();
  const parallel::Mesh mesh = parallel::Mesh::create(layout.mesh_config(), mesh_dims(cfg));
  ModelGroups groups = make_model_groups(world, mesh);
  const ModelShard shard = model_shard_for_rank(cfg, mesh, world.rank());
  ShardLoadReport report;
  // Prompts of 20 tokens or more go through the two-micro-batch pipeline: A's prompt (24) and, with dp = 1, the
  // batch of both prompts (A's cut, B's 17 whole in the first micro-batch). With dp = 2 only replica 0
  // pipelines: where the EP group spans both replicas, replica 1 joins with an empty second micro-batch.
  ModelParallel par = groups.parallel(deterministic);
  par.pipeline_min_tokens = kLayoutsPipelineMinTokens;
  Model model = Model::from_checkpoint_sharded(ckpt, numerics, par, shard, &report);
  EXPECT_EQ(report.bytes_read, report.bytes_planned) << layout.str() << " rank " << world.rank();
  // Every tensor these checkpoints store is kept in its stored dtype, so what the model holds is what it read.
  EXPECT_EQ(model.weight_bytes(), report.bytes_read) << layout.str() << " rank " << world.rank();

  const int replica = mesh.coord(world.rank()).dp_rank;
  const bool serve_a = layout.dp == 1 || replica == 0, serve_b = layout.dp == 1 || replica == 1;
  Trace t;
  t.has_a = serve_a;
  t.has_b = serve_b;
  SequenceState sa = model.new_sequence(), sb = model.new_sequence();
  const int64_t dec_a = static_cast<int64_t>(w.a.size()) - w.prompt_a;
  const int64_t dec_b = static_cast<int64_t>(w.b.size()) - w.prompt_b;
  // With two replicas, B's replica idles at step 1; every rank takes the same number of steps.
  const int64_t b_delay = layout.dp == 2 ? 1 : 0;
  const int64_t steps = 1 + std::max(dec_a, dec_b + b_delay);
  const int64_t D = cfg.hidden_size, n = cfg.hc_mult;
  for (int64_t s = 0; s < steps; ++s) {
    std::vector<SequenceChunk> chunks;
    std::vector<SeqTrace*> owners;
    std::vector<int64_t> counts;
    auto add = [&](SequenceState& st, const std::vector<int32_t>& tokens, int64_t prompt, int64_t decoded,
                   SeqTrace& out) {
      if (s == 0) {
        chunks.push_back({&st, std::span<const int32_t>(tokens.data(), prompt)});
        counts.push_back(prompt);
      } else {
        const int64_t i = prompt + decoded;
        if (i >= static_cast<int64_t>(tokens.size())) return;
        chunks.push_back({&st, std::span<const int32_t>(tokens.data() + i, 1)});
        counts.push_back(1);
      }
      owners.push_back(&out);
    };
    if (serve_a) add(sa, w.a, w.prompt_a, s - 1, t.a);
    if (serve_b && (s == 0 || s - 1 - b_delay >= 0)) add(sb, w.b, w.prompt_b, s - 1 - b_delay, t.b);
    const bool want_hidden = s == 0 && model.has_mtp();
    const int64_t pipelined_before = parallel::cp_exchange_stats().pipelined_forwards;
    ForwardOutput o = model.forward(chunks, want_hidden);
    if (s == 0) {
      // The prompt step pipelines where a group has more than one rank and this replica's batch holds A's 24-token
      // prompt, or an EP group spanning both replicas makes replica 1 (B's 17 tokens) join replica 0's pipeline.
      const bool talks = layout.tp > 1 || layout.ep > 1;
      const bool expected = talks && (serve_a || layout.ep > layout.tp);
      const int64_t pipelined = parallel::cp_exchange_stats().pipelined_forwards - pipelined_before;
      if (expected) {
        EXPECT_GE(pipelined, 1) << layout.str() << " rank " << world.rank() << ": the prompt step was not pipelined";
      } else if (world.backend_name() != "inproc") {  // in-process rank-threads share the counter
        EXPECT_EQ(pipelined, 0) << layout.str() << " rank " << world.rank() << ": pipelined without a long chunk";
      }
    }
    const Tensor full = gather_full_logits(model, o.logits, o.vocab_begin);
    EXPECT_EQ(full.shape()[1], cfg.vocab_size);
    int64_t row = 0;
    for (size_t c = 0; c < chunks.size(); ++c) {
      const float* p = full.as<const float>() + row * cfg.vocab_size;
      owners[c]->logits.insert(owners[c]->logits.end(), p, p + counts[c] * cfg.vocab_size);
      row += counts[c];
    }
    if (!want_hidden) continue;
    // MTP drafts of the prompts, one call per sequence; both replicas make the same number of calls (a
    // replica serving one sequence makes an idle call instead of the other's).
    const int64_t a_rows = serve_a ? w.prompt_a : 0;
    for (int which = 0; which < 2; ++which) {
      const bool mine = which == 0 ? serve_a : serve_b;
      const std::vector<int32_t>& tokens = which == 0 ? w.a : w.b;
      const int64_t prompt = which == 0 ? w.prompt_a : w.prompt_b;
      SequenceState& st = which == 0 ? sa : sb;
      if (!mine) {
        model.mtp_draft(st, Tensor(DType::kF32, Shape{0, n, D}), {});
        continue;
      }
      const int64_t first_row = which == 0 ? 0 : a_rows;
      Tensor draft = model.mtp_draft(st, hidden_rows(o.hidden, first_row, prompt - 1),
                                     std::span<const int32_t>(tokens.data() + 1, prompt - 1));
      const Tensor full_draft = gather_full_logits(model, draft, model.shard().vocab_begin);
      append_rows(which == 0 ? t.a.mtp : t.b.mtp, full_draft);
    }
  }
  return t;
}

/// Largest |got - ref| over largest |ref|.
inline double max_rel_diff(const std::vector<float>& got, const std::vector<float>& ref) {
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < ref.size() && i < got.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(got[i] - ref[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(ref[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

/// Bitwise equal in deterministic mode, within 1e-5 relative otherwise.
inline void expect_trace_matches(const Trace& got, const Trace& ref, bool deterministic, const std::string& what) {
  auto one = [&](const SeqTrace& g, const SeqTrace& r, const std::string& name) {
    for (int part = 0; part < 2; ++part) {
      const std::vector<float>& gv = part == 0 ? g.logits : g.mtp;
      const std::vector<float>& rv = part == 0 ? r.logits : r.mtp;
      const std::string label = what + " " + name + (part == 0 ? " logits" : " mtp");
      ASSERT_EQ(gv.size(), rv.size()) << label;
      if (deterministic) {
        EXPECT_TRUE(std::memcmp(gv.data(), rv.data(), gv.size() * sizeof(float)) == 0)
            << label << ": not bitwise equal (max rel diff " << max_rel_diff(gv, rv) << ")";
      } else {
        EXPECT_LE(max_rel_diff(gv, rv), 1e-5) << label;
      }
    }
  };
  if (got.has_a) one(got.a, ref.a, "A");
  if (got.has_b) one(got.b, ref.b, "B");
}

}  // namespace dsv4::testing
