// Engine::step: this replica's batched forward, then the per-shard sampling candidates merged on rank 0.
#include "runtime/engine/engine.h"

#include <algorithm>
#include <cstring>

#include "runtime/core/error.h"

namespace dsv4 {
namespace {

// Wire form of one shard's candidates for one item: n (i32), 4 bytes of padding, raw and scaled log-sum-exp
// (f64 each), then n pairs (id i32, logit f32). A rank sends the records of its pending items in plan order.
constexpr size_t kRecordHeader = 24;

void pack(const ShardCandidates& c, std::vector<uint8_t>& out) {
  const size_t at = out.size();
  out.resize(at + kRecordHeader + c.top.size() * 8);
  uint8_t* p = out.data() + at;
  const int32_t n = static_cast<int32_t>(c.top.size()), pad = 0;
  std::memcpy(p, &n, 4);
  std::memcpy(p + 4, &pad, 4);
  std::memcpy(p + 8, &c.raw_logsumexp, 8);
  std::memcpy(p + 16, &c.scaled_logsumexp, 8);
  p += kRecordHeader;
  for (const TokenCandidate& t : c.top) {
    std::memcpy(p, &t.id, 4);
    std::memcpy(p + 4, &t.logit, 4);
    p += 8;
  }
}

ShardCandidates unpack(const uint8_t*& p, const uint8_t* end, int from_rank) {
  DSV4_CHECK(end - p >= static_cast<ptrdiff_t>(kRecordHeader)) << "candidates from rank " << from_rank << " are truncated";
  ShardCandidates c;
  int32_t n = 0;
  std::memcpy(&n, p, 4);
  std::memcpy(&c.raw_logsumexp, p + 8, 8);
  std::memcpy(&c.scaled_logsumexp, p + 16, 8);
  p += kRecordHeader;
  DSV4_CHECK(n >= 0 && end - p >= static_cast<ptrdiff_t>(n) * 8)
      << "candidates from rank " << from_rank << " are truncated (" << n << " announced)";
  c.top.resize(static_cast<size_t>(n));
  for (TokenCandidate& t : c.top) {
    std::memcpy(&t.id, p, 4);
    std::memcpy(&t.logit, p + 4, 4);
    p += 8;
  }
  return c;
}

// Whether widening could ever be needed for these parameters (every rank decides this alike from the plan,
// so the extra broadcast of the wider counts happens on all ranks or on none).
bool may_widen(const SamplingParams& p, int32_t count) {
  return p.temperature > 0.0f && !(p.top_k > 0 && p.top_k <= count);
}

}  // namespace

SamplingParams sampling_params_of(const v1::SamplingPlan& plan) {
  SamplingParams p;
  p.temperature = plan.temperature();
  p.top_k = plan.top_k();
  p.top_p = plan.top_p();
  p.min_p = plan.min_p();
  p.seed = plan.seed();
  p.top_logprobs = plan.top_logprobs();
  return p;
}

v1::SamplingPlan sampling_plan_of(uint64_t sequence_id, const SamplingParams& params) {
  v1::SamplingPlan s;
  s.set_sequence_id(sequence_id);
  s.set_temperature(params.temperature);
  s.set_top_k(params.top_k);
  s.set_top_p(params.top_p);
  s.set_min_p(params.min_p);
  s.set_seed(params.seed);
  s.set_top_logprobs(params.top_logprobs);
  return s;
}

Engine::Engine(Model& model) : model_(&model), replica_ranks_{0} {
  DSV4_CHECK(model.shard().is_whole()) << "a single-process engine needs the whole model";
}

Engine::Engine(Model& model, parallel::Communicator& world, const parallel::Mesh& mesh)
    : model_(&model), world_(&world) {
  DSV4_CHECK(mesh.world_size() == world.size())
      << "engine: the layout " << mesh.str() << " does not match the job's " << world.size() << " ranks";
  const parallel::MeshCoord me = mesh.coord(world.rank());
  dp_rank_ = me.dp_rank;
  dp_size_ = mesh.config().dp;
  tp_size_ = mesh.config().tp;
  cp_rank_ = me.cp_rank;
  cp_size_ = mesh.config().cp;
  DSV4_CHECK(model.shard().tp_size == tp_size_ && model.shard().tp_rank == me.tp_rank)
      << "engine: the model's shard (tp rank " << model.shard().tp_rank << " of " << model.shard().tp_size
      << ") is not rank " << world.rank() << "'s under " << mesh.str();
  // The CP ranks of a replica end with the same logits, so CP rank 0's TP ranks report the candidates.
  for (int d = 0; d < dp_size_; ++d) {
    for (int t = 0; t < tp_size_; ++t) replica_ranks_.push_back(mesh.rank_of(d, 0, t));
  }
  DSV4_CHECK(replica_ranks_[0] == 0) << "engine: rank 0 must be tp rank 0 of replica 0";
}

int64_t Engine::state_bytes() const {
  int64_t total = 0;
  for (const auto& [id, state] : states_) total += state.memory_bytes();
  return total;
}

std::vector<SampledCandidates> Engine::step(const v1::StepPlan& plan, const CandidateCheck& check) {
  for (uint64_t id : plan.free_sequences()) states_.erase(id);
  if (plan.work().empty()) return {};
  std::unordered_map<uint64_t, const v1::SamplingPlan*> sampling;
  for (const v1::SamplingPlan& s : plan.sampling()) sampling[s.sequence_id()] = &s;
  std::vector<SequenceChunk> chunks;
  std::vector<SampleItem> items;
  for (const v1::SequenceWork& w : plan.work()) {
    DSV4_CHECK(!w.token_ids().empty()) << "step " << plan.step_id() << ": sequence " << w.sequence_id()
                                       << " has an empty work item";
    DSV4_CHECK(w.dp_rank() >= 0 && w.dp_rank() < dp_size_)
        << "step " << plan.step_id() << ": sequence " << w.sequence_id() << " is assigned to replica "
        << w.dp_rank() << " of " << dp_size_;
    const bool mine = w.dp_rank() == dp_rank_;
    if (w.sample()) {
      auto s = sampling.find(w.sequence_id());
      DSV4_CHECK(s != sampling.end()) << "step " << plan.step_id() << ": sequence " << w.sequence_id()
                                      << " is sampled but the plan has no SamplingPlan for it";
      items.push_back({w.sequence_id(), w.dp_rank(), mine ? static_cast<int>(chunks.size()) : -1,
                       sampling_params_of(*s->second)});
    }
    if (!mine) continue;
    auto it = states_.find(w.sequence_id());
    if (w.start_position() == 0) {
      DSV4_CHECK(it == states_.end()) << "step " << plan.step_id() << ": sequence " << w.sequence_id()
                                      << " starts at position 0 but already exists";
      it = states_.emplace(w.sequence_id(), model_->new_sequence(state_pool_)).first;
    }
    DSV4_CHECK(it != states_.end()) << "step " << plan.step_id() << ": unknown sequence " << w.sequence_id();
    DSV4_CHECK(it->second.length == w.start_position())
        << "step " << plan.step_id() << ": sequence " << w.sequence_id() << " is at position " << it->second.length
        << " but the plan continues at " << w.start_position();
    chunks.push_back({&it->second, std::span<const int32_t>(w.token_ids().data(), w.token_ids().size())});
  }
  // Every rank calls forward once per non-empty plan, with zero chunks when its replica has no work: the
  // MoE exchange spans replicas. Only the last row of each chunk is ever sampled.
  ForwardOutput out = model_->forward(chunks, /*want_hidden=*/false, LogitsRows::kLastOfEachChunk);
  if (items.empty()) return {};
  return gather_candidates(items, out, check);
}

std::vector<SampledCandidates> Engine::gather_candidates(const std::vector<SampleItem>& items,
                                                         const ForwardOutput& out, const CandidateCheck& check) {
  const size_t n = items.size();
  const int rank = world_ != nullptr ? world_->rank() : 0;
  const bool multi = world_ != nullptr && world_->size() > 1;
  const int64_t vocab = model_->config().vocab_size;
  const int64_t rows = model_->shard().vocab_rows();
  const float* logits = static_cast<const float*>(out.logits.data());
  std::vector<int32_t> count(n);
  bool widen = false;
  for (size_t i = 0; i < n; ++i) {
    count[i] = shard_candidate_count(items[i].params);
    widen = widen || may_widen(items[i].params, count[i]);
  }
  std::vector<SampledCandidates> result(rank == 0 ? n : 0);
  std::vector<char> pending(n, 1);
  std::vector<ShardCandidates> local(n);  // rank 0's own shards
  while (true) {
    // This rank's shard of every pending item of its replica, the rows reduced in parallel (the same candidates
    // as one by one), then sent in plan order.
    std::vector<size_t> own;
    std::vector<CandidateRow> reduce;
    for (size_t i = 0; i < n; ++i) {
      if (!pending[i] || items[i].dp_rank != dp_rank_ || cp_rank_ != 0) continue;
      DSV4_CHECK(items[i].row >= 0 && items[i].row < out.logits.shape()[0] && out.logits.shape()[1] == rows)
          << "engine: logits [" << out.logits.shape()[0] << ", " << out.logits.shape()[1] << "] have no row "
          << items[i].row << " of " << rows << " vocabulary entries";
      own.push_back(i);
      reduce.push_back({std::span<const float>(logits + items[i].row * rows, static_cast<size_t>(rows)),
                        static_cast<int32_t>(out.vocab_begin), items[i].params.temperature, count[i],
                        normalisers_for(items[i].params)});
    }
    const bool sends = !own.empty();
    std::vector<ShardCandidates> reduced = shard_candidates_rows(reduce);
    std::vector<uint8_t> wire;
    for (size_t k = 0; k < own.size(); ++k) {
      if (rank == 0) {
        local[own[k]] = std::move(reduced[k]);
      } else {
        pack(reduced[k], wire);
      }
    }
    if (rank != 0 && sends) {
      const int64_t size = static_cast<int64_t>(wire.size());
      world_->send(&size, 1, DType::kI64, 0, parallel::kDefaultStream);
      world_->send(wire.data(), wire.size(), DType::kU8, 0, parallel::kDefaultStream);
    }
    std::vector<int32_t> next(n, 0);
    if (rank == 0) {
      std::vector<std::vector<ShardCandidates>> shards(n);
      for (int d = 0; d < dp_size_; ++d) {
        std::vector<size_t> mine;
        for (size_t i = 0; i < n; ++i) {
          if (pending[i] && items[i].dp_rank == d) mine.push_back(i);
        }
        if (mine.empty()) continue;
        for (int t = 0; t < tp_size_; ++t) {
          const int from = replica_ranks_[static_cast<size_t>(d * tp_size_ + t)];
          if (from == 0) {
            for (size_t i : mine) shards[i].push_back(std::move(local[i]));
            continue;
          }
          int64_t size = 0;
          world_->recv(&size, 1, DType::kI64, from, parallel::kDefaultStream);
          DSV4_CHECK(size >= 0) << "engine: rank " << from << " announced " << size << " bytes of candidates";
          std::vector<uint8_t> bytes(static_cast<size_t>(size));
          world_->recv(bytes.data(), bytes.size(), DType::kU8, from, parallel::kDefaultStream);
          const uint8_t* p = bytes.data();
          for (size_t i : mine) shards[i].push_back(unpack(p, bytes.data() + bytes.size(), from));
          DSV4_CHECK(p == bytes.data() + bytes.size()) << "engine: rank " << from << " sent extra candidate bytes";
        }
      }
      for (size_t i = 0; i < n; ++i) {
        if (!pending[i]) continue;
        const SamplingParams& params = items[i].params;
        // Every shard reported all it has: fewer than asked, or asked for at least its (ceil-sized) rows.
        bool all_in = count[i] >= (vocab + tp_size_ - 1) / tp_size_;
        if (!all_in) {
          all_in = true;
          for (const ShardCandidates& s : shards[i]) all_in = all_in && s.top.size() < static_cast<size_t>(count[i]);
        }
        result[i] = {items[i].sequence_id, merge_shard_candidates(shards[i], params.temperature)};
        DSV4_CHECK(!result[i].candidates.top.empty()) << "engine: sequence " << items[i].sequence_id
                                                      << " has no sampling candidate (every logit is -inf)";
        const bool suffice = check ? check(items[i].sequence_id, result[i].candidates, count[i], all_in)
                                   : candidates_suffice(result[i].candidates, params, count[i], all_in);
        if (widen && !suffice) {
          next[i] = static_cast<int32_t>(std::min<int64_t>(static_cast<int64_t>(count[i]) * 8, vocab));
        }
      }
    }
    if (!widen) break;
    if (multi) world_->broadcast(next.data(), n, DType::kI32, 0, parallel::kDefaultStream);
    bool any = false;
    for (size_t i = 0; i < n; ++i) {
      pending[i] = next[i] > 0;
      if (pending[i]) count[i] = next[i];
      any = any || pending[i];
    }
    if (!any) break;
  }
  return result;
}

}  // namespace dsv4
