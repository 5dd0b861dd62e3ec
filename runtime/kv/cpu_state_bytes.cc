#include "runtime/kv/cpu_state_bytes.h"

#include "runtime/core/error.h"

namespace dsv4 {
namespace {

constexpr int64_t kF32 = 4;

// One compressor's fp32 windows as CompressorState::init sizes them: current kv + score [m, c*h] each, and
// for the overlapping ratio-4 compressor the previous window's A-halves, kv + score [m, h] each.
int64_t compressor_bytes(int64_t ratio, int64_t h) {
  const int64_t c = ratio == 4 ? 2 : 1;
  int64_t bytes = 2 * ratio * c * h * kF32;
  if (c == 2) bytes += 2 * ratio * h * kF32;
  return bytes;
}

int64_t pages_for(int64_t rows, int64_t h, int64_t page_bytes) {
  const int64_t per_page = page_bytes / (h * kF32);
  DSV4_CHECK_ARG(per_page >= 1) << "a state page of " << page_bytes << " bytes cannot hold a row of " << h
                                << " floats";
  return (rows + per_page - 1) / per_page;
}

}  // namespace

CpuStateBytes cpu_state_bytes(const ModelConfig& c, int64_t tokens, int64_t page_bytes, int64_t mtp_layers,
                              int64_t cp) {
  DSV4_CHECK_ARG(tokens >= 0) << "context length must be >= 0, got " << tokens;
  DSV4_CHECK_ARG(mtp_layers >= 0) << "MTP layer count must be >= 0, got " << mtp_layers;
  DSV4_CHECK_ARG(cp >= 1) << "context-parallel size must be >= 1, got " << cp;
  CpuStateBytes s;
  s.page_bytes = page_bytes;
  const int64_t ring = c.sliding_window * c.head_dim * kF32;
  s.ring = (c.num_layers + mtp_layers) * ring;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const int64_t ratio = c.compress_ratio(l);
    if (ratio == 0) continue;
    const int64_t rows = (tokens / ratio + cp - 1) / cp;  // CP rank 0's round-robin share
    s.compressor += compressor_bytes(ratio, c.head_dim);
    s.row_pages += pages_for(rows, c.head_dim, page_bytes);
    if (ratio == 4) {
      s.compressor += compressor_bytes(ratio, c.index_head_dim);
      s.row_pages += pages_for(rows, c.index_head_dim, page_bytes);
    }
  }
  return s;
}

}  // namespace dsv4
