#include "runtime/checkpoint/writer.h"

#include <algorithm>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <unordered_map>
#include <unordered_set>

#include "runtime/checkpoint/expected_tensors.h"
#include "runtime/checkpoint/index.h"
#include "runtime/checkpoint/quant.h"
#include "runtime/core/error.h"
#include "runtime/core/float_formats.h"

namespace dsv4 {

// ---- SafetensorsWriter ----------------------------------------------------------------------------------

SafetensorsWriter::SafetensorsWriter(const std::filesystem::path& path, std::vector<TensorSpec> tensors,
                                     const std::vector<std::pair<std::string, std::string>>& metadata)
    : path_(path), tensors_(std::move(tensors)) {
  std::stable_sort(tensors_.begin(), tensors_.end(), [](const TensorSpec& a, const TensorSpec& b) {
    return dtype_bits(a.dtype) > dtype_bits(b.dtype);
  });
  std::unordered_set<std::string_view> seen;
  std::string header = "{";
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header += "\"__metadata__\":" + meta.dump();
  }
  uint64_t offset = 0;
  for (const TensorSpec& t : tensors_) {
    DSV4_CHECK_ARG(seen.insert(t.name).second) << path.string() << ": tensor '" << t.name << "' given twice";
    DSV4_CHECK_ARG(t.dtype != DType::kFP4E2M1)
        << path.string() << ": tensor '" << t.name << "': FP4 is stored as I8 in safetensors";
    nlohmann::ordered_json entry;
    entry["dtype"] = dtype_name(t.dtype);
    entry["shape"] = std::vector<int64_t>(t.shape.begin(), t.shape.end());
    entry["data_offsets"] = {offset, offset + t.nbytes()};
    if (header.size() > 1) header += ",";
    header += nlohmann::json(t.name).dump() + ":" + entry.dump();
    offset += t.nbytes();
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');  // data area starts 8-byte aligned
  data_bytes_ = offset;

  file_ = std::fopen(path.c_str(), "wb");
  DSV4_CHECK_CODE(file_ != nullptr, ErrorCode::kIo) << path.string() << ": cannot create: " << std::strerror(errno);
  std::setvbuf(file_, nullptr, _IOFBF, 1 << 20);
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
  data_offset_ = 8 + header.size();
  DSV4_CHECK_CODE(std::fwrite(len, 1, 8, file_) == 8 && std::fwrite(header.data(), 1, header.size(), file_) == header.size(),
                  ErrorCode::kIo)
      << path.string() << ": write failed: " << std::strerror(errno);
}

SafetensorsWriter::~SafetensorsWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

void SafetensorsWriter::write(const void* data, size_t bytes) {
  DSV4_CHECK(file_ != nullptr) << path_.string() << ": write after finish";
  DSV4_CHECK(written_ + bytes <= data_bytes_)
      << path_.string() << ": " << (written_ + bytes - data_bytes_) << " bytes beyond the declared tensors";
  DSV4_CHECK_CODE(std::fwrite(data, 1, bytes, file_) == bytes, ErrorCode::kIo)
      << path_.string() << ": write failed: " << std::strerror(errno);
  written_ += bytes;
}

void SafetensorsWriter::skip(uint64_t bytes) {
  DSV4_CHECK(file_ != nullptr) << path_.string() << ": skip after finish";
  DSV4_CHECK(written_ + bytes <= data_bytes_) << path_.string() << ": skip beyond the declared tensors";
  written_ += bytes;
  DSV4_CHECK_CODE(std::fseek(file_, static_cast<long>(data_offset_ + written_), SEEK_SET) == 0, ErrorCode::kIo)
      << path_.string() << ": seek failed: " << std::strerror(errno);
}

void SafetensorsWriter::finish() {
  DSV4_CHECK(written_ == data_bytes_) << path_.string() << ": " << written_ << " of " << data_bytes_
                                      << " data bytes written";
  bool ok = std::fflush(file_) == 0;
  // A trailing skip() leaves the file short: extend it (as a hole) to its full size.
  ok = ok && ::ftruncate(::fileno(file_), static_cast<off_t>(data_offset_ + data_bytes_)) == 0;
  const int err = errno;
  const bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  DSV4_CHECK_CODE(ok && closed, ErrorCode::kIo) << path_.string() << ": write failed: " << std::strerror(err);
}

void write_safetensors_index(const std::filesystem::path& path,
                             const std::vector<std::pair<std::string, std::string>>& weight_map, uint64_t total_size) {
  // Written by hand: nlohmann's ordered_json looks keys up linearly, quadratic over ~145,000 entries.
  // Sorted by name, as transformers writes it (readers can then skip sorting).
  std::vector<const std::pair<std::string, std::string>*> sorted;
  sorted.reserve(weight_map.size());
  for (const auto& e : weight_map) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(), [](const auto* a, const auto* b) { return a->first < b->first; });
  std::string text = "{\n  \"metadata\": {\n    \"total_size\": " + std::to_string(total_size) +
                     "\n  },\n  \"weight_map\": {";
  for (size_t i = 0; i < weight_map.size(); ++i) {
    text += i == 0 ? "\n    " : ",\n    ";
    text += nlohmann::json(sorted[i]->first).dump() + ": " + nlohmann::json(sorted[i]->second).dump();
  }
  text += "\n  }\n}\n";
  std::ofstream out(path, std::ios::binary);
  out << text;
  DSV4_CHECK_CODE(out.good(), ErrorCode::kIo) << path.string() << ": write failed";
}

