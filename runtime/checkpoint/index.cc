#include "runtime/checkpoint/index.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "runtime/core/error.h"

namespace dsv4 {

// SAX handler for the index. Unknown top-level keys and unknown metadata keys are skipped whatever their
// value; weight_map and metadata.total_size are checked strictly.
class IndexBuilder {
 public:
  using json = nlohmann::json;

  explicit IndexBuilder(const std::string& origin) : origin_(origin) {}

  bool null() { return scalar("null"); }
  bool boolean(bool) { return scalar("a boolean"); }
  bool number_integer(json::number_integer_t) { return scalar("a negative number"); }
  bool number_unsigned(json::number_unsigned_t v) {
    if (skip_ == 0 && where_ == Where::kMetadata && next_ == Next::kTotalSize) {
      total_size_ = v;
      return true;
    }
    return scalar("a number");
  }
  bool number_float(json::number_float_t, const std::string&) { return scalar("a fractional number"); }
  bool binary(json::binary_t&) { return scalar("binary"); }

  bool string(std::string& value) {
    if (skip_ == 0 && where_ == Where::kWeightMap) {
      add_entry(value);
      return true;
    }
    return scalar("a string");
  }

  bool start_object(std::size_t) { return open("an object", true); }
  bool start_array(std::size_t) { return open("an array", false); }

  bool end_object() {
    if (skip_ > 0) {
      --skip_;
    } else if (where_ == Where::kTop) {
      where_ = Where::kDone;
    } else {
      where_ = Where::kTop;  // end of metadata or weight_map
    }
    return true;
  }
  bool end_array() {
    --skip_;  // arrays are only ever skipped
    return true;
  }

  bool key(std::string& k) {
    if (skip_ > 0) return true;
    switch (where_) {
      case Where::kTop:
        if (k == "weight_map") {
          DSV4_CHECK_CODE(!have_weight_map_, ErrorCode::kInvalidCheckpoint) << origin_ << ": weight_map given twice";
          next_ = Next::kWeightMap;
        } else if (k == "metadata") {
          next_ = Next::kMetadata;
        } else {
          next_ = Next::kIgnored;
        }
        break;
      case Where::kMetadata: next_ = k == "total_size" ? Next::kTotalSize : Next::kIgnored; break;
      case Where::kWeightMap:
        DSV4_CHECK_CODE(!k.empty(), ErrorCode::kInvalidCheckpoint) << origin_ << ": weight_map has an empty tensor name";
        name_offset_ = names_.size();
        name_size_ = static_cast<uint32_t>(k.size());
        names_.append(k);
        next_ = Next::kShard;
        break;
      default: break;
    }
    return true;
  }

  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& ex) {
    std::string where;
    if (name_size_ > 0) where = " (after tensor '" + names_.substr(name_offset_, name_size_) + "')";
    DSV4_THROW(kInvalidCheckpoint) << origin_ << ": malformed JSON at byte " << position << where << ": " << ex.what();
    return false;
  }

  void finish(CheckpointIndex* index) {
    DSV4_CHECK_CODE(where_ == Where::kDone, ErrorCode::kInvalidCheckpoint) << origin_ << ": incomplete JSON";
    DSV4_CHECK_CODE(have_weight_map_, ErrorCode::kInvalidCheckpoint) << origin_ << ": no weight_map";
    index->names_ = std::make_unique<char[]>(names_.size() + 1);
    std::memcpy(index->names_.get(), names_.data(), names_.size());
    index->entries_.reserve(raw_.size());
    for (const Raw& r : raw_) {
      index->entries_.push_back({std::string_view(index->names_.get() + r.offset, r.size), r.shard});
    }
    auto& e = index->entries_;
    const auto by_name = [](const CheckpointIndex::Entry& a, const CheckpointIndex::Entry& b) { return a.name < b.name; };
    // Writers (transformers, make-checkpoint) emit weight_map sorted by name: check before sorting.
    if (!std::is_sorted(e.begin(), e.end(), by_name)) std::sort(e.begin(), e.end(), by_name);
    for (size_t i = 1; i < e.size(); ++i) {
      DSV4_CHECK_CODE(e[i].name != e[i - 1].name, ErrorCode::kInvalidCheckpoint)
          << origin_ << ": tensor '" << e[i].name << "' is listed twice in weight_map (shards '"
          << shards_[e[i - 1].shard] << "' and '" << shards_[e[i].shard] << "')";
    }
    index->shards_ = std::move(shards_);
    index->total_size_ = total_size_;
  }

 private:
  enum class Where { kStart, kTop, kMetadata, kWeightMap, kDone };
  enum class Next { kIgnored, kWeightMap, kMetadata, kTotalSize, kShard };
  struct Raw {
    uint64_t offset;
    uint32_t size;
    uint32_t shard;
  };

  std::string tensor() const { return names_.substr(name_offset_, name_size_); }

