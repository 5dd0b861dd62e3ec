// The full tensor set a checkpoint of a given config must contain (spec §7.2): names, storage dtypes and
// shapes exactly as in the official safetensors files. Used to validate a checkpoint before loading it, by
// `dsv4 inspect`, and by the writer behind `dsv4 make-checkpoint`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/config/model_config.h"
#include "runtime/core/tensor.h"

namespace dsv4 {

/// How a tensor's bytes are to be interpreted.
enum class TensorRole {
  kPlain,       // BF16 / F32 / F16 values used as they are (norms, embeddings, hc_*, sinks, ape, gate, bias)
  kFp8Weight,   // F8_E4M3 [out, in], paired with `<name minus .weight>.scale` in 128x128 blocks
  kFp8Scale,    // F8_E8M0 (F32 in Base checkpoints) [ceil(out/128), ceil(in/128)]
  kFp4Weight,   // I8 [out, in/2]: two e2m1 values per byte, low nibble = even column
  kFp4Scale,    // F8_E8M0 [out, in/32]
  kIndex,       // I64 tid2eid [vocab, k]
};

struct ExpectedTensor {
  std::string name;   // official name, e.g. "layers.3.ffn.experts.17.w1.weight"
  DType dtype;        // storage dtype in the file
  Shape shape;        // storage shape in the file (packed FP4: in/2 columns)
  TensorRole role;
  int64_t layer = -1;   // main layer index, num_layers for the MTP block, -1 for global tensors
  int64_t expert = -1;  // routed expert index, -1 otherwise
};

/// Every tensor of the model described by `config`, main layers then MTP, in a stable order.
/// MTP copies of the embedding / head (which some checkpoints carry and the reference skips) are not listed;
/// validators treat them as optional.
std::vector<ExpectedTensor> expected_tensors(const ModelConfig& config);

/// Sum of the element counts as stored (packed FP4 counted as one element per byte, as the model cards do).
int64_t stored_parameter_count(const std::vector<ExpectedTensor>& tensors);

}  // namespace dsv4
