// EP dispatch/combine: counting sort by (destination, local expert), then two all_to_all_v with block
// regrouping, or (kShared) a count all_gather and direct writes into a node-shared window.
#include "parallel/moe_dispatch.h"

#include <algorithm>
#include <cstring>

#include "runtime/core/error.h"
#include "runtime/core/float_formats.h"

namespace dsv4::parallel {
namespace {

// kAuto takes one collective per local expert when the average (source, expert) block reaches this size.
constexpr int64_t kPerExpertMinBlockBytes = 32 << 10;

// Copies blocks between the source-major layout (received order: by source, then local expert) and the
// expert-major layout (by local expert, then source). `to_grouped` picks the direction.
void regroup(const std::vector<int64_t>& counts, const std::vector<int64_t>& grouped_start, int sources, int experts,
             size_t row_bytes, const std::byte* from, std::byte* to, bool to_grouped) {
  int64_t source_row = 0;
  for (int s = 0; s < sources; ++s)
    for (int e = 0; e < experts; ++e) {
      const size_t i = static_cast<size_t>(s) * experts + e;
      const size_t bytes = static_cast<size_t>(counts[i]) * row_bytes;
      if (bytes) {
        const size_t source_off = static_cast<size_t>(source_row) * row_bytes;
        const size_t grouped_off = static_cast<size_t>(grouped_start[i]) * row_bytes;
        if (to_grouped)
          std::memcpy(to + grouped_off, from + source_off, bytes);
        else
          std::memcpy(to + source_off, from + grouped_off, bytes);
      }
      source_row += counts[i];
    }
}

std::vector<size_t> displacements(const std::vector<size_t>& counts, size_t scale) {
  std::vector<size_t> displs(counts.size());
  size_t at = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    displs[i] = at;
    at += counts[i] * scale;
  }
  return displs;
}

std::vector<size_t> scaled(const std::vector<size_t>& counts, size_t scale) {
  std::vector<size_t> out(counts);
  for (size_t& c : out) c *= scale;
  return out;
}

// The shared window's segment: [header | rows region | output region]. The header holds the byte offset of
// the owner's expert output (rows region when combine got result().rows, else the output region).
constexpr size_t kWindowHeaderBytes = 64;

size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

// One token of combine: y = sum over k ascending of w[k] * rows[k] (null rows skipped), accumulated in f32 and
// rounded once. Every exchange calls this same function, so their results are bitwise identical.
void combine_token(const std::byte* const* rows, const float* w, int top_k, DType dtype, size_t h, float* acc,
                   std::byte* y) {
  std::fill(acc, acc + h, 0.0f);
  for (int k = 0; k < top_k; ++k) {
    if (!rows[k]) continue;
    const float wk = w[k];
    if (dtype == DType::kF32) {
      const float* r = reinterpret_cast<const float*>(rows[k]);
      for (size_t i = 0; i < h; ++i) acc[i] += wk * r[i];
    } else {
      const uint16_t* r = reinterpret_cast<const uint16_t*>(rows[k]);
      for (size_t i = 0; i < h; ++i) acc[i] += wk * bf16_to_f32(r[i]);
    }
  }
  if (dtype == DType::kF32) {
    std::memcpy(y, acc, h * sizeof(float));
  } else {
    uint16_t* o = reinterpret_cast<uint16_t*>(y);
    for (size_t i = 0; i < h; ++i) o[i] = f32_to_bf16(acc[i]);
  }
}

}  // namespace

const char* moe_exchange_name(MoeExchange exchange) {
  switch (exchange) {
    case MoeExchange::kAuto: return "auto";
    case MoeExchange::kSingle: return "single";
    case MoeExchange::kPerExpert: return "per-expert";
    case MoeExchange::kShared: return "shared";
  }
  return "?";
}

std::byte* MoeDispatcher::Workspace::get(size_t bytes) {
  if (bytes > size_ || !data_) {
    data_.reset(new std::byte[std::max<size_t>(bytes, 1)]);  // default-initialised: no zero fill
    size_ = bytes;
  }
  return data_.get();
}