  bool open(const char* what, bool is_object) {
    if (skip_ > 0) {
      ++skip_;
      return true;
    }
    switch (where_) {
      case Where::kStart:
        DSV4_CHECK_CODE(is_object, ErrorCode::kInvalidCheckpoint) << origin_ << ": the index is " << what << ", not an object";
        where_ = Where::kTop;
        return true;
      case Where::kTop:
        if (next_ == Next::kWeightMap || next_ == Next::kMetadata) {
          DSV4_CHECK_CODE(is_object, ErrorCode::kInvalidCheckpoint)
              << origin_ << ": " << (next_ == Next::kWeightMap ? "weight_map" : "metadata") << " is " << what
              << ", not an object";
          if (next_ == Next::kWeightMap) have_weight_map_ = true;
          where_ = next_ == Next::kWeightMap ? Where::kWeightMap : Where::kMetadata;
          return true;
        }
        skip_ = 1;
        return true;
      case Where::kMetadata:
        DSV4_CHECK_CODE(next_ != Next::kTotalSize, ErrorCode::kInvalidCheckpoint)
            << origin_ << ": metadata.total_size is " << what << ", not a byte count";
        skip_ = 1;
        return true;
      case Where::kWeightMap:
        DSV4_THROW(kInvalidCheckpoint) << origin_ << ": weight_map entry of tensor '" << tensor() << "' is " << what
                                       << ", not a shard file name";
        return false;
      default: DSV4_THROW(kInvalidCheckpoint) << origin_ << ": unexpected " << what; return false;
    }
  }

  // A scalar where it is not the expected one.
  bool scalar(const char* what) {
    if (skip_ > 0) return true;
    switch (where_) {
      case Where::kStart: DSV4_THROW(kInvalidCheckpoint) << origin_ << ": the index is " << what << ", not an object";
      case Where::kTop:
        DSV4_CHECK_CODE(next_ != Next::kWeightMap && next_ != Next::kMetadata, ErrorCode::kInvalidCheckpoint)
            << origin_ << ": " << (next_ == Next::kWeightMap ? "weight_map" : "metadata") << " is " << what
            << ", not an object";
        return true;
      case Where::kMetadata:
        DSV4_CHECK_CODE(next_ != Next::kTotalSize, ErrorCode::kInvalidCheckpoint)
            << origin_ << ": metadata.total_size is " << what << ", not a byte count";
        return true;
      case Where::kWeightMap:
        DSV4_THROW(kInvalidCheckpoint) << origin_ << ": weight_map entry of tensor '" << tensor() << "' is " << what
                                       << ", not a shard file name";
      default: DSV4_THROW(kInvalidCheckpoint) << origin_ << ": unexpected " << what;
    }
    return false;
  }

  void add_entry(const std::string& shard) {
    uint32_t id;
    if (last_shard_ < shards_.size() && shards_[last_shard_] == shard) {
      id = last_shard_;  // entries usually come grouped by shard
    } else {
      auto it = shard_ids_.find(shard);
      if (it == shard_ids_.end()) {
        // Shard names are joined to the checkpoint directory: only plain file names are accepted.
        DSV4_CHECK_CODE(!shard.empty() && shard != "." && shard != ".." && shard.find('/') == std::string::npos &&
                            shard.find('\\') == std::string::npos && shard.find('\0') == std::string::npos,
                        ErrorCode::kInvalidCheckpoint)
            << origin_ << ": tensor '" << tensor() << "' maps to '" << shard << "', which is not a plain file name";
        it = shard_ids_.emplace(shard, static_cast<uint32_t>(shards_.size())).first;
        shards_.push_back(shard);
      }
      id = it->second;
    }
    last_shard_ = id;
    raw_.push_back({name_offset_, name_size_, id});
  }

  const std::string& origin_;
  Where where_ = Where::kStart;
  Next next_ = Next::kIgnored;
  int skip_ = 0;
  bool have_weight_map_ = false;
  std::optional<uint64_t> total_size_;
  std::string names_;
  uint64_t name_offset_ = 0;
  uint32_t name_size_ = 0;
  std::vector<Raw> raw_;
  std::vector<std::string> shards_;
  std::unordered_map<std::string, uint32_t> shard_ids_;
  uint32_t last_shard_ = UINT32_MAX;
};

CheckpointIndex CheckpointIndex::parse(std::string_view json, const std::string& origin) {
  IndexBuilder builder(origin);
  nlohmann::json::sax_parse(json.begin(), json.end(), &builder);
  CheckpointIndex index;
  builder.finish(&index);
  return index;
}

CheckpointIndex CheckpointIndex::load(const std::filesystem::path& path) {
  std::error_code ec;
  DSV4_CHECK_CODE(std::filesystem::exists(path, ec), ErrorCode::kNotFound) << path.string() << ": no such file";
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  DSV4_CHECK_CODE(in.good(), ErrorCode::kIo) << path.string() << ": cannot open";
  std::string text(static_cast<size_t>(in.tellg()), '\0');
  in.seekg(0);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  DSV4_CHECK_CODE(in.good(), ErrorCode::kIo) << path.string() << ": read failed";
  return parse(text, path.string());
}

const CheckpointIndex::Entry* CheckpointIndex::find(std::string_view name) const {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), name,
                             [](const Entry& e, std::string_view n) { return e.name < n; });
  return (it != entries_.end() && it->name == name) ? &*it : nullptr;
}

}  // namespace dsv4
