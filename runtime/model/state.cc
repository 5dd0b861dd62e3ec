#include "runtime/model/state.h"

#include <limits>
#include <utility>

#include "runtime/core/error.h"

namespace dsv4 {

int64_t CompressorState::fixed_bytes(int64_t r, int64_t h, int64_t c) {
  const int64_t floats = 2 * r * c * h + (c == 2 ? 2 * r * h : 0);
  return floats * static_cast<int64_t>(sizeof(float));
}

void CompressorState::init(StatePool* pool, int64_t sequence, int64_t r, int64_t h, int64_t c) {
  ratio = r;
  dim = h;
  overlap = c;
  cur_kv.assign(r * c * h, 0.0f);
  cur_score.assign(r * c * h, -std::numeric_limits<float>::infinity());
  if (c == 2) {
    prev_kv.assign(r * h, 0.0f);
    prev_score.assign(r * h, -std::numeric_limits<float>::infinity());
  }
  rows = RowStore(pool, sequence, h);
}

SequenceState& SequenceState::operator=(SequenceState&& other) noexcept {
  if (this != &other) {
    layers.clear();  // pages go back while this state's account is still open
    account = std::move(other.account);
    length = other.length;
    layers = std::move(other.layers);
    mtp_length = other.mtp_length;
  }
  return *this;
}

int64_t SequenceState::memory_bytes() const { return account.held_bytes(); }

SequenceState make_sequence_state(const ModelConfig& config, int64_t mtp_layers, StatePool* pool,
                                  int64_t reserve_bytes) {
  SequenceState s;
  s.account = StateAccount(pool, reserve_bytes);
  StatePool* p = s.account.pool();
  const int64_t id = s.account.id();
  const int64_t slots = config.num_layers + mtp_layers;
  const int64_t ring_floats = config.sliding_window * config.head_dim;
  int64_t fixed = slots * ring_floats * static_cast<int64_t>(sizeof(float));
  for (int64_t l = 0; l < config.num_layers; ++l) {
    const int64_t ratio = config.compress_ratio(l);
    if (ratio != 0) fixed += CompressorState::fixed_bytes(ratio, config.head_dim, ratio == 4 ? 2 : 1);
    if (ratio == 4) fixed += CompressorState::fixed_bytes(ratio, config.index_head_dim, 2);
  }
  p->charge(id, fixed);  // before allocating: an exhausted pool refuses without touching the heap
  s.layers.resize(slots);
  for (int64_t l = 0; l < slots; ++l) {
    LayerState& ls = s.layers[l];
    ls.ring.assign(ring_floats, 0.0f);
    const int64_t ratio = l < config.num_layers ? config.compress_ratio(l) : 0;
    if (ratio != 0) ls.main.init(p, id, ratio, config.head_dim, ratio == 4 ? 2 : 1);
    if (ratio == 4) ls.index.init(p, id, ratio, config.index_head_dim, 2);
  }
  return s;
}

void reserve_sequence_rows(SequenceState& state, int64_t tokens) {
  for (LayerState& ls : state.layers) {
    if (ls.main.ratio != 0) ls.main.rows.reserve(ls.main.local_rows(tokens / ls.main.ratio));
    if (ls.index.ratio != 0) ls.index.rows.reserve(ls.index.local_rows(tokens / ls.index.ratio));
  }
}

}  // namespace dsv4
