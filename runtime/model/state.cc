#include "runtime/model/state.h"

#include <limits>

namespace dsv4 {

void CompressorState::init(int64_t r, int64_t h, int64_t c) {
  ratio = r;
  dim = h;
  overlap = c;
  cur_kv.assign(r * c * h, 0.0f);
  cur_score.assign(r * c * h, -std::numeric_limits<float>::infinity());
  if (c == 2) {
    prev_kv.assign(r * h, 0.0f);
    prev_score.assign(r * h, -std::numeric_limits<float>::infinity());
  }
  rows.clear();
  num_rows = 0;
}

int64_t SequenceState::memory_bytes() const {
  int64_t bytes = 0;
  for (const auto& l : layers) {
    bytes += static_cast<int64_t>(sizeof(float)) *
             static_cast<int64_t>(l.ring.size() + l.main.cur_kv.size() * 2 + l.main.prev_kv.size() * 2 +
                                  l.main.rows.size() + l.index.cur_kv.size() * 2 + l.index.prev_kv.size() * 2 +
                                  l.index.rows.size());
  }
  return bytes;
}

}  // namespace dsv4
