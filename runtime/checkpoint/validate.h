// Validation of an opened checkpoint against the tensor set its config implies (expected_tensors, spec §7.2):
// missing, unexpected, wrong-shape and wrong-dtype tensors, and optionally NaN/Inf block scales.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/checkpoint/checkpoint.h"

namespace dsv4 {

struct CheckpointIssue {
  enum class Kind { kMissing, kUnexpected, kWrongShape, kWrongDtype, kNonFiniteScale };
  Kind kind;
  std::string tensor;
  std::string detail;  // e.g. "shape [4, 8], expected [8, 4]"
};

std::string_view issue_kind_name(CheckpointIssue::Kind kind);

struct ValidationReport {
  std::vector<CheckpointIssue> issues;
  int64_t expected_count = 0;
  int64_t optional_present = 0;  // redundant MTP copies of embed / head found

  bool ok() const { return issues.empty(); }
  int64_t count(CheckpointIssue::Kind kind) const;
};

struct ValidateOptions {
  /// Read every FP8/FP4 scale tensor and report NaN/Inf (E8M0 byte 255). Touches all scale pages: a few
  /// seconds per 10 GB of scales from the page cache.
  bool scan_scales = true;
};

/// Compares `checkpoint` with expected_tensors(checkpoint.config()). Never throws for a mismatch: every
/// problem becomes an issue. `compressor.ape` and the MTP norms may be F32 or BF16 (the spec leaves it to
/// the header); MTP copies of the embedding / head ("mtp.*emb*", "mtp.*head.weight") are optional.
ValidationReport validate_checkpoint(const Checkpoint& checkpoint, const ValidateOptions& options = {});

}  // namespace dsv4
