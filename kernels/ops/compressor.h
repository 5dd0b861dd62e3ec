// Compressor pooling (spec §3.5): one compressed row from `slots` token slots, a per-channel softmax of
// the scores over the slots weighting the values: g_i = sum_p softmax_p(s_{p,i}) a_{p,i}.
// Slots with score -inf get weight 0 (CSA window -1 at sequence start).
#pragma once

#include <cstdint>

namespace dsv4::kernels {

struct CompressorPoolParams {
  const float* const* kv = nullptr;     // [slots] pointers to h values
  const float* const* score = nullptr;  // [slots] pointers to h values
  int64_t slots = 0;
  int64_t dim = 0;
  float* out = nullptr;                 // [dim]
};

namespace cpu {
void compressor_pool(const CompressorPoolParams& p);
}  // namespace cpu

}  // namespace dsv4::kernels