// ---- random checkpoint ----------------------------------------------------------------------------------

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001B3ull;
  return h;
}

// Per-tensor random stream. normal() sums four 16-bit uniforms of one draw (Irwin-Hall, mean 0, variance 1):
// only integer and correctly rounded arithmetic, so every platform produces the same bits.
class TensorRng {
 public:
  TensorRng(uint64_t seed, std::string_view name) : gen_(splitmix64(seed ^ fnv1a(name))) {}
  float normal() {
    const uint64_t x = gen_();
    const double s = static_cast<double>((x & 0xFFFF) + ((x >> 16) & 0xFFFF) + ((x >> 32) & 0xFFFF) + (x >> 48));
    return static_cast<float>((s - 131070.0) * kInvStd);
  }
  uint64_t next() { return gen_(); }

 private:
  // 1 / sqrt(4 * (65536^2 - 1) / 12): the standard deviation of the sum.
  static inline const double kInvStd = 1.0 / std::sqrt((65536.0 * 65536.0 - 1.0) / 3.0);
  std::mt19937_64 gen_;
};

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// How the values of one tensor are drawn: value = mean + stddev * normal().
struct Init {
  float mean = 0.0f;
  float stddev = 0.0f;
};

Init init_for(const ExpectedTensor& t) {
  const std::string_view n = t.name;
  const int64_t cols = t.shape.rank() >= 2 ? t.shape[t.shape.rank() - 1] : 1;
  const int64_t fan_in = t.role == TensorRole::kFp4Weight ? cols * 2 : cols;
  if (ends_with(n, "norm.weight")) return {1.0f, 0.0f};
  if (n == "embed.weight") return {0.0f, 1.0f};
  if (n.find("hc_") != std::string_view::npos) {
    if (ends_with(n, "_fn")) return {0.0f, static_cast<float>(0.1 / std::sqrt(static_cast<double>(cols)))};
    if (ends_with(n, "_base")) return {0.0f, 0.1f};
    if (ends_with(n, "_scale")) return {1.0f, 0.0f};
  }
  if (ends_with(n, "attn_sink") || ends_with(n, ".ape") || ends_with(n, "gate.bias")) return {0.0f, 0.01f};
  if (t.shape.rank() == 2) return {0.0f, static_cast<float>(1.0 / std::sqrt(static_cast<double>(fan_in)))};
  return {0.0f, 0.0f};
}

// Streams the values of one tensor into `w` (the shard writer), band by band.
class TensorGenerator {
 public:
  TensorGenerator(const ModelConfig& config, uint64_t seed, const std::vector<ExpectedTensor>& all)
      : c_(config), seed_(seed) {
    for (size_t i = 0; i < all.size(); ++i) by_name_.emplace(all[i].name, i);
    all_ = &all;
  }

  void write(const ExpectedTensor& t, SafetensorsWriter& w) {
    switch (t.role) {
      case TensorRole::kFp8Weight: fp8(t, &w, nullptr); return;
      case TensorRole::kFp8Scale: fp8(weight_of(t), nullptr, &w); return;
      case TensorRole::kFp4Weight: fp4(t, &w, nullptr); return;
      case TensorRole::kFp4Scale: fp4(weight_of(t), nullptr, &w); return;
      case TensorRole::kIndex: tid2eid(t, w); return;
      case TensorRole::kPlain: plain(t, w); return;
    }
  }

 private:
  // The weight a scale tensor belongs to: "<base>.scale" -> "<base>.weight".
  const ExpectedTensor& weight_of(const ExpectedTensor& scale) const {
    const std::string name = scale.name.substr(0, scale.name.size() - std::string(".scale").size()) + ".weight";
    auto it = by_name_.find(name);
    DSV4_CHECK(it != by_name_.end()) << "scale '" << scale.name << "' has no weight '" << name << "'";
    return (*all_)[it->second];
  }