MoeDispatcher::MoeDispatcher(Communicator& ep, const MoeDispatchConfig& config) : ep_(ep), config_(config) {
  DSV4_CHECK_ARG(config.dtype == DType::kF32 || config.dtype == DType::kBF16)
      << "moe dispatch: rows must be F32 or BF16, not " << dtype_name(config.dtype);
  DSV4_CHECK_ARG(config.hidden > 0) << "moe dispatch: hidden width " << config.hidden;
  DSV4_CHECK_ARG(config.num_experts > 0 && config.num_experts % ep.size() == 0)
      << "moe dispatch: " << config.num_experts << " experts cannot be split evenly over " << ep.size()
      << " expert-parallel ranks";
  local_experts_ = config.num_experts / ep.size();
  row_bytes_ = static_cast<size_t>(config.hidden) * dtype_bytes(config.dtype, 1);
}

const MoeDispatchResult& MoeDispatcher::dispatch(const MoeDispatchInput& input, Stream stream) {
  DSV4_CHECK_ARG(input.num_tokens >= 0 && input.top_k > 0)
      << "moe dispatch: " << input.num_tokens << " tokens, top_k " << input.top_k;
  const int n = ep_.size();
  const int64_t slots = input.num_tokens * input.top_k;
  MoeDispatchResult& out = result_;
  out.num_tokens = input.num_tokens;
  out.top_k = input.top_k;
  out.first_local_expert = ep_.rank() * local_experts_;
  dispatched_ = false;

  // 0. Once: does the group share a node? Collective, and the answer is the same on every rank, so every
  //    rank takes the same exchange. The window starts with no row capacity and grows on first use.
  const bool want_shared = config_.exchange == MoeExchange::kAuto || config_.exchange == MoeExchange::kShared;
  if (want_shared && !window_probed_) {
    window_ = ep_.make_shared_window(kWindowHeaderBytes);
    window_probed_ = true;
    window_rows_bytes_ = 0;
  }
  DSV4_CHECK_CODE(window_ || config_.exchange != MoeExchange::kShared, ErrorCode::kUnsupported)
      << "moe dispatch: the shared exchange needs every rank of the " << n << "-rank EP group on one node with a "
      << "host-memory backend; '" << ep_.backend_name() << "' gives no shared window here";
  const bool shared = window_ != nullptr;

  // 1. Count rows per (destination, local expert) and place slots by counting sort: the send order is
  //    (destination, local expert, slot), which makes every destination's block already grouped by expert.
  //    Expert e is (destination e / local, local expert e % local), so the counts are indexed by e.
  send_counts_.assign(static_cast<size_t>(config_.num_experts), 0);
  for (int64_t s = 0; s < slots; ++s) {
    const int32_t e = input.expert_ids[s];
    if (e == -1) continue;
    DSV4_CHECK_ARG(e >= 0 && e < config_.num_experts)
        << "moe dispatch: token " << s / input.top_k << " slot " << s % input.top_k << " routes to expert " << e
        << ", outside [0, " << config_.num_experts << ") (-1 marks an unused slot)";
    ++send_counts_[static_cast<size_t>(e)];
  }
  send_start_.resize(send_counts_.size());
  int64_t total = 0;
  for (size_t i = 0; i < send_counts_.size(); ++i) {
    send_start_[i] = total;
    total += send_counts_[i];
  }
  std::vector<int64_t> next = send_start_;
  out.slot_to_send_row.assign(static_cast<size_t>(slots), -1);
  for (int64_t s = 0; s < slots; ++s) {
    const int32_t e = input.expert_ids[s];
    if (e != -1) out.slot_to_send_row[s] = next[static_cast<size_t>(e)]++;
  }
  if (shared) {
    dispatch_shared(input, stream);
    used_ = MoeExchange::kShared;
    dispatched_ = true;
    return out;
  }
  std::byte* send_buf = send_.get(static_cast<size_t>(total) * row_bytes_);
  const auto* x = static_cast<const std::byte*>(input.x);
  for (int64_t s = 0; s < slots; ++s) {
    const int64_t row = out.slot_to_send_row[s];
    if (row >= 0) std::memcpy(send_buf + row * row_bytes_, x + (s / input.top_k) * row_bytes_, row_bytes_);
  }

  // 2. Exchange the per-expert counts: to every rank, its local_experts counts followed by this rank's total
  //    row count, so that every rank learns the group-wide total (for the exchange choice) at no extra cost.
  const size_t stride = static_cast<size_t>(local_experts_) + 1;
  std::vector<int64_t> counts_out(static_cast<size_t>(n) * stride), counts_in(static_cast<size_t>(n) * stride);
  for (int p = 0; p < n; ++p) {
    std::copy_n(send_counts_.begin() + static_cast<ptrdiff_t>(p) * local_experts_, local_experts_,
                counts_out.begin() + static_cast<ptrdiff_t>(p * stride));
    counts_out[p * stride + local_experts_] = total;
  }
  const std::vector<size_t> block(static_cast<size_t>(n), stride);
  const std::vector<size_t> block_displs = displacements(block, 1);
  ep_.all_to_all_v({counts_out.data(), block, block_displs, counts_in.data(), block, block_displs, DType::kI64},
                   stream);
  out.recv_counts.assign(static_cast<size_t>(n) * local_experts_, 0);
  int64_t group_rows = 0;
  for (int p = 0; p < n; ++p) {
    std::copy_n(counts_in.begin() + static_cast<ptrdiff_t>(p * stride), local_experts_,
                out.recv_counts.begin() + static_cast<ptrdiff_t>(p) * local_experts_);
    group_rows += counts_in[p * stride + local_experts_];
  }

  // 3. Exchange the rows.
  out.send_rows.assign(static_cast<size_t>(n), 0);
  out.recv_rows.assign(static_cast<size_t>(n), 0);
  for (int p = 0; p < n; ++p)
    for (int e = 0; e < local_experts_; ++e) {
      out.send_rows[p] += static_cast<size_t>(send_counts_[static_cast<size_t>(p) * local_experts_ + e]);
      const int64_t c = out.recv_counts[static_cast<size_t>(p) * local_experts_ + e];
      DSV4_CHECK_CODE(c >= 0, ErrorCode::kRemote) << "moe dispatch: rank " << p << " announced " << c << " rows";
      out.recv_rows[p] += static_cast<size_t>(c);
    }
  size_t received = 0;
  for (size_t c : out.recv_rows) received += c;
  out.num_rows = static_cast<int64_t>(received);

  // 4. Layout by local expert: expert e's rows, by source inside it.
  out.num_tokens_per_expert.assign(static_cast<size_t>(local_experts_), 0);
  for (int p = 0; p < n; ++p)
    for (int e = 0; e < local_experts_; ++e)
      out.num_tokens_per_expert[e] += out.recv_counts[static_cast<size_t>(p) * local_experts_ + e];
  out.expert_offsets.assign(static_cast<size_t>(local_experts_) + 1, 0);
  for (int e = 0; e < local_experts_; ++e)
    out.expert_offsets[e + 1] = out.expert_offsets[e] + out.num_tokens_per_expert[e];
  grouped_start_.resize(out.recv_counts.size());
  for (int e = 0; e < local_experts_; ++e) {
    int64_t row = out.expert_offsets[e];
    for (int p = 0; p < n; ++p) {
      grouped_start_[static_cast<size_t>(p) * local_experts_ + e] = row;
      row += out.recv_counts[static_cast<size_t>(p) * local_experts_ + e];
    }
  }

  // 5. Choose the exchange, the same on every rank (all know group_rows). One collective per local expert
  //    avoids two full copies but pays a synchronisation per expert: worth it for blocks of tens of KiB
  //    (measured on the 2-core VM, docs/PERFORMANCE.md), not for decode-sized batches.
  const int64_t average_block_bytes =
      group_rows * static_cast<int64_t>(row_bytes_) / (static_cast<int64_t>(n) * n * local_experts_);
  const bool per_expert = config_.exchange == MoeExchange::kPerExpert ||
                          (config_.exchange == MoeExchange::kAuto &&
                           (local_experts_ == 1 || average_block_bytes >= kPerExpertMinBlockBytes));
  used_ = per_expert ? MoeExchange::kPerExpert : MoeExchange::kSingle;

  // 6. Exchange the rows.
  std::byte* rows = rows_.get(received * row_bytes_);
  const size_t h = static_cast<size_t>(config_.hidden);
  if (per_expert) {
    std::vector<size_t> sc(n), sd(n), rc(n), rd(n);
    for (int e = 0; e < local_experts_; ++e) {
      for (int p = 0; p < n; ++p) {
        const size_t i = static_cast<size_t>(p) * local_experts_ + e;
        sc[p] = static_cast<size_t>(send_counts_[i]) * h;
        sd[p] = static_cast<size_t>(send_start_[i]) * h;
        rc[p] = static_cast<size_t>(out.recv_counts[i]) * h;
        rd[p] = static_cast<size_t>(grouped_start_[i]) * h;
      }
      ep_.all_to_all_v({send_buf, sc, sd, rows, rc, rd, config_.dtype}, stream);
    }
  } else {
    std::byte* recv_buf = recv_.get(received * row_bytes_);
    const std::vector<size_t> sc = scaled(out.send_rows, h), rc = scaled(out.recv_rows, h);
    const std::vector<size_t> sd = displacements(out.send_rows, h), rd = displacements(out.recv_rows, h);
    ep_.all_to_all_v({send_buf, sc, sd, recv_buf, rc, rd, config_.dtype}, stream);
    regroup(out.recv_counts, grouped_start_, n, local_experts_, row_bytes_, recv_buf, rows, /*to_grouped=*/true);
  }
  out.rows = rows;
  dispatched_ = true;
  return out;
}

