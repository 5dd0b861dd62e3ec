#include "runtime/serve/scheduler.h"

#include <algorithm>

#include "runtime/core/error.h"

namespace dsv4::serve {

Scheduler::Scheduler(SchedulerLimits limits, StateCostFn cost) : limits_(limits), cost_(std::move(cost)) {
  DSV4_CHECK_ARG(limits_.state_budget_bytes > 0) << "scheduler: state budget must be > 0 bytes";
  DSV4_CHECK_ARG(limits_.max_running > 0) << "scheduler: max running sequences must be > 0";
  DSV4_CHECK_ARG(limits_.max_step_tokens >= limits_.max_running)
      << "scheduler: the step token budget (" << limits_.max_step_tokens
      << ") must be at least max running sequences (" << limits_.max_running << ") so that all can decode";
  DSV4_CHECK_ARG(limits_.max_prefill_chunk >= 0) << "scheduler: max prefill chunk must be >= 0";
  DSV4_CHECK_ARG(limits_.dp_size > 0) << "scheduler: dp_size must be > 0, got " << limits_.dp_size;
  DSV4_CHECK(cost_ != nullptr) << "scheduler: no state cost function";
  replica_reserved_.assign(static_cast<size_t>(limits_.dp_size), 0);
  replica_tokens_.assign(static_cast<size_t>(limits_.dp_size), 0);
}

void Scheduler::release(const Sequence& seq) {
  reserved_bytes_ -= seq.reserved;
  replica_reserved_[static_cast<size_t>(seq.dp_rank)] -= seq.reserved;
  replica_tokens_[static_cast<size_t>(seq.dp_rank)] -= seq.tokens;
}

int32_t Scheduler::replica_of(uint64_t id) const {
  for (const Sequence& s : running_) {
    if (s.id == id) return s.dp_rank;
  }
  return -1;
}

int32_t Scheduler::pick_replica(const Sequence& seq) const {
  int32_t best = -1;
  for (int32_t d = 0; d < limits_.dp_size; ++d) {
    if (replica_reserved_[static_cast<size_t>(d)] + seq.reserved > limits_.state_budget_bytes) continue;
    if (best < 0 || replica_tokens_[static_cast<size_t>(d)] < replica_tokens_[static_cast<size_t>(best)]) best = d;
  }
  return best;
}

void Scheduler::add_sampling(v1::StepPlan& plan, const Sequence& seq) const {
  v1::SamplingPlan* s = plan.add_sampling();
  *s = seq.sampling;
  s->set_sequence_id(seq.id);
  s->set_step(static_cast<uint64_t>(seq.sampled));
}

int64_t Scheduler::reservation(int64_t prompt_tokens, int64_t max_new_tokens) const {
  // The last sampled token is never fed to the model, so the state holds at most prompt + max_new - 1 tokens.
  return cost_(prompt_tokens + max_new_tokens - 1);
}

void Scheduler::enqueue(uint64_t id, std::vector<int32_t> prompt, int64_t max_new_tokens, v1::SamplingPlan sampling) {
  DSV4_CHECK_ARG(!prompt.empty()) << "scheduler: request " << id << " has an empty prompt";
  DSV4_CHECK_ARG(max_new_tokens > 0) << "scheduler: request " << id << " asks for " << max_new_tokens << " tokens";
  auto same = [id](const Sequence& s) { return s.id == id; };
  DSV4_CHECK(std::none_of(queue_.begin(), queue_.end(), same) && std::none_of(running_.begin(), running_.end(), same))
      << "scheduler: duplicate sequence id " << id;
  Sequence seq;
  seq.id = id;
  seq.max_new_tokens = max_new_tokens;
  seq.reserved = reservation(static_cast<int64_t>(prompt.size()), max_new_tokens);
  DSV4_CHECK_CODE(seq.reserved <= limits_.state_budget_bytes, ErrorCode::kResourceExhausted)
      << "a request of " << prompt.size() << " prompt tokens and " << max_new_tokens << " new tokens needs "
      << seq.reserved << " bytes of sequence state; the whole state budget is " << limits_.state_budget_bytes;
  seq.tokens = static_cast<int64_t>(prompt.size()) + max_new_tokens;
  seq.sampling = std::move(sampling);
  seq.sampling.set_sequence_id(id);
  seq.prompt = std::move(prompt);
  queue_.push_back(std::move(seq));
}

void Scheduler::add_chunk(v1::StepPlan& plan, Sequence& seq, int64_t& budget) {
  const int64_t prompt_len = static_cast<int64_t>(seq.prompt.size());
  int64_t n = std::min(prompt_len - seq.fed, budget);
  if (limits_.max_prefill_chunk > 0) n = std::min(n, limits_.max_prefill_chunk);
  if (n <= 0) return;
  v1::SequenceWork* w = plan.add_work();
  w->set_sequence_id(seq.id);
  w->set_start_position(seq.fed);
  w->mutable_token_ids()->Add(seq.prompt.begin() + seq.fed, seq.prompt.begin() + seq.fed + n);
  w->set_cp_group(-1);
  w->set_dp_rank(seq.dp_rank);
  seq.fed += n;
  budget -= n;
  if (seq.fed == prompt_len) {
    w->set_sample(true);
    seq.awaiting_sample = true;
    add_sampling(plan, seq);
  }
}

v1::StepPlan Scheduler::next_plan() {
  v1::StepPlan plan;
  plan.set_step_id(step_id_++);
  for (uint64_t id : pending_free_) plan.add_free_sequences(id);
  pending_free_.clear();
  int64_t budget = limits_.max_step_tokens;
  // 1. Decode.
  for (Sequence& seq : running_) {
    DSV4_CHECK(!seq.awaiting_sample) << "scheduler: sequence " << seq.id << " still waits for its sampled token";
    if (!seq.has_next) continue;
    v1::SequenceWork* w = plan.add_work();
    w->set_sequence_id(seq.id);
    w->set_start_position(seq.fed);
    w->add_token_ids(seq.next_token);
    w->set_sample(true);
    w->set_cp_group(-1);
    w->set_dp_rank(seq.dp_rank);
    add_sampling(plan, seq);
    seq.fed += 1;
    seq.has_next = false;
    seq.awaiting_sample = true;
    budget -= 1;
  }
  // 2. Prefill chunks of running sequences.
  for (Sequence& seq : running_) {
    if (budget <= 0) break;
    if (seq.fed < static_cast<int64_t>(seq.prompt.size())) add_chunk(plan, seq, budget);
  }
  // 3. Admission, strictly FIFO, each to the least loaded replica with room.
  while (!queue_.empty() && budget > 0 && static_cast<int32_t>(running_.size()) < limits_.max_running) {
    const int32_t replica = pick_replica(queue_.front());
    if (replica < 0) break;
    running_.push_back(std::move(queue_.front()));
    queue_.pop_front();
    Sequence& seq = running_.back();
    seq.dp_rank = replica;
    reserved_bytes_ += seq.reserved;
    replica_reserved_[static_cast<size_t>(replica)] += seq.reserved;
    replica_tokens_[static_cast<size_t>(replica)] += seq.tokens;
    add_chunk(plan, seq, budget);
  }
  return plan;
}

void Scheduler::on_sampled(uint64_t id, int32_t token, bool finished) {
  auto it = std::find_if(running_.begin(), running_.end(), [id](const Sequence& s) { return s.id == id; });
  DSV4_CHECK(it != running_.end() && it->awaiting_sample) << "scheduler: unexpected sample for sequence " << id;
  it->awaiting_sample = false;
  it->sampled += 1;
  if (finished) {
    release(*it);
    pending_free_.push_back(id);
    running_.erase(it);
    return;
  }
  DSV4_CHECK(it->fed < static_cast<int64_t>(it->prompt.size()) + it->max_new_tokens - 1)
      << "scheduler: sequence " << id << " went past its max_new_tokens without finishing";
  it->has_next = true;
  it->next_token = token;
}

bool Scheduler::cancel(uint64_t id) {
  auto q = std::find_if(queue_.begin(), queue_.end(), [id](const Sequence& s) { return s.id == id; });
  if (q != queue_.end()) {
    queue_.erase(q);
    return true;
  }
  auto it = std::find_if(running_.begin(), running_.end(), [id](const Sequence& s) { return s.id == id; });
  if (it == running_.end()) return false;
  release(*it);
  if (it->fed > 0) pending_free_.push_back(id);
  running_.erase(it);
  return true;
}

}  // namespace dsv4::serve