  // FP8 weight [rows, cols] in bands of fp8_block rows: the bands of the weight and of its scale grid come
  // from the same stream, so writing the scale tensor regenerates the weight (cheap, and keeps shards
  // independent of each other).
  void fp8(const ExpectedTensor& weight, SafetensorsWriter* wq, SafetensorsWriter* ws) {
    const int64_t rows = weight.shape[0], cols = weight.shape[1], block = c_.fp8_block;
    const int64_t scols = (cols + block - 1) / block;
    const DType sdtype = c_.fp8_scale_dtype;
    TensorRng rng(seed_, weight.name);
    const Init init = init_for(weight);
    std::vector<float> band(static_cast<size_t>(block * cols));
    std::vector<uint8_t> q(band.size());
    std::vector<uint8_t> s(dtype_bytes(sdtype, scols));
    for (int64_t r0 = 0; r0 < rows; r0 += block) {
      const int64_t n = std::min(block, rows - r0);
      for (int64_t i = 0; i < n * cols; ++i) band[i] = init.mean + init.stddev * rng.normal();
      quantize_fp8_blocks(band.data(), n, cols, block, TensorView{q.data(), DType::kF8E4M3, {n, cols}},
                          TensorView{s.data(), sdtype, {1, scols}});
      if (wq != nullptr) wq->write(q.data(), static_cast<size_t>(n * cols));
      if (ws != nullptr) ws->write(s.data(), s.size());
    }
  }

  // Packed FP4 expert [rows, cols/2] with E8M0 [rows, cols/32], in bands of 64 rows.
  void fp4(const ExpectedTensor& weight, SafetensorsWriter* wp, SafetensorsWriter* ws) {
    const int64_t rows = weight.shape[0], cols = weight.shape[1] * 2, block = c_.fp4_block;
    constexpr int64_t kBand = 64;
    TensorRng rng(seed_, weight.name);
    const Init init = init_for(weight);
    std::vector<float> band(static_cast<size_t>(kBand * cols));
    std::vector<uint8_t> p(static_cast<size_t>(kBand * cols / 2)), s(static_cast<size_t>(kBand * cols / block));
    for (int64_t r0 = 0; r0 < rows; r0 += kBand) {
      const int64_t n = std::min(kBand, rows - r0);
      for (int64_t i = 0; i < n * cols; ++i) band[i] = init.mean + init.stddev * rng.normal();
      quantize_fp4(band.data(), n, cols, block, TensorView{p.data(), DType::kI8, {n, cols / 2}},
                   TensorView{s.data(), DType::kF8E8M0, {n, cols / block}});
      if (wp != nullptr) wp->write(p.data(), static_cast<size_t>(n * cols / 2));
      if (ws != nullptr) ws->write(s.data(), static_cast<size_t>(n * cols / block));
    }
  }

  // tid2eid [vocab, k]: k distinct expert ids in [0, E) per row.
  void tid2eid(const ExpectedTensor& t, SafetensorsWriter& w) {
    const int64_t rows = t.shape[0], k = t.shape[1], experts = c_.num_routed_experts;
    DSV4_CHECK_ARG(k <= experts) << t.name << ": " << k << " experts per token out of " << experts;
    TensorRng rng(seed_, t.name);
    std::vector<int64_t> row(static_cast<size_t>(k));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < k; ++j) {
        int64_t id;
        do {
          id = static_cast<int64_t>(rng.next() % static_cast<uint64_t>(experts));
        } while (std::find(row.begin(), row.begin() + j, id) != row.begin() + j);
        row[j] = id;
      }
      w.write(row.data(), row.size() * sizeof(int64_t));
    }
  }

  void plain(const ExpectedTensor& t, SafetensorsWriter& w) {
    const Init init = init_for(t);
    TensorRng rng(seed_, t.name);
    constexpr int64_t kChunk = 1 << 16;
    std::vector<uint8_t> buf(static_cast<size_t>(kChunk) * 8);
    const int64_t n = t.shape.numel();
    for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
      const int64_t m = std::min(kChunk, n - i0);
      for (int64_t i = 0; i < m; ++i) {
        const float v = init.stddev == 0.0f ? init.mean : init.mean + init.stddev * rng.normal();
        switch (t.dtype) {
          case DType::kF32: std::memcpy(buf.data() + 4 * i, &v, 4); break;
          case DType::kBF16: {
            const uint16_t b = f32_to_bf16(v);
            std::memcpy(buf.data() + 2 * i, &b, 2);
            break;
          }
          case DType::kF16: {
            const uint16_t h = f32_to_f16(v);
            std::memcpy(buf.data() + 2 * i, &h, 2);
            break;
          }
          default: DSV4_THROW(kUnsupported) << t.name << ": no random init for dtype " << dtype_name(t.dtype);
        }
      }
      w.write(buf.data(), dtype_bytes(t.dtype, m));
    }
  }

  const ModelConfig& c_;
  uint64_t seed_;
  const std::vector<ExpectedTensor>* all_ = nullptr;
  std::unordered_map<std::string, size_t> by_name_;
};