void MoeDispatcher::combine(const void* expert_out, const float* weights, void* y, Stream stream) {
  DSV4_CHECK_CODE(dispatched_, ErrorCode::kInternal) << "moe combine without a completed dispatch";
  if (used_ == MoeExchange::kShared) return combine_shared(expert_out, weights, y);
  const MoeDispatchResult& d = result_;
  const int n = ep_.size();
  const size_t h = static_cast<size_t>(config_.hidden);

  // 1. Return every row to the rank it came from, into that rank's send order.
  size_t sent = 0;
  for (size_t c : d.send_rows) sent += c;
  std::byte* returned = returned_.get(sent * row_bytes_);
  const auto* grouped = static_cast<const std::byte*>(expert_out);
  if (used_ == MoeExchange::kPerExpert) {
    std::vector<size_t> sc(n), sd(n), rc(n), rd(n);
    for (int e = 0; e < local_experts_; ++e) {
      for (int p = 0; p < n; ++p) {
        const size_t i = static_cast<size_t>(p) * local_experts_ + e;
        sc[p] = static_cast<size_t>(d.recv_counts[i]) * h;
        sd[p] = static_cast<size_t>(grouped_start_[i]) * h;
        rc[p] = static_cast<size_t>(send_counts_[i]) * h;
        rd[p] = static_cast<size_t>(send_start_[i]) * h;
      }
      ep_.all_to_all_v({grouped, sc, sd, returned, rc, rd, config_.dtype}, stream);
    }
  } else {
    std::byte* by_source = by_source_.get(static_cast<size_t>(d.num_rows) * row_bytes_);
    regroup(d.recv_counts, grouped_start_, n, local_experts_, row_bytes_, grouped, by_source, /*to_grouped=*/false);
    const std::vector<size_t> sc = scaled(d.recv_rows, h), rc = scaled(d.send_rows, h);
    const std::vector<size_t> sd = displacements(d.recv_rows, h), rd = displacements(d.send_rows, h);
    ep_.all_to_all_v({by_source, sc, sd, returned, rc, rd, config_.dtype}, stream);
  }

  // 2. Weighted sum in token order, k ascending, f32 accumulation, one rounding.
  std::vector<float> acc(h);
  std::vector<const std::byte*> rows(static_cast<size_t>(d.top_k));
  for (int64_t t = 0; t < d.num_tokens; ++t) {
    for (int k = 0; k < d.top_k; ++k) {
      const int64_t row = d.slot_to_send_row[t * d.top_k + k];
      rows[k] = row < 0 ? nullptr : returned + row * row_bytes_;
    }
    combine_token(rows.data(), weights + t * d.top_k, d.top_k, config_.dtype, h, acc.data(),
                  static_cast<std::byte*>(y) + t * row_bytes_);
  }
}


