// The safetensors header parser and validator. Self-contained on purpose (it needs only runtime/core's
// dtype, error and tensor pieces and nlohmann's header): the libFuzzer target compiles this file directly.
#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "runtime/checkpoint/safetensors.h"
#include "runtime/core/error.h"

// Error prefixes inside the handler: the file, and the tensor being parsed.
#define fail_file() DSV4_THROW(kInvalidCheckpoint) << origin_ << ": "
#define fail() DSV4_THROW(kInvalidCheckpoint) << origin_ << ": tensor '" << name() << "': "

namespace dsv4 {
namespace {

// One record while parsing: the name is an offset into the growing name buffer (the buffer may move).
struct RawEntry {
  uint64_t name_offset = 0;
  uint32_t name_size = 0;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// SAX handler for the header object {"__metadata__": {str: str}, name: {dtype, shape, data_offsets}, ...}.
// Throws dsv4::Error on the first problem; nlohmann's parser unwinds cleanly through it.
class HeaderHandler {
 public:
  using json = nlohmann::json;

  HeaderHandler(const std::string& origin, uint64_t data_size) : origin_(origin), data_size_(data_size) {}

  bool null() { return scalar("null"); }
  bool boolean(bool) { return scalar("a boolean"); }
  bool number_integer(json::number_integer_t v) {
    if (state_ == State::kShape || state_ == State::kOffsets) {
      fail() << "negative value " << v << " in '" << field_name() << "'";
    }
    return scalar("a number");
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (state_ == State::kShape) {
      if (current_.shape.rank() == Shape::kMaxDims) fail() << "shape has more than " << Shape::kMaxDims << " dims";
      if (v > static_cast<uint64_t>(INT64_MAX)) fail() << "shape dim " << v << " is too large";
      current_.shape.push_back(static_cast<int64_t>(v));
      return true;
    }
    if (state_ == State::kOffsets) {
      if (num_offsets_ == 2) fail() << "data_offsets has more than 2 values";
      (num_offsets_ == 0 ? current_.begin : current_.end) = v;
      ++num_offsets_;
      return true;
    }
    return scalar("a number");
  }
  bool number_float(json::number_float_t, const std::string& text) {
    if (state_ == State::kShape || state_ == State::kOffsets) {
      fail() << "non-integer value " << text << " in '" << field_name() << "'";
    }
    return scalar("a number");
  }
  bool binary(json::binary_t&) { return scalar("binary"); }

  bool string(std::string& value) {
    switch (state_) {
      case State::kMetadata:
        metadata_.emplace_back(std::move(metadata_key_), value);
        return true;
      case State::kEntry:
        if (field_ == Field::kDtype) {
          auto dtype = parse_dtype(value);
          if (!dtype) fail() << "unknown dtype '" << value << "'";
          current_.dtype = *dtype;
          seen_ |= kSeenDtype;
          return true;
        }
        break;
      default: break;
    }
    return scalar("a string");
  }

  bool start_object(std::size_t) {
    switch (state_) {
      case State::kStart: state_ = State::kTop; return true;
      case State::kTopValue:
        if (in_metadata_key_) {
          state_ = State::kMetadata;
        } else {
          state_ = State::kEntry;
          current_ = RawEntry{};
          current_.name_offset = current_name_offset_;
          current_.name_size = current_name_size_;
          seen_ = 0;
        }
        return true;
      default: return scalar("an object");
    }
  }

  bool end_object() {
    switch (state_) {
      case State::kTop: state_ = State::kDone; return true;
      case State::kMetadata: state_ = State::kTop; return true;
      case State::kEntry: finish_entry(); state_ = State::kTop; return true;
      default: fail() << "unexpected end of object"; return false;
    }
  }

  bool start_array(std::size_t) {
    if (state_ == State::kEntry && field_ == Field::kShape) {
      state_ = State::kShape;
      return true;
    }
    if (state_ == State::kEntry && field_ == Field::kOffsets) {
      state_ = State::kOffsets;
      num_offsets_ = 0;
      return true;
    }
    return scalar("an array");
  }

  bool end_array() {
    if (state_ == State::kShape) {
      seen_ |= kSeenShape;
      state_ = State::kEntry;
      return true;
    }
    if (state_ == State::kOffsets) {
      if (num_offsets_ != 2) fail() << "data_offsets must hold exactly 2 values, got " << num_offsets_;
      seen_ |= kSeenOffsets;
      state_ = State::kEntry;
      return true;
    }
    fail() << "unexpected end of array";
    return false;
  }

