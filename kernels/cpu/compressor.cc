// Compressor pooling: per-channel softmax over token slots (spec §3.5).
#include <cmath>
#include <limits>

#include "kernels/ops/compressor.h"

namespace dsv4::kernels::cpu {

void compressor_pool(const CompressorPoolParams& p) {
  for (int64_t i = 0; i < p.dim; ++i) {
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t s = 0; s < p.slots; ++s) mx = std::max(mx, p.score[s][i]);
    float den = 0.0f, num = 0.0f;
    for (int64_t s = 0; s < p.slots; ++s) {
      const float sc = p.score[s][i];
      if (sc == -std::numeric_limits<float>::infinity()) continue;  // empty slot: weight 0, value unused
      const float w = std::exp(sc - mx);
      den += w;
      num += w * p.kv[s][i];
    }
    p.out[i] = num / den;
  }
}

}  // namespace dsv4::kernels::cpu