// kShared dispatch, after the counting sort (send_counts_, send_start_, slot_to_send_row are set).
void MoeDispatcher::dispatch_shared(const MoeDispatchInput& input, Stream stream) {
  MoeDispatchResult& out = result_;
  const int n = ep_.size(), r = ep_.rank(), local = local_experts_, experts = config_.num_experts;
  const int64_t slots = input.num_tokens * input.top_k;

  // 1. Every rank's counts per expert id: the [source, destination, local expert] matrix, known to all. This
  //    collective also orders the previous combine's reads of the window (every rank finished them before
  //    entering it) before this dispatch's writes.
  count_matrix_.resize(static_cast<size_t>(n) * experts);
  ep_.all_gather(send_counts_.data(), count_matrix_.data(), static_cast<size_t>(experts), DType::kI64, stream);
  for (size_t i = 0; i < count_matrix_.size(); ++i)
    DSV4_CHECK_CODE(count_matrix_[i] >= 0, ErrorCode::kRemote)
        << "moe dispatch: rank " << i / experts << " announced " << count_matrix_[i] << " rows for expert "
        << i % experts;
  const auto at = [&](int source, int dest, int e) {
    return count_matrix_[static_cast<size_t>(source) * experts + static_cast<size_t>(dest) * local + e];
  };

  // 2. Every owner's layout (by local expert, then source, then the source's slot order): where this rank's
  //    rows go in each owner (remote_start_) and where each source's rows land here (grouped_start_).
  remote_start_.resize(static_cast<size_t>(experts));
  grouped_start_.resize(static_cast<size_t>(n) * local);
  out.recv_counts.assign(static_cast<size_t>(n) * local, 0);
  out.num_tokens_per_expert.assign(static_cast<size_t>(local), 0);
  out.expert_offsets.assign(static_cast<size_t>(local) + 1, 0);
  int64_t max_rows = 0;
  for (int dest = 0; dest < n; ++dest) {
    int64_t row = 0;
    for (int e = 0; e < local; ++e) {
      if (dest == r) out.expert_offsets[e] = row;
      for (int source = 0; source < n; ++source) {
        const int64_t c = at(source, dest, e);
        if (source == r) remote_start_[static_cast<size_t>(dest) * local + e] = row;
        if (dest == r) {
          grouped_start_[static_cast<size_t>(source) * local + e] = row;
          out.recv_counts[static_cast<size_t>(source) * local + e] = c;
          out.num_tokens_per_expert[e] += c;
        }
        row += c;
      }
    }
    if (dest == r) out.expert_offsets[local] = row;
    max_rows = std::max(max_rows, row);
  }
  out.num_rows = out.expert_offsets[local];
  out.send_rows.assign(static_cast<size_t>(n), 0);
  out.recv_rows.assign(static_cast<size_t>(n), 0);
  for (int p = 0; p < n; ++p)
    for (int e = 0; e < local; ++e) {
      out.send_rows[p] += static_cast<size_t>(at(r, p, e));
      out.recv_rows[p] += static_cast<size_t>(at(p, r, e));
    }

  // 3. Growth: every rank computed the same max_rows, so all re-allocate together (a collective). The old
  //    window is freed first (its contents are dead: the previous combine is over) to keep the peak low;
  //    capacity at least doubles, so a growing workload re-allocates O(log) times.
  const size_t needed = static_cast<size_t>(max_rows) * row_bytes_;
  if (needed > window_rows_bytes_) {
    const size_t rows_bytes = round_up(std::max(needed, 2 * window_rows_bytes_), kWindowHeaderBytes);
    window_.reset();
    window_rows_bytes_ = 0;
    window_ = ep_.make_shared_window(kWindowHeaderBytes + 2 * rows_bytes);
    DSV4_CHECK_CODE(window_ != nullptr, ErrorCode::kInternal)
        << "moe dispatch: the EP group's shared window could not be re-created";
    window_rows_bytes_ = rows_bytes;
  }

  // 4. Each routed slot's row, copied once from the token straight into its place in the owner's segment.
  slot_owner_.assign(static_cast<size_t>(slots), -1);
  slot_row_.assign(static_cast<size_t>(slots), -1);
  std::vector<std::byte*> rows_of(static_cast<size_t>(n));
  for (int p = 0; p < n; ++p) rows_of[p] = window_->segment(p) + kWindowHeaderBytes;
  const auto* x = static_cast<const std::byte*>(input.x);
  for (int64_t s = 0; s < slots; ++s) {
    const int64_t send_row = out.slot_to_send_row[s];
    if (send_row < 0) continue;
    const auto e = static_cast<size_t>(input.expert_ids[s]);
    const int dest = static_cast<int>(e) / local;
    // The slot's place inside this rank's block for (dest, local expert) is its place in the send order's
    // block for the same expert id: both are slot order.
    const int64_t row = remote_start_[e] + (send_row - send_start_[e]);
    slot_owner_[s] = dest;
    slot_row_[s] = row;
    std::memcpy(rows_of[dest] + row * row_bytes_, x + (s / input.top_k) * row_bytes_, row_bytes_);
  }
  window_->fence();
  out.rows = rows_of[r];
  combined_ = false;
}