  bool key(std::string& k) {
    switch (state_) {
      case State::kTop:
        if (k == "__metadata__") {
          if (have_metadata_) fail_file() << "duplicate __metadata__";
          have_metadata_ = true;
          in_metadata_key_ = true;
        } else {
          if (k.empty()) fail_file() << "a tensor has an empty name";
          in_metadata_key_ = false;
          current_name_offset_ = names_.size();
          current_name_size_ = static_cast<uint32_t>(k.size());
          names_.append(k);
        }
        state_ = State::kTopValue;
        return true;
      case State::kMetadata: metadata_key_ = k; return true;
      case State::kEntry: {
        Field f;
        uint32_t bit;
        if (k == "dtype") {
          f = Field::kDtype, bit = kSeenDtype;
        } else if (k == "shape") {
          f = Field::kShape, bit = kSeenShape;
        } else if (k == "data_offsets") {
          f = Field::kOffsets, bit = kSeenOffsets;
        } else {
          fail() << "unknown field '" << k << "'";
          return false;
        }
        if (seen_ & bit) fail() << "field '" << k << "' given twice";
        field_ = f;
        return true;
      }
      default: fail() << "unexpected key '" << k << "'"; return false;
    }
  }

  bool parse_error(std::size_t position, const std::string& last_token, const nlohmann::detail::exception& ex) {
    std::string where;
    if (current_name_size_ > 0 && !in_metadata_key_) where = " (at tensor '" + std::string(name()) + "')";
    fail_file() << "malformed JSON header at byte " << position << where << ": " << ex.what();
    return false;
  }

  bool done() const { return state_ == State::kDone; }

  void finish(std::vector<SafetensorsEntry>* out_entries, std::vector<std::pair<std::string, std::string>>* out_metadata,
              std::unique_ptr<char[]>* out_names) {
    auto names = std::make_unique<char[]>(names_.size() + 1);
    std::memcpy(names.get(), names_.data(), names_.size());
    out_entries->reserve(raw_.size());
    for (const RawEntry& r : raw_) {
      out_entries->push_back(SafetensorsEntry{std::string_view(names.get() + r.name_offset, r.name_size), r.dtype,
                                              r.shape, r.begin, r.end});
    }
    *out_metadata = std::move(metadata_);
    *out_names = std::move(names);
  }

 private:
  enum class State { kStart, kTop, kTopValue, kMetadata, kEntry, kShape, kOffsets, kDone };
  enum class Field { kDtype, kShape, kOffsets };
  static constexpr uint32_t kSeenDtype = 1, kSeenShape = 2, kSeenOffsets = 4;

  std::string_view name() const { return std::string_view(names_).substr(current_name_offset_, current_name_size_); }
  const char* field_name() const {
    return field_ == Field::kDtype ? "dtype" : field_ == Field::kShape ? "shape" : "data_offsets";
  }


  // A value of a kind the current position does not allow.
  bool scalar(const char* what) {
    switch (state_) {
      case State::kStart: fail_file() << "header is " << what << ", not a JSON object"; break;
      case State::kTopValue:
        if (in_metadata_key_) fail_file() << "__metadata__ is " << what << ", not an object of strings";
        fail() << "entry is " << what << ", not an object";
        break;
      case State::kMetadata:
        fail_file() << "__metadata__ value of '" << metadata_key_ << "' is " << what << ", not a string";
        break;
      case State::kEntry: fail() << "field '" << field_name() << "' is " << what; break;
      case State::kShape:
      case State::kOffsets: fail() << "'" << field_name() << "' holds " << what; break;
      default: fail_file() << "unexpected " << what; break;
    }
    return false;
  }

  void finish_entry() {
    if (!(seen_ & kSeenDtype)) fail() << "missing 'dtype'";
    if (!(seen_ & kSeenShape)) fail() << "missing 'shape'";
    if (!(seen_ & kSeenOffsets)) fail() << "missing 'data_offsets'";
    if (current_.begin > current_.end) {
      fail() << "data_offsets [" << current_.begin << ", " << current_.end << "] end before they begin";
    }
    if (current_.end > data_size_) {
      fail() << "data_offsets [" << current_.begin << ", " << current_.end << "] run past the data area of "
             << data_size_ << " bytes";
    }
    uint64_t numel = 1;
    for (int64_t d : current_.shape) {
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel)) fail() << "shape overflows";
    }
    uint64_t bits = static_cast<uint64_t>(dtype_bits(current_.dtype));
    uint64_t total_bits;
    if (__builtin_mul_overflow(numel, bits, &total_bits)) fail() << "shape overflows";
    uint64_t expected = (total_bits + 7) / 8;
    if (current_.end - current_.begin != expected) {
      fail() << "holds " << (current_.end - current_.begin) << " bytes but " << dtype_name(current_.dtype) << " "
             << current_.shape.str() << " needs " << expected;
    }
    raw_.push_back(current_);
  }

