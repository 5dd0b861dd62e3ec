// Compressors (spec §3.5, §5.2): tokens enter the current window's slot p mod m; when the window is full
// its row is pooled (8 overlapping slots for ratio 4, the m tokens otherwise), normalised, rotated at w*m
// and quantisation-emulated, then (ratio 4) the window's A-halves become the next window's "previous".
#include <algorithm>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/model/layers.h"

namespace dsv4::model_detail {
namespace {

// Ratio 4 (c = 2): the finished window's A-halves become the next window's "previous" slots.
void shift_to_previous(CompressorState& st) {
  if (st.overlap != 2) return;
  const int64_t m = st.ratio, h = st.dim, width = st.overlap * h;
  for (int64_t k = 0; k < m; ++k) {
    std::copy_n(st.cur_kv.data() + k * width, h, st.prev_kv.data() + k * h);
    std::copy_n(st.cur_score.data() + k * width, h, st.prev_score.data() + k * h);
  }
}

}  // namespace

void compressor_append(Ctx& ctx, const CompressorWeights& w, CompressorState& st, const float* a, const float* s,
                       int64_t start, int64_t count, const std::vector<float>& inv_freq, bool indexer_rows) {
  const int64_t m = w.ratio, h = w.dim, c = w.overlap, width = c * h;
  DSV4_CHECK(st.ratio == m && st.dim == h && st.overlap == c) << "compressor state does not match its weights";
  const float* ape = w.ape.data();
  std::vector<const float*> kv_ptr, score_ptr;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t p = start + i, slot = p % m;
    std::copy_n(a + i * width, width, st.cur_kv.data() + slot * width);
    float* sc = st.cur_score.data() + slot * width;
    for (int64_t j = 0; j < width; ++j) sc[j] = s[i * width + j] + ape[slot * width + j];
    if ((p + 1) % m != 0) continue;

    if (!st.owns_row(p / m)) {  // context parallelism: another CP rank pools and keeps row p / m
      shift_to_previous(st);
      continue;
    }
    // Window w = p / m is complete: pool it.
    kv_ptr.clear();
    score_ptr.clear();
    if (c == 2) {
      for (int64_t k = 0; k < m; ++k) {  // window w-1, A-halves (-inf scores before the first window)
        kv_ptr.push_back(st.prev_kv.data() + k * h);
        score_ptr.push_back(st.prev_score.data() + k * h);
      }
      for (int64_t k = 0; k < m; ++k) {  // window w, B-halves
        kv_ptr.push_back(st.cur_kv.data() + k * width + h);
        score_ptr.push_back(st.cur_score.data() + k * width + h);
      }
    } else {
      for (int64_t k = 0; k < m; ++k) {
        kv_ptr.push_back(st.cur_kv.data() + k * width);
        score_ptr.push_back(st.cur_score.data() + k * width);
      }
    }
    float* row = st.rows.append_row();  // a pool page row (reserved up front by Model::forward)
    ctx.be.compressor_pool({kv_ptr.data(), score_ptr.data(), static_cast<int64_t>(kv_ptr.size()), h, row});
    rms_norm(ctx, &w.norm, row, row, 1, h, h, h);
    const int64_t row_pos = (p / m) * m;  // RoPE at the window's first token
    const int64_t rope_dim = ctx.cfg.rope_dim;
    ctx.be.rope({row, 1, 1, h, h, h - rope_dim, inv_freq.data(), rope_dim / 2, &row_pos, false});
    if (ctx.reference()) {
      if (indexer_rows) {
        ctx.be.hadamard({row, 1, h, h});
        ctx.be.fp4_round_trip({row, 1, h, h, 32});
      } else {
        ctx.be.fp8_round_trip({row, 1, h - rope_dim, h, 64});
      }
    }
    shift_to_previous(st);
  }
}

}  // namespace dsv4::model_detail