void MoeDispatcher::combine_shared(const void* expert_out, const float* weights, void* y) {
  const MoeDispatchResult& d = result_;
  const int n = ep_.size();
  const size_t h = static_cast<size_t>(config_.hidden);

  // 1. This rank's expert output into its segment (already there when it is result().rows), and its offset into
  //    the header for the sources to read after the fence.
  // A second combine of the same dispatch would overwrite what slower peers may still be reading.
  if (combined_) window_->fence();
  combined_ = true;
  std::byte* mine = window_->segment(ep_.rank());
  int64_t out_offset = static_cast<int64_t>(kWindowHeaderBytes);
  if (expert_out != d.rows) {
    out_offset += static_cast<int64_t>(window_rows_bytes_);
    if (d.num_rows) std::memcpy(mine + out_offset, expert_out, static_cast<size_t>(d.num_rows) * row_bytes_);
  }
  std::memcpy(mine, &out_offset, sizeof out_offset);
  window_->fence();

  // 2. The weighted sum reads every result in place in its owner's segment. No fence after it: the next
  //    dispatch's count all_gather, which every rank enters only after these reads, orders them before any
  //    rank writes the window again (and before a growth frees it).
  std::vector<const std::byte*> results_of(static_cast<size_t>(n));
  for (int p = 0; p < n; ++p) {
    int64_t offset = 0;
    std::memcpy(&offset, window_->segment(p), sizeof offset);
    results_of[p] = window_->segment(p) + offset;
  }
  std::vector<float> acc(h);
  std::vector<const std::byte*> rows(static_cast<size_t>(d.top_k));
  for (int64_t t = 0; t < d.num_tokens; ++t) {
    for (int k = 0; k < d.top_k; ++k) {
      const size_t slot = static_cast<size_t>(t * d.top_k + k);
      const int owner = slot_owner_[slot];
      rows[k] = owner < 0 ? nullptr : results_of[owner] + slot_row_[slot] * row_bytes_;
    }
    combine_token(rows.data(), weights + t * d.top_k, d.top_k, config_.dtype, h, acc.data(),
                  static_cast<std::byte*>(y) + t * row_bytes_);
  }
}

}  // namespace dsv4::parallel