  const std::string& origin_;
  uint64_t data_size_;
  State state_ = State::kStart;
  Field field_ = Field::kDtype;
  uint32_t seen_ = 0;
  int num_offsets_ = 0;
  bool have_metadata_ = false;
  bool in_metadata_key_ = false;
  std::string metadata_key_;
  uint64_t current_name_offset_ = 0;
  uint32_t current_name_size_ = 0;
  RawEntry current_;
  std::string names_;
  std::vector<RawEntry> raw_;
  std::vector<std::pair<std::string, std::string>> metadata_;
};

}  // namespace

#undef fail_file
#undef fail

const SafetensorsEntry* SafetensorsHeader::find(std::string_view name) const {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), name,
                             [](const SafetensorsEntry& e, std::string_view n) { return e.name < n; });
  return (it != entries_.end() && it->name == name) ? &*it : nullptr;
}

SafetensorsHeader parse_safetensors_header(std::string_view json, uint64_t data_size, const std::string& origin) {
  DSV4_CHECK_CODE(json.size() <= kSafetensorsMaxHeaderBytes, ErrorCode::kInvalidCheckpoint)
      << origin << ": header of " << json.size() << " bytes exceeds the limit of " << kSafetensorsMaxHeaderBytes;
  HeaderHandler handler(origin, data_size);
  nlohmann::json::sax_parse(json.begin(), json.end(), &handler);
  DSV4_CHECK_CODE(handler.done(), ErrorCode::kInvalidCheckpoint) << origin << ": incomplete JSON header";

  SafetensorsHeader header;
  handler.finish(&header.entries_, &header.metadata_, &header.names_);
  auto& entries = header.entries_;

  // Duplicates: sort by name (the order find() relies on), then neighbours must differ.
  std::sort(entries.begin(), entries.end(),
            [](const SafetensorsEntry& a, const SafetensorsEntry& b) { return a.name < b.name; });
  for (size_t i = 1; i < entries.size(); ++i) {
    DSV4_CHECK_CODE(entries[i].name != entries[i - 1].name, ErrorCode::kInvalidCheckpoint)
        << origin << ": tensor '" << entries[i].name << "' is listed twice";
  }

  // Overlaps: in offset order, no tensor may start before the previous ones end.
  std::vector<uint32_t> order(entries.size());
  for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    return entries[a].begin != entries[b].begin ? entries[a].begin < entries[b].begin : entries[a].end < entries[b].end;
  });
  uint64_t max_end = 0;
  const SafetensorsEntry* max_owner = nullptr;
  for (uint32_t i : order) {
    const SafetensorsEntry& e = entries[i];
    DSV4_CHECK_CODE(e.begin >= max_end, ErrorCode::kInvalidCheckpoint)
        << origin << ": tensor '" << e.name << "' [" << e.begin << ", " << e.end << ") overlaps tensor '"
        << max_owner->name << "' [" << max_owner->begin << ", " << max_owner->end << ")";
    if (e.end > max_end || max_owner == nullptr) {
      max_end = std::max(max_end, e.end);
      max_owner = &e;
    }
  }
  return header;
}

SafetensorsHeader parse_safetensors_image(std::span<const uint8_t> image, const std::string& origin,
                                          uint64_t* data_offset) {
  DSV4_CHECK_CODE(image.size() >= 8, ErrorCode::kInvalidCheckpoint)
      << origin << ": truncated file of " << image.size() << " bytes (no 8-byte header length)";
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | image[static_cast<size_t>(i)];  // little-endian on any host
  DSV4_CHECK_CODE(n <= kSafetensorsMaxHeaderBytes, ErrorCode::kInvalidCheckpoint)
      << origin << ": header length " << n << " exceeds the limit of " << kSafetensorsMaxHeaderBytes;
  DSV4_CHECK_CODE(n <= image.size() - 8, ErrorCode::kInvalidCheckpoint)
      << origin << ": header length " << n << " runs past the end of the file (" << image.size() << " bytes)";
  std::string_view json(reinterpret_cast<const char*>(image.data()) + 8, static_cast<size_t>(n));
  *data_offset = 8 + n;
  return parse_safetensors_header(json, image.size() - 8 - n, origin);
}

}  // namespace dsv4
