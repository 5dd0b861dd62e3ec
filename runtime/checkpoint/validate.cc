#include "runtime/checkpoint/validate.h"

#include <algorithm>
#include <optional>
#include <unordered_set>

#include "runtime/checkpoint/expected_tensors.h"
#include "runtime/checkpoint/quant.h"

namespace dsv4 {
namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Redundant MTP copies of the shared embedding / head, which the reference converter skips.
bool is_optional_extra(std::string_view name) {
  return name.starts_with("mtp.") && (name.find("emb") != std::string_view::npos || ends_with(name, "head.weight"));
}

// Tensors whose float dtype the spec leaves to the header (§7.2 and open question 3).
bool dtype_is_flexible(const ExpectedTensor& t) {
  if (t.role != TensorRole::kPlain) return false;
  const bool mtp_norm = t.name.starts_with("mtp.") && (ends_with(t.name, "norm.weight"));
  return ends_with(t.name, "compressor.ape") || mtp_norm;
}

}  // namespace

std::string_view issue_kind_name(CheckpointIssue::Kind kind) {
  switch (kind) {
    case CheckpointIssue::Kind::kMissing: return "missing";
    case CheckpointIssue::Kind::kUnexpected: return "unexpected";
    case CheckpointIssue::Kind::kWrongShape: return "wrong shape";
    case CheckpointIssue::Kind::kWrongDtype: return "wrong dtype";
    case CheckpointIssue::Kind::kNonFiniteScale: return "non-finite scale";
  }
  return "?";
}

int64_t ValidationReport::count(CheckpointIssue::Kind kind) const {
  return std::count_if(issues.begin(), issues.end(), [&](const CheckpointIssue& i) { return i.kind == kind; });
}

ValidationReport validate_checkpoint(const Checkpoint& checkpoint, const ValidateOptions& options) {
  using Kind = CheckpointIssue::Kind;
  ValidationReport report;
  const std::vector<ExpectedTensor> expected = expected_tensors(checkpoint.config());
  report.expected_count = static_cast<int64_t>(expected.size());
  int64_t found = 0;
  for (const ExpectedTensor& t : expected) {
    const std::optional<TensorView> v = checkpoint.find(t.name);
    if (!v) {
      report.issues.push_back({Kind::kMissing, t.name, std::string(dtype_name(t.dtype)) + " " + t.shape.str()});
      continue;
    }
    ++found;
    const bool float_swap = dtype_is_flexible(t) && (v->dtype == DType::kF32 || v->dtype == DType::kBF16);
    if (v->dtype != t.dtype && !float_swap) {
      report.issues.push_back({Kind::kWrongDtype, t.name,
                               std::string(dtype_name(v->dtype)) + ", expected " + std::string(dtype_name(t.dtype))});
    }
    if (!(v->shape == t.shape)) {
      report.issues.push_back({Kind::kWrongShape, t.name, v->shape.str() + ", expected " + t.shape.str()});
    }
    if (options.scan_scales && (t.role == TensorRole::kFp8Scale || t.role == TensorRole::kFp4Scale)) {
      if (auto bad = find_nonfinite(*v)) {
        report.issues.push_back({Kind::kNonFiniteScale, t.name,
                                 "element " + std::to_string(*bad) + " of " + v->shape.str() + " is NaN or Inf"});
      }
    }
  }
  // Expected names are distinct, so when every one was found and the counts agree nothing is left over.
  if (static_cast<int64_t>(checkpoint.num_tensors()) == found) return report;
  const std::vector<std::string> names = checkpoint.names();
  std::unordered_set<std::string_view> known;
  known.reserve(expected.size() * 2);
  for (const ExpectedTensor& t : expected) known.insert(t.name);
  for (const std::string& name : names) {
    if (known.count(name) != 0) continue;
    if (is_optional_extra(name)) {
      ++report.optional_present;
      continue;
    }
    const TensorView v = checkpoint.tensor(name);
    report.issues.push_back({Kind::kUnexpected, name, std::string(dtype_name(v.dtype)) + " " + v.shape.str()});
  }
  return report;
}

}  // namespace dsv4
