// The two-micro-batch pipeline of a forward (issue 5: "the exchange for one chunk overlaps the compute of the
// next"; DeepSeek's two-micro-batch overlap).
//
// A forward with a chunk of at least ModelParallel::pipeline_min_tokens tokens is cut into two micro-batches:
// A holds the first half of every long chunk and every short chunk whole, B the second halves. B continues
// A's sequences, so the pair is exactly two consecutive chunks of each long sequence. Two threads run them
// through the whole model at once, each on its own communicators (A on ModelParallel's groups, B on
// ModelParallel::second, same members) and its own MoE dispatcher. The only dependency between them is the
// sequence state: B's attention of layer slot l reads the ring, compressor windows and rows that A's attention
// of slot l appends, so B acquires each slot from A (StateHandover) right before its attention's state
// section (on a split batch after its first row gather, which reads no state), and A releases it right after.
// Everything else (projections, wo, MoE, the head) of the two is independent, and A never waits for B. The schedule that results, per layer, once the pipeline fills:
//
//     A:  attn(l) state+exchanges | wo, MoE(l) + EP exchange | attn(l+1) ...
//     B:  projections(l) ........ | attn(l) state+exchanges  | wo, MoE(l) + EP exchange ...
//
// so while one micro-batch waits in a collective (CP row gathers, top-k and partials, TP sums, the MoE's EP
// dispatch and combine) the other computes. The CPU kernel pool runs one parallel job at a time, so the two
// threads' kernels take turns: the pipeline hides communication, it does not add compute.
//
// Why it is deadlock-free: each micro-batch issues the same collectives in the same order on every rank, on
// communicators the other never uses; B waits only for its own rank's A, and A waits for nothing of B.
// Failures: an error on A's thread fails the handover (B stops at its next acquire instead of waiting), and
// the forward rethrows A's error first, after joining B. A rank whose peers are stuck in a collective is
// ended by the job's fault handling, as on the single-batch path.
//
// Agreement: the ranks of a TP or CP group pass the same chunks and decide alike. When the EP group spans
// several DP replicas (ModelParallel::pipeline_agree_over_ep), which pass different batches, every forward
// all-gathers one flag over the EP group: if any replica pipelines, every member runs two micro-batches (an
// empty one where it has nothing to cut: it still joins B's MoE exchanges on the second EP group).
//
// Results: logits and hidden rows are those of A then B run as consecutive chunks: bitwise equal to the
// single-batch forward in deterministic mode (whose results do not depend on how a prompt is chunked), within
// float reassociation (1e-5 relative) otherwise.
#include <algorithm>
#include <exception>
#include <thread>
#include <vector>

#include "parallel/context_parallel.h"
#include "runtime/core/error.h"
#include "runtime/core/logging.h"
#include "runtime/model/layers.h"
#include "runtime/model/model.h"

namespace dsv4 {

using model_detail::Batch;
using model_detail::Segment;
using model_detail::StateHandover;

namespace model_detail {

void StateHandover::release(int64_t slot) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (slot <= released_) return;
    released_ = slot;
  }
  cv_.notify_all();
}

void StateHandover::fail() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    failed_ = true;
  }
  cv_.notify_all();
}

void StateHandover::acquire(int64_t slot) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return failed_ || released_ >= slot; });
  DSV4_CHECK_CODE(!failed_, ErrorCode::kInternal)
      << "pipelined forward: micro-batch A failed before releasing layer slot " << slot << " (see its error)";
}

}  // namespace model_detail

namespace {

// Where a whole-batch segment went: its rows [0, a_count) are A's segment a_index, the rest B's b_index.
struct SegmentSplit {
  int64_t a_index = -1, a_count = 0;
  int64_t b_index = -1;
};

void add_segment(Batch& mb, const Batch& whole, const Segment& seg, int64_t from, int64_t count) {
  mb.segments.push_back(Segment{seg.state, seg.start + from, count, mb.rows});
  for (int64_t i = from; i < from + count; ++i) {
    mb.positions.push_back(whole.positions[seg.row + i]);
    mb.tokens.push_back(whole.tokens[seg.row + i]);
  }
  mb.rows += count;
}

// Copies `count` rows of `width` floats of segment s from a micro-batch output into the whole batch's output.
void place_rows(const float* src, int64_t src_row, int64_t count, int64_t width, float* dst, int64_t dst_row) {
  if (count > 0 && width > 0) std::copy_n(src + src_row * width, count * width, dst + dst_row * width);
}

}  // namespace

