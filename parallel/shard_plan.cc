// Ownership arithmetic of ShardPlan.
#include "parallel/shard_plan.h"

#include <algorithm>
#include <tuple>

#include "runtime/core/error.h"

namespace dsv4::parallel {
namespace {

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Bytes of `count` elements starting at element `first`; sub-byte dtypes need byte-aligned boundaries.
uint64_t byte_offset(DType dtype, int64_t elements, const std::string& name) {
  const int64_t bits = elements * dtype_bits(dtype);
  DSV4_CHECK_ARG(bits % 8 == 0) << "tensor " << name << ": a shard boundary at element " << elements
                                << " falls inside a byte of " << dtype_name(dtype) << " data";
  return static_cast<uint64_t>(bits / 8);
}

// The vocab shard of tp_rank: ceil(V / tp) rounded up to `align`, the last shards shorter or empty.
std::pair<int64_t, int64_t> vocab_shard(int64_t rows, int tp, int tp_rank, int64_t align) {
  int64_t per = (rows + tp - 1) / tp;
  per = (per + align - 1) / align * align;
  const int64_t begin = std::min(rows, per * tp_rank);
  const int64_t end = std::min(rows, per * (tp_rank + 1));
  return {begin, end - begin};
}

}  // namespace

std::string_view split_kind_name(SplitKind kind) {
  switch (kind) {
    case SplitKind::kReplicated: return "replicated";
    case SplitKind::kRowSplit: return "row-split";
    case SplitKind::kColumnSplit: return "column-split";
    case SplitKind::kExpert: return "expert";
    case SplitKind::kVocabSplit: return "vocab-split";
  }
  return "?";
}

void ShardPlan::validate(const TensorSpec& spec) const {
  const std::string& name = spec.name;
  DSV4_CHECK_ARG(spec.align >= 1) << "tensor " << name << ": alignment " << spec.align;
  for (int64_t d : spec.shape) DSV4_CHECK_ARG(d >= 0) << "tensor " << name << ": negative dimension";
  const int tp = mesh_.config().tp;
  switch (spec.split) {
    case SplitKind::kReplicated:
      break;
    case SplitKind::kRowSplit:
    case SplitKind::kColumnSplit: {
      DSV4_CHECK_ARG(!spec.shape.empty()) << "tensor " << name << ": a scalar cannot be " << split_kind_name(spec.split);
      const bool rows = spec.split == SplitKind::kRowSplit;
      const int64_t extent = rows ? spec.shape.front() : spec.shape.back();
      const char* dim = rows ? "rows" : "columns";
      DSV4_CHECK_ARG(extent % tp == 0) << "tensor " << name << ": " << extent << " " << dim
                                       << " cannot be split evenly over tp=" << tp;
      DSV4_CHECK_ARG((extent / tp) % spec.align == 0)
          << "tensor " << name << ": tp=" << tp << " gives " << extent / tp << " " << dim
          << " per rank, not a multiple of " << spec.align << " (FP8 block alignment)";
      break;
    }
    case SplitKind::kVocabSplit:
      DSV4_CHECK_ARG(!spec.shape.empty()) << "tensor " << name << ": a scalar cannot be vocab-split";
      break;
    case SplitKind::kExpert:
      DSV4_CHECK_ARG(spec.expert >= 0 && spec.expert < mesh_.dims().num_experts)
          << "tensor " << name << ": expert " << spec.expert << " outside [0, " << mesh_.dims().num_experts << ")";
      break;
  }
}

void ShardPlan::add(TensorSpec spec) {
  validate(spec);
  tensors_.push_back(std::move(spec));
}

TensorShard ShardPlan::shard(const TensorSpec& spec, int rank) const {
  validate(spec);
  const MeshCoord c = mesh_.coord(rank);
  const int tp = mesh_.config().tp;
  const uint64_t total = dtype_bytes(spec.dtype, numel(spec.shape));
  TensorShard out;
  out.shape = spec.shape;
  auto whole = [&] {
    out.owned = true;
    out.range = {0, total, total, 1};
  };
  switch (spec.split) {
    case SplitKind::kReplicated:
      whole();
      break;
    case SplitKind::kExpert:
      if (mesh_.expert_owner(spec.expert) == c.ep_rank) whole();
      break;
    case SplitKind::kRowSplit:
    case SplitKind::kVocabSplit: {
      const int64_t rows = spec.shape.front();
      const int64_t row_elems = numel(spec.shape) / std::max<int64_t>(rows, 1);
      int64_t begin, count;
      if (spec.split == SplitKind::kRowSplit) {
        count = rows / tp;
        begin = count * c.tp_rank;
      } else {
        std::tie(begin, count) = vocab_shard(rows, tp, c.tp_rank, spec.align);
      }
      out.begin = begin;
      out.shape.front() = count;
      out.owned = count > 0 && row_elems > 0;
      const uint64_t offset = byte_offset(spec.dtype, begin * row_elems, spec.name);
      const uint64_t length = byte_offset(spec.dtype, count * row_elems, spec.name);
      out.range = {offset, length, length, out.owned ? 1u : 0u};
      break;
    }
    case SplitKind::kColumnSplit: {
      const int64_t cols = spec.shape.back();
      const int64_t outer = numel(spec.shape) / std::max<int64_t>(cols, 1);
      const int64_t count = cols / tp;
      out.begin = count * c.tp_rank;
      out.shape.back() = count;
      out.owned = count > 0 && outer > 0;
      out.range = {byte_offset(spec.dtype, out.begin, spec.name), byte_offset(spec.dtype, count, spec.name),
                   byte_offset(spec.dtype, cols, spec.name), out.owned ? static_cast<uint64_t>(outer) : 0u};
      break;
    }
  }
  return out;
}

std::vector<int> ShardPlan::owners(const TensorSpec& spec) const {
  std::vector<int> out;
  for (int r = 0; r < mesh_.world_size(); ++r)
    if (shard(spec, r).owned) out.push_back(r);
  return out;
}

uint64_t ShardPlan::bytes_for_rank(int rank) const {
  uint64_t bytes = 0;
  for (const TensorSpec& spec : tensors_) bytes += shard(spec, rank).range.bytes();
  return bytes;
}

uint64_t ShardPlan::total_bytes() const {
  uint64_t bytes = 0;
  for (const TensorSpec& spec : tensors_) bytes += dtype_bytes(spec.dtype, numel(spec.shape));
  return bytes;
}

}  // namespace dsv4::parallel
