// Writing checkpoints: a streaming safetensors writer, the index json, and `make_random_checkpoint`, which
// writes a random-weight checkpoint of any config in the official layout and formats (what `dsv4
// make-checkpoint`, the tests and the demo use).
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "runtime/config/model_config.h"
#include "runtime/core/tensor.h"

namespace dsv4 {

struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;

  size_t nbytes() const { return dtype_bytes(dtype, shape.numel()); }
};

/// Streams one safetensors file. The header is written by the constructor; tensor bytes then follow in
/// order() (the given tensors sorted by element size, largest first, so every tensor is naturally aligned
/// once the data area starts on an 8-byte boundary, as the reference writer does). Data are contiguous, so
/// the files load with the reference `safetensors` library too.
class SafetensorsWriter {
 public:
  /// Throws Error(kInvalidArgument) for duplicate names, Error(kIo) when the file cannot be created.
  SafetensorsWriter(const std::filesystem::path& path, std::vector<TensorSpec> tensors,
                    const std::vector<std::pair<std::string, std::string>>& metadata = {{"format", "pt"}});
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;
  ~SafetensorsWriter();

  /// The order in which tensor bytes must be written.
  const std::vector<TensorSpec>& order() const { return tensors_; }
  /// Appends bytes to the current tensor (a tensor may be written in several pieces). Writing past the
  /// current tensor's end moves to the next one.
  void write(const void* data, size_t bytes);
  /// Advances over `bytes` of tensor data without writing them: the file gets a hole that reads back as
  /// zeros and takes no disk space (benchmarks build full-size headers over sparse files this way).
  void skip(uint64_t bytes);
  /// Checks that every tensor was written in full, flushes and closes. Throws Error(kIo / kInternal).
  void finish();
  /// Bytes of tensor data (the data area).
  uint64_t data_bytes() const { return data_bytes_; }

 private:
  std::filesystem::path path_;
  std::vector<TensorSpec> tensors_;
  std::FILE* file_ = nullptr;
  uint64_t data_bytes_ = 0;
  uint64_t data_offset_ = 0;  // 8 + header length
  uint64_t written_ = 0;
};

/// Writes model.safetensors.index.json: {"metadata": {"total_size": N}, "weight_map": {name: shard}}.
void write_safetensors_index(const std::filesystem::path& path,
                             const std::vector<std::pair<std::string, std::string>>& weight_map, uint64_t total_size);

/// Writes a random-weight checkpoint of `config` to `out_dir` (created if absent): every tensor of
/// expected_tensors(config) in its official dtype (FP8 + E8M0 128x128 blocks, packed FP4 experts with E8M0
/// per 32, BF16/F32 elsewhere, I64 tid2eid with distinct valid expert ids per row), spread over
/// `num_shards` files in the official order with model.safetensors.index.json (one shard: a single
/// model.safetensors), config.json, and copies of `tokenizer_files`.
///
/// Values keep activations O(1) through the layers: projections ~ N(0, 1/fan_in) before quantisation,
/// embeddings ~ N(0, 1), norms 1, hc_*_fn ~ N(0, 0.01/(n*D)) with base ~ N(0, 0.01) and scale 1,
/// attn_sink, ape and gate bias ~ N(0, 1e-4). Output is a pure function of (config, seed): every tensor has
/// its own mt19937_64 stream and normals are sums of uniforms (no libm), so files are identical across
/// platforms. Shards are written streaming; memory stays at a few 128-row bands.
void make_random_checkpoint(const ModelConfig& config, uint64_t seed, const std::filesystem::path& out_dir,
                            int num_shards, const std::vector<std::filesystem::path>& tokenizer_files = {});

}  // namespace dsv4
