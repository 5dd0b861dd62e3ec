// model.safetensors.index.json: {"metadata": {"total_size": N, ...}, "weight_map": {tensor: shard_file}}.
//
// Parsed with a SAX handler so a tensor listed twice in weight_map is caught (a DOM keeps the last one) and
// the ~145,000 entries of a Pro index cost no per-entry allocation beyond one name arena.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4 {

inline constexpr std::string_view kIndexFileName = "model.safetensors.index.json";
inline constexpr std::string_view kSingleShardFileName = "model.safetensors";

class CheckpointIndex {
 public:
  struct Entry {
    std::string_view name;  // points into the index's name arena
    uint32_t shard;         // into shards()
  };

  /// Parses the index text; `origin` names the file in errors. Throws Error(kInvalidCheckpoint) for
  /// malformed JSON, a missing or non-object weight_map, a non-string shard, a shard name that is not a plain
  /// file name, or a tensor listed twice.
  static CheckpointIndex parse(std::string_view json, const std::string& origin);
  /// Reads and parses a file. Throws Error(kNotFound / kIo) when it cannot be read.
  static CheckpointIndex load(const std::filesystem::path& path);

  CheckpointIndex() = default;
  CheckpointIndex(CheckpointIndex&&) noexcept = default;
  CheckpointIndex& operator=(CheckpointIndex&&) noexcept = default;

  /// Distinct shard file names, in order of first appearance.
  const std::vector<std::string>& shards() const { return shards_; }
  /// All entries, sorted by name.
  const std::vector<Entry>& entries() const { return entries_; }
  /// metadata.total_size when present.
  std::optional<uint64_t> total_size() const { return total_size_; }
  /// Binary search; nullptr when the tensor is not listed.
  const Entry* find(std::string_view name) const;

 private:
  friend class IndexBuilder;
  std::vector<std::string> shards_;
  std::vector<Entry> entries_;
  std::optional<uint64_t> total_size_;
  std::unique_ptr<char[]> names_;
};

}  // namespace dsv4
