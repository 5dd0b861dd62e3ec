// ShardPlan: which rank owns which bytes of every tensor, for a Mesh. Generic (names are opaque).
//
// A tensor is row-major with a shape and dtype, and one way of being split:
//   kReplicated   every rank holds all of it (norms, router, small tensors);
//   kRowSplit     dim 0 split evenly over the TP group (column-parallel weights: [out, in] by output rows);
//   kColumnSplit  the last dim split evenly over tp (row-parallel weights: [out, in] by input columns);
//   kExpert       all of it, owned by the ep rank holding `expert` (every EP replica holds a copy);
//   kVocabSplit   dim 0 split over tp in ceil-sized shards (the last may be shorter): embedding, LM head.
// Each shard of a split tensor must be a multiple of `align` elements along the split dim (128 for FP8
// weights and their block scales), otherwise add() refuses the tensor naming it.
//
// A rank's bytes of a tensor are one strided range {offset, length, stride, count}: `count` runs of
// `length` bytes, `stride` apart, starting at `offset` in the tensor's bytes; that is what a loader reads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "parallel/mesh.h"
#include "runtime/core/dtype.h"

namespace dsv4::parallel {

enum class SplitKind { kReplicated, kRowSplit, kColumnSplit, kExpert, kVocabSplit };

std::string_view split_kind_name(SplitKind kind);

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::kBF16;
  SplitKind split = SplitKind::kReplicated;
  int expert = -1;     // kExpert only
  int64_t align = 1;   // shard extent along the split dim must be a multiple of this
};

/// `count` runs of `length` bytes, `stride` bytes apart, from `offset` (all relative to the tensor start).
struct StridedRange {
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t stride = 0;
  uint64_t count = 0;
  uint64_t bytes() const { return length * count; }
};

/// One rank's part of one tensor. `owned` is false (and the range empty) when the rank holds none of it.
struct TensorShard {
  bool owned = false;
  std::vector<int64_t> shape;  // the shard's own shape
  int64_t begin = 0;           // first index along the split dim (0 when not split)
  StridedRange range;
};

class ShardPlan {
 public:
  explicit ShardPlan(const Mesh& mesh) : mesh_(mesh) {}

  /// Validates and records a tensor; throws kInvalidArgument naming it when it cannot be split as asked.
  void add(TensorSpec spec);
  const std::vector<TensorSpec>& tensors() const { return tensors_; }

  /// `rank`'s part of `spec` (which need not have been added, but must be valid).
  TensorShard shard(const TensorSpec& spec, int rank) const;
  /// The ranks holding any part of `spec`, ascending.
  std::vector<int> owners(const TensorSpec& spec) const;

  /// Bytes `rank` holds over every added tensor.
  uint64_t bytes_for_rank(int rank) const;
  /// Bytes of every added tensor once (the checkpoint size).
  uint64_t total_bytes() const;

  /// The experts `ep_rank` owns: [first, first + count).
  std::pair<int, int> local_experts(int ep_rank) const {
    return {mesh_.first_expert(ep_rank), mesh_.experts_per_ep_rank()};
  }

  const Mesh& mesh() const { return mesh_; }

 private:
  void validate(const TensorSpec& spec) const;

  Mesh mesh_;
  std::vector<TensorSpec> tensors_;
};

}  // namespace dsv4::parallel
