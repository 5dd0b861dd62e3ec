// A checkpoint directory opened for reading: config.json, model.safetensors.index.json (or one
// model.safetensors) and its shards, mmap'ed. Opening parses and validates every header; tensor views are
// zero-copy pointers into the mapped files and stay valid while the Checkpoint lives.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/config/model_config.h"
#include "runtime/core/tensor.h"

namespace dsv4 {

class SafetensorsFile;  // safetensors.h

class Checkpoint {
 public:
  /// Opens `dir`. Throws Error(kInvalidCheckpoint / kNotFound / kIo) naming the file and tensor on any problem.
  static Checkpoint open(const std::filesystem::path& dir);

  Checkpoint(Checkpoint&&) noexcept;
  Checkpoint& operator=(Checkpoint&&) noexcept;
  ~Checkpoint();

  const std::filesystem::path& dir() const;
  const ModelConfig& config() const;

  bool has(std::string_view name) const;
  /// The view of `name`, or nullopt when absent (one lookup, no exception: for validators that probe
  /// every expected tensor).
  std::optional<TensorView> find(std::string_view name) const;
  /// Zero-copy view with the dtype and shape stored in the file (packed FP4 experts are I8 [out, in/2]).
  /// Throws Error(kNotFound) naming the tensor when absent.
  TensorView tensor(std::string_view name) const;
  /// Number of tensors over all shards.
  size_t num_tensors() const;
  /// All tensor names, sorted.
  std::vector<std::string> names() const;
  /// Total bytes of tensor data over all shards.
  uint64_t total_bytes() const;

 private:
  struct Impl;
  explicit Checkpoint(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsv4
