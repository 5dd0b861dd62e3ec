// Engine::step: one batched forward over the plan's sequences.
#include "runtime/engine/engine.h"

#include "runtime/core/error.h"

namespace dsv4 {

int64_t Engine::state_bytes() const {
  int64_t total = 0;
  for (const auto& [id, state] : states_) total += state.memory_bytes();
  return total;
}

std::vector<SampledLogits> Engine::step(const v1::StepPlan& plan) {
  for (uint64_t id : plan.free_sequences()) states_.erase(id);
  if (plan.work().empty()) return {};
  const int64_t vocab = model_->config().vocab_size;
  std::vector<SequenceChunk> chunks;
  chunks.reserve(static_cast<size_t>(plan.work_size()));
  for (const v1::SequenceWork& w : plan.work()) {
    DSV4_CHECK(!w.token_ids().empty()) << "step " << plan.step_id() << ": sequence " << w.sequence_id()
                                       << " has an empty work item";
    auto it = states_.find(w.sequence_id());
    if (w.start_position() == 0) {
      DSV4_CHECK(it == states_.end()) << "step " << plan.step_id() << ": sequence " << w.sequence_id()
                                      << " starts at position 0 but already exists";
      it = states_.emplace(w.sequence_id(), model_->new_sequence()).first;
    }
    DSV4_CHECK(it != states_.end()) << "step " << plan.step_id() << ": unknown sequence " << w.sequence_id();
    DSV4_CHECK(it->second.length == w.start_position())
        << "step " << plan.step_id() << ": sequence " << w.sequence_id() << " is at position " << it->second.length
        << " but the plan continues at " << w.start_position();
    chunks.push_back({&it->second, std::span<const int32_t>(w.token_ids().data(), w.token_ids().size())});
  }
  ForwardOutput out = model_->forward(chunks);
  const float* logits = static_cast<const float*>(out.logits.data());
  std::vector<SampledLogits> sampled;
  int64_t row = 0;
  for (const v1::SequenceWork& w : plan.work()) {
    row += w.token_ids_size();
    if (!w.sample()) continue;
    const float* last = logits + (row - 1) * vocab;
    sampled.push_back({w.sequence_id(), std::vector<float>(last, last + vocab)});
  }
  return sampled;
}

}  // namespace dsv4
