// Reading safetensors files: an 8-byte little-endian header length, a JSON header mapping tensor names to
// {dtype, shape, data_offsets}, then the raw tensor bytes.
//
// The header is parsed with a SAX handler (not a DOM) for two reasons: a DOM silently keeps the last of two
// equal keys, which would hide a duplicated tensor, and a Pro checkpoint has ~145,000 headers entries whose
// DOM allocations would dominate the time to open it. Everything outside the file is validated: header
// length, JSON syntax, dtype, shape, offsets within the data area and non-overlapping, dtype x shape == bytes.
// Every error names the file and, where there is one, the tensor.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/core/tensor.h"

namespace dsv4 {

/// Largest JSON header accepted (the bound the reference Rust implementation uses).
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

/// One tensor of a header. Offsets are relative to the start of the data area (just after the header).
struct SafetensorsEntry {
  std::string_view name;  // points into the owning SafetensorsHeader
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t begin = 0;
  uint64_t end = 0;

  uint64_t nbytes() const { return end - begin; }
};

/// A parsed, validated header. Move-only; entry names stay valid across moves.
class SafetensorsHeader {
 public:
  SafetensorsHeader() = default;
  SafetensorsHeader(SafetensorsHeader&&) noexcept = default;
  SafetensorsHeader& operator=(SafetensorsHeader&&) noexcept = default;

  /// Entries sorted by name.
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  /// The free-form `__metadata__` string map, in file order.
  const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }
  /// Binary search by name; nullptr when absent.
  const SafetensorsEntry* find(std::string_view name) const;

 private:
  friend SafetensorsHeader parse_safetensors_header(std::string_view, uint64_t, const std::string&);
  std::vector<SafetensorsEntry> entries_;
  std::vector<std::pair<std::string, std::string>> metadata_;
  std::unique_ptr<char[]> names_;  // all names back to back; a heap block so moves keep the views valid
};

/// Parses and validates the JSON header `json` of a file whose data area holds `data_size` bytes.
/// `origin` names the file in errors. Throws Error(kInvalidCheckpoint).
SafetensorsHeader parse_safetensors_header(std::string_view json, uint64_t data_size, const std::string& origin);

/// Parses a whole file image (length prefix + header + data). Sets `*data_offset` to where the data area
/// starts. Throws Error(kInvalidCheckpoint) for a truncated image or a header length beyond it.
SafetensorsHeader parse_safetensors_image(std::span<const uint8_t> image, const std::string& origin,
                                          uint64_t* data_offset);

/// A safetensors file mapped read-only. Tensor views point into the mapping (zero-copy) and stay valid
/// while the file object lives. Move-only.
class SafetensorsFile {
 public:
  /// Opens, maps and validates `path`. Throws Error(kNotFound / kIo / kInvalidCheckpoint) naming the file.
  static SafetensorsFile open(const std::filesystem::path& path);

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  const std::filesystem::path& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  const std::vector<SafetensorsEntry>& entries() const { return header_.entries(); }
  const SafetensorsEntry* find(std::string_view name) const { return header_.find(name); }
  bool has(std::string_view name) const { return find(name) != nullptr; }

  /// Zero-copy view of an entry of this file.
  TensorView view(const SafetensorsEntry& entry) const;
  /// Zero-copy view by name; throws Error(kNotFound) naming the file and tensor.
  TensorView tensor(std::string_view name) const;
  /// The raw bytes of an entry.
  std::span<const uint8_t> bytes(const SafetensorsEntry& entry) const;

  uint64_t file_size() const { return size_; }
  uint64_t data_offset() const { return data_offset_; }

 private:
  SafetensorsFile() = default;
  void unmap();

  std::filesystem::path path_;
  SafetensorsHeader header_;
  const uint8_t* base_ = nullptr;  // the mapping (nullptr for an empty file)
  uint64_t size_ = 0;
  uint64_t data_offset_ = 0;
};

}  // namespace dsv4