void Model::prepare_pipeline() {
  // The switches come from each rank's environment (DSV4_PIPELINE_MIN_TOKENS, DSV4_CP_OVERLAP): ranks that
  // disagreed would wait in different collectives, so every group compares them once, here.
  const int64_t mine[2] = {parallel_.pipeline_min_tokens, parallel_.cp_overlap ? 1 : 0};
  for (parallel::Communicator* c : {parallel_.tp, parallel_.ep, parallel_.cp}) {
    if (c == nullptr || c->size() == 1) continue;
    std::vector<int64_t> all(2 * static_cast<size_t>(c->size()));
    c->all_gather(mine, all.data(), 2, DType::kI64, parallel::kDefaultStream);
    for (int q = 0; q < c->size(); ++q) {
      DSV4_CHECK_ARG(all[2 * q] == mine[0] && all[2 * q + 1] == mine[1])
          << "ranks of one model group disagree: pipeline_min_tokens " << mine[0] << " and cp_overlap " << mine[1]
          << " here, " << all[2 * q] << " and " << all[2 * q + 1] << " on rank " << q
          << " of the group (DSV4_PIPELINE_MIN_TOKENS / DSV4_CP_OVERLAP must be the same on every rank)";
    }
  }
  const ModelParallel::Groups& g = parallel_.second;
  const bool cp_ok = (parallel_.cp == nullptr) == (g.cp == nullptr);
  if (g.tp == nullptr || g.ep == nullptr || !cp_ok || parallel_.pipeline_min_tokens <= 0) return;
  DSV4_CHECK_ARG(parallel_.pipeline_min_tokens >= 2)
      << "pipeline_min_tokens " << parallel_.pipeline_min_tokens << ": a chunk of fewer than 2 tokens cannot be cut";
  DSV4_CHECK_ARG(g.tp->size() == parallel_.tp->size() && g.tp->rank() == parallel_.tp->rank() &&
                 g.ep->size() == parallel_.ep->size() && g.ep->rank() == parallel_.ep->rank() &&
                 (g.cp == nullptr || (g.cp->size() == parallel_.cp->size() && g.cp->rank() == parallel_.cp->rank())))
      << "pipeline: the second micro-batch's groups must have the members of the first (tp rank "
      << g.tp->rank() << " of " << g.tp->size() << " vs " << parallel_.tp->rank() << " of " << parallel_.tp->size()
      << ")";
  // With every group of one rank there is no exchange to hide: two micro-batches would only add a thread.
  const bool talks = parallel_.tp->size() > 1 || parallel_.ep->size() > 1 ||
                     (parallel_.cp != nullptr && parallel_.cp->size() > 1);
  if (!talks) return;
  // Two threads of this rank run collectives at once, one per communicator: every backend must allow it (MPI
  // only at MPI_THREAD_MULTIPLE). The answer is the same on every rank (one MPI library, one init call).
  for (const parallel::Communicator* c : {parallel_.tp, parallel_.ep, parallel_.cp, g.tp, g.ep, g.cp}) {
    if (c != nullptr && !c->concurrent_communicators()) {
      DSV4_LOG(WARN) << "the two-micro-batch pipeline is off: the '" << c->backend_name()
                     << "' communicator does not allow two threads to use two communicators at once (MPI needs "
                        "MPI_Init_thread with MPI_THREAD_MULTIPLE)";
      return;
    }
  }
  second_parallel_ = parallel_;
  second_parallel_.tp = g.tp;
  second_parallel_.ep = g.ep;
  second_parallel_.cp = g.cp;
  second_parallel_.second = {};
  second_dispatcher_ = std::make_unique<parallel::MoeDispatcher>(*g.ep, dispatcher_->config());
  pipeline_ready_ = true;
}

