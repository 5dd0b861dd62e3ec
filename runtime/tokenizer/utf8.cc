// UTF-8 validation, lossy decoding and the incremental detokenizer (declared in bpe.h).
//
// A byte-level BPE token can end in the middle of a multi-byte character (CJK and emoji often span two
// tokens), so a streamed decode must hold those bytes back. The rules follow the Unicode "maximal subpart"
// practice, which is also what Rust's String::from_utf8_lossy and Python's errors="replace" do.
#include <cstdint>
#include <string>
#include <string_view>

#include "runtime/tokenizer/bpe.h"

namespace dsv4 {
namespace {

enum class Step { kValid, kInvalid, kIncomplete };

// Classifies the sequence starting at `i`; `len` gets the bytes it covers (for kInvalid, the maximal
// subpart to replace by one U+FFFD; for kIncomplete, the bytes available).
Step classify(std::string_view s, size_t i, size_t& len) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  if (b0 < 0x80) {
    len = 1;
    return Step::kValid;
  }
  size_t need = 0;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;       // no overlong forms
    if (b0 == 0xED) hi = 0x9F;       // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;       // nothing above U+10FFFF
  } else {
    len = 1;
    return Step::kInvalid;
  }
  for (size_t k = 1; k < need; ++k) {
    if (i + k >= s.size()) {
      len = k;
      return Step::kIncomplete;
    }
    const auto b = static_cast<uint8_t>(s[i + k]);
    const bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) {
      len = k;
      return Step::kInvalid;
    }
  }
  len = need;
  return Step::kValid;
}

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

}  // namespace

bool utf8_is_valid(std::string_view bytes) {
  for (size_t i = 0, len = 0; i < bytes.size(); i += len) {
    if (classify(bytes, i, len) != Step::kValid) return false;
  }
  return true;
}

size_t utf8_complete_prefix(std::string_view bytes) {
  for (size_t i = 0, len = 0; i < bytes.size(); i += len) {
    if (classify(bytes, i, len) == Step::kIncomplete) return i;
  }
  return bytes.size();
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0, len = 0; i < bytes.size(); i += len) {
    if (classify(bytes, i, len) == Step::kValid) {
      out.append(bytes.substr(i, len));
    } else {
      out.append(kReplacement);  // an incomplete sequence at the very end is one maximal subpart too
    }
  }
  return out;
}

std::string IncrementalDetokenizer::push(TokenId id) {
  pending_ += tokenizer_->token_bytes(id);
  const size_t complete = utf8_complete_prefix(pending_);
  std::string out = utf8_lossy(std::string_view(pending_).substr(0, complete));
  pending_.erase(0, complete);
  return out;
}

std::string IncrementalDetokenizer::finish() {
  std::string out = utf8_lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace dsv4
