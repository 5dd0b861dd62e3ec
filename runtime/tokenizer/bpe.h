// Byte-level BPE tokenizer loaded from a Hugging Face `tokenizer.json`, with the semantics of the Rust
// `tokenizers` library (the oracle for token ids, see tests/golden/tokenizer/):
//
//   added tokens (matched first, leftmost-longest; non-normalized ones before normalized ones)
//   -> pre-tokenizer Split(regex, Isolated) steps, each applied to every piece of the previous step
//   -> ByteLevel (bytes -> printable chars; here we stay on raw bytes and map vocab entries back instead)
//   -> BPE merges by rank (lowest rank first, leftmost on ties).
//
// Regexes run through PCRE2 in UTF+UCP mode (JIT when available) so that the \p{..} classes and lookaheads
// of tokenizer.json behave as in Oniguruma, which `tokenizers` uses.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4 {

using TokenId = int32_t;

/// A token matched verbatim in the input before pre-tokenization (BOS, `<｜User｜>`, `<think>`, ...).
struct AddedToken {
  TokenId id = 0;
  std::string content;
  /// `special` only marks the token for callers (e.g. hiding it); encoding treats all added tokens alike.
  bool special = false;
  /// `tokenizers` matches non-normalized added tokens on the raw text first, normalized ones afterwards on
  /// the remaining pieces. With an empty normalizer only the order of the two passes matters.
  bool normalized = false;
};

/// Byte-level BPE tokenizer. Immutable after loading except for add_tokens(); encode() is thread-safe.
class BpeTokenizer {
 public:
  /// Loads and validates a tokenizer.json. Errors (kInvalidArgument / kUnsupported / kNotFound) name the file
  /// and the key that is wrong.
  static BpeTokenizer from_file(const std::filesystem::path& path);
  /// Same from the JSON text; `origin` names the source in error messages.
  static BpeTokenizer from_json(std::string_view json_text, std::string_view origin);

  BpeTokenizer(BpeTokenizer&&) noexcept;
  BpeTokenizer& operator=(BpeTokenizer&&) noexcept;
  ~BpeTokenizer();

  /// Adds added tokens, replacing any existing added token with the same id or content.
  void add_tokens(std::span<const AddedToken> tokens);

  /// Text (UTF-8; invalid UTF-8 is rejected with kInvalidArgument) -> ids. Added tokens in the text are
  /// recognised when `parse_added_tokens` (the `tokenizers` default); otherwise they are encoded as text.
  std::vector<TokenId> encode(std::string_view text, bool parse_added_tokens = true) const;

  /// Ids -> the exact bytes they stand for (may end in an incomplete UTF-8 sequence). Ids outside the
  /// vocabulary throw kOutOfRange.
  std::string decode_bytes(std::span<const TokenId> ids) const;
  /// Ids -> text; invalid UTF-8 is replaced by U+FFFD per maximal invalid subpart (like Rust's lossy decode).
  std::string decode(std::span<const TokenId> ids) const;
  /// The bytes of one token.
  const std::string& token_bytes(TokenId id) const;

  /// The id of an added token or vocabulary entry given by its content as written in tokenizer.json.
  std::optional<TokenId> token_to_id(std::string_view content) const;
  /// Added token for `id`, or nullptr.
  const AddedToken* added_token(TokenId id) const;
  const std::vector<AddedToken>& added_tokens() const;
  /// One past the largest id (vocabulary and added tokens).
  int32_t vocab_size() const;
  /// True when `id` names a vocabulary entry or an added token (the id space may have holes).
  bool is_valid_id(TokenId id) const;

 private:
  struct Impl;
  explicit BpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// Turns a stream of ids into text that is always valid UTF-8: bytes of an incomplete sequence are held back
/// until the next token completes them; bytes that can no longer become valid become U+FFFD.
class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const BpeTokenizer& tokenizer) : tokenizer_(&tokenizer) {}
  /// Appends one token; returns the text that became final.
  std::string push(TokenId id);
  /// End of stream: returns the held-back bytes (as U+FFFD if incomplete) and resets.
  std::string finish();
  /// Bytes held back now (0..3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const BpeTokenizer* tokenizer_;
  std::string pending_;
};

/// Length of the longest prefix of `bytes` that ends on a UTF-8 sequence boundary, treating invalid bytes as
/// complete (they become U+FFFD) and a trailing incomplete-but-valid-so-far sequence as not yet complete.
size_t utf8_complete_prefix(std::string_view bytes);
/// Lossy UTF-8: each maximal invalid subpart becomes U+FFFD (Unicode "best practice", Rust from_utf8_lossy).
std::string utf8_lossy(std::string_view bytes);
/// True when `bytes` is entirely valid UTF-8.
bool utf8_is_valid(std::string_view bytes);

}  // namespace dsv4