bool Model::decide_pipeline(const Batch& batch) const {
  if (!pipeline_ready_) return false;
  int64_t want = 0;
  for (const Segment& s : batch.segments) {
    if (s.count >= parallel_.pipeline_min_tokens) want = 1;
  }
  if (!parallel_.pipeline_agree_over_ep || parallel_.ep->size() == 1) return want != 0;
  std::vector<int64_t> all(static_cast<size_t>(parallel_.ep->size()));
  parallel_.ep->all_gather(&want, all.data(), 1, DType::kI64, parallel::kDefaultStream);
  return std::any_of(all.begin(), all.end(), [](int64_t w) { return w != 0; });
}

ForwardOutput Model::run_pipelined(const Batch& whole, bool want_hidden, LogitsRows logits_rows) {
  const ModelConfig& cfg = config_;
  const int64_t n = cfg.hc_mult, D = cfg.hidden_size, V = weights_.shard.vocab_rows();
  // Cut: long chunks in halves (A the first), short ones whole into A.
  Batch a, b;
  std::vector<SegmentSplit> where(whole.segments.size());
  for (size_t s = 0; s < whole.segments.size(); ++s) {
    const Segment& seg = whole.segments[s];
    const bool cut = seg.count >= parallel_.pipeline_min_tokens;
    SegmentSplit& w = where[s];
    w.a_count = cut ? seg.count / 2 : seg.count;
    w.a_index = static_cast<int64_t>(a.segments.size());
    add_segment(a, whole, seg, 0, w.a_count);
    if (cut) {
      w.b_index = static_cast<int64_t>(b.segments.size());
      add_segment(b, whole, seg, w.a_count, seg.count - w.a_count);
    }
  }
  if (whole.rows > 0) parallel::note_pipelined_forward();

  StateHandover handover;
  ForwardOutput out_a, out_b;
  std::exception_ptr error_a, error_b;
  std::thread second([&] {
    try {
      out_b = run_batch(second_parallel_, *second_dispatcher_, b, want_hidden, logits_rows, nullptr, &handover);
    } catch (...) {
      error_b = std::current_exception();
    }
  });
  try {
    out_a = run_batch(parallel_, *dispatcher_, a, want_hidden, logits_rows, &handover, nullptr);
  } catch (...) {
    error_a = std::current_exception();
    handover.fail();
  }
  second.join();
  if (error_a) std::rethrow_exception(error_a);
  if (error_b) std::rethrow_exception(error_b);

  // The whole batch's rows: per chunk A's rows, then B's.
  ForwardOutput out;
  out.vocab_begin = weights_.shard.vocab_begin;
  const int64_t nseg = static_cast<int64_t>(whole.segments.size());
  const bool all_rows = logits_rows == LogitsRows::kAll;
  out.logits = Tensor(DType::kF32, Shape{all_rows ? whole.rows : nseg, V});
  if (want_hidden) out.hidden = Tensor(DType::kF32, Shape{whole.rows, n, D});
  for (int64_t s = 0; s < nseg; ++s) {
    const Segment& seg = whole.segments[s];
    const SegmentSplit& w = where[s];
    const Segment& sa = a.segments[w.a_index];
    const int64_t b_count = seg.count - w.a_count, b_row = w.b_index >= 0 ? b.segments[w.b_index].row : 0;
    if (want_hidden) {
      place_rows(out_a.hidden.as<const float>(), sa.row, w.a_count, n * D, out.hidden.as<float>(), seg.row);
      if (b_count > 0) {
        place_rows(out_b.hidden.as<const float>(), b_row, b_count, n * D, out.hidden.as<float>(), seg.row + w.a_count);
      }
    }
    if (all_rows) {
      place_rows(out_a.logits.as<const float>(), sa.row, w.a_count, V, out.logits.as<float>(), seg.row);
      if (b_count > 0) {
        place_rows(out_b.logits.as<const float>(), b_row, b_count, V, out.logits.as<float>(), seg.row + w.a_count);
      }
    } else if (w.b_index >= 0) {
      place_rows(out_b.logits.as<const float>(), w.b_index, 1, V, out.logits.as<float>(), s);
    } else {
      place_rows(out_a.logits.as<const float>(), w.a_index, 1, V, out.logits.as<float>(), s);
    }
  }
  return out;
}

}  // namespace dsv4