std::string shard_name(int index, int count) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "model-%05d-of-%05d.safetensors", index + 1, count);
  return buf;
}

}  // namespace

void make_random_checkpoint(const ModelConfig& config, uint64_t seed, const std::filesystem::path& out_dir,
                            int num_shards, const std::vector<std::filesystem::path>& tokenizer_files) {
  const std::vector<ExpectedTensor> tensors = expected_tensors(config);
  const int64_t n = static_cast<int64_t>(tensors.size());
  DSV4_CHECK_ARG(num_shards >= 1 && num_shards <= n)
      << "--shards must be in [1, " << n << "] (the number of tensors), got " << num_shards;
  std::error_code ec;
  // Inputs first: a missing tokenizer must not leave a checkpoint behind that looks complete.
  for (const auto& f : tokenizer_files) {
    DSV4_CHECK_CODE(std::filesystem::is_regular_file(f, ec), ErrorCode::kNotFound) << f.string() << ": no such file";
  }
  std::filesystem::create_directories(out_dir, ec);
  DSV4_CHECK_CODE(!ec, ErrorCode::kIo) << out_dir.string() << ": cannot create: " << ec.message();
  // A leftover index or single file from an earlier run would decide how the directory is read.
  std::filesystem::remove(out_dir / kIndexFileName, ec);
  std::filesystem::remove(out_dir / kSingleShardFileName, ec);

  // Contiguous runs of the official order, cut near equal byte counts; every shard non-empty.
  uint64_t total = 0;
  for (const auto& t : tensors) total += dtype_bytes(t.dtype, t.shape.numel());
  std::vector<int> shard_of(tensors.size());
  uint64_t cum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t bytes = dtype_bytes(tensors[i].dtype, tensors[i].shape.numel());
    const long double mid = static_cast<long double>(cum) + bytes / 2.0L;
    int s = total == 0 ? 0 : static_cast<int>(mid * num_shards / static_cast<long double>(total));
    const int prev = i == 0 ? 0 : shard_of[i - 1];
    s = std::clamp(s, prev, i == 0 ? 0 : prev + 1);
    s = std::max<int64_t>(s, num_shards - (n - i));  // leave at least one tensor for each later shard
    shard_of[i] = std::min(s, num_shards - 1);
    cum += bytes;
  }

  TensorGenerator gen(config, seed, tensors);
  std::vector<std::pair<std::string, std::string>> weight_map;
  weight_map.reserve(tensors.size());
  for (int s = 0; s < num_shards; ++s) {
    const std::string file = num_shards == 1 ? std::string(kSingleShardFileName) : shard_name(s, num_shards);
    std::vector<TensorSpec> specs;
    std::unordered_map<std::string, size_t> index_of;
    for (int64_t i = 0; i < n; ++i) {
      if (shard_of[i] != s) continue;
      specs.push_back({tensors[i].name, tensors[i].dtype, tensors[i].shape});
      index_of.emplace(tensors[i].name, static_cast<size_t>(i));
      weight_map.emplace_back(tensors[i].name, file);
    }
    SafetensorsWriter writer(out_dir / file, std::move(specs));
    for (const TensorSpec& spec : writer.order()) gen.write(tensors[index_of.at(spec.name)], writer);
    writer.finish();
  }
  if (num_shards > 1) write_safetensors_index(out_dir / kIndexFileName, weight_map, total);

  {
    std::ofstream out(out_dir / "config.json", std::ios::binary);
    out << model_config_to_json(config);
    DSV4_CHECK_CODE(out.good(), ErrorCode::kIo) << (out_dir / "config.json").string() << ": write failed";
  }
  for (const auto& f : tokenizer_files) {
    DSV4_CHECK_CODE(std::filesystem::is_regular_file(f, ec), ErrorCode::kNotFound) << f.string() << ": no such file";
    std::filesystem::copy_file(f, out_dir / f.filename(), std::filesystem::copy_options::overwrite_existing, ec);
    DSV4_CHECK_CODE(!ec, ErrorCode::kIo) << f.string() << ": cannot copy to " << out_dir.string() << ": " << ec.message();
  }
}

}  // namespace dsv4
