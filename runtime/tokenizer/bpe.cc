// Byte-level BPE (see bpe.h for the pipeline). Layout of the work: loading turns every vocabulary entry back
// into the raw bytes it stands for, so encoding never builds byte-level strings: a word starts as one id per
// byte and merges are looked up by (left id, right id).
#include "runtime/tokenizer/bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <unordered_map>

#include "runtime/core/error.h"

namespace dsv4 {
namespace {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------------------
// GPT-2 byte <-> printable code point table used by the ByteLevel pre-tokenizer and decoder.
struct ByteLevelTable {
  std::array<uint32_t, 256> byte_to_cp{};
  std::unordered_map<uint32_t, uint8_t> cp_to_byte;
  ByteLevelTable() {
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      byte_to_cp[b] = printable ? static_cast<uint32_t>(b) : next++;
      cp_to_byte[byte_to_cp[b]] = static_cast<uint8_t>(b);
    }
  }
};
const ByteLevelTable& byte_level() {
  static const ByteLevelTable table;
  return table;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Decodes one code point of valid UTF-8 at `i` (the vocabulary was checked to be valid UTF-8 by the JSON parser).
uint32_t next_cp(std::string_view s, size_t& i) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  int len = b0 < 0x80 ? 1 : b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
  uint32_t cp = len == 1 ? b0 : len == 2 ? (b0 & 0x1F) : len == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (int k = 1; k < len && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3F);
  i += len;
  return cp;
}

// A vocabulary entry in byte-level form -> its raw bytes. Like the `tokenizers` ByteLevel decoder, an entry
// holding a character outside the table is taken as its own UTF-8 bytes.
std::string byte_level_to_bytes(std::string_view token) {
  const auto& table = byte_level();
  std::string out;
  for (size_t i = 0; i < token.size();) {
    auto it = table.cp_to_byte.find(next_cp(token, i));
    if (it == table.cp_to_byte.end()) return std::string(token);
    out += static_cast<char>(it->second);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// PCRE2 regex used by the Split pre-tokenizer steps.
class Regex {
 public:
  Regex(const std::string& pattern, bool literal, const std::string& where) {
    int err = 0;
    PCRE2_SIZE err_offset = 0;
    const uint32_t options = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &err,
                          &err_offset, nullptr);
    if (code_ == nullptr) {
      std::array<PCRE2_UCHAR, 256> message{};
      pcre2_get_error_message(err, message.data(), message.size());
      DSV4_THROW(kInvalidArgument) << where << ": regex does not compile at offset " << err_offset << ": "
                                   << reinterpret_cast<const char*>(message.data());
    }
    // JIT is an optimisation only: when unavailable pcre2_match interprets the same pattern.
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
  }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  ~Regex() { pcre2_code_free(code_); }

  // Appends the pieces of `subject` split around every match, both matches and gaps kept (behavior Isolated).
  void split_isolated(std::string_view subject, std::vector<std::string_view>& out) const {
    thread_local std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
        pcre2_match_data_create(16, nullptr), &pcre2_match_data_free);
    size_t start = 0;
    size_t prev = 0;
    while (start <= subject.size()) {
      int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), start,
                           PCRE2_NO_UTF_CHECK, data.get(), nullptr);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
        rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), start,
                         PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, data.get(), nullptr);
      }
      if (rc == PCRE2_ERROR_NOMATCH) break;
      DSV4_CHECK(rc >= 0) << "pcre2_match failed with code " << rc;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data.get());
      const size_t m_begin = ov[0];
      const size_t m_end = ov[1];
      if (m_end == m_begin) {  // empty match: not a piece; step over one code point
        if (m_begin >= subject.size()) break;
        size_t i = m_begin;
        next_cp(subject, i);
        start = i;
        continue;
      }
      if (m_begin > prev) out.push_back(subject.substr(prev, m_begin - prev));
      out.push_back(subject.substr(m_begin, m_end - m_begin));
      prev = start = m_end;
    }
    if (prev < subject.size()) out.push_back(subject.substr(prev));
  }

 private:
  pcre2_code* code_ = nullptr;
};

// The GPT-2 regex of a ByteLevel pre-tokenizer with use_regex=true (not used by the DeepSeek files).
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Byte trie over added-token contents, for leftmost-longest matching.
class TokenTrie {
 public:
  void clear() {
    edges_.clear();
    terminal_.assign(1, -1);
    first_bytes_.fill(false);
  }
  void insert(std::string_view s, TokenId id) {
    if (terminal_.empty()) clear();
    int32_t node = 0;
    first_bytes_[static_cast<uint8_t>(s[0])] = true;
    for (char c : s) {
      const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(c);
      auto it = edges_.find(key);
      if (it == edges_.end()) {
        it = edges_.emplace(key, static_cast<int32_t>(terminal_.size())).first;
        terminal_.push_back(-1);
      }
      node = it->second;
    }
    terminal_[node] = id;
  }
  // The longest token starting at `pos`: its length (0 when none) and id.
  size_t match_at(std::string_view text, size_t pos, TokenId& id) const {
    if (terminal_.empty() || !first_bytes_[static_cast<uint8_t>(text[pos])]) return 0;
    int32_t node = 0;
    size_t best = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      auto it = edges_.find((static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(text[i]));
      if (it == edges_.end()) break;
      node = it->second;
      if (terminal_[node] >= 0) {
        best = i + 1 - pos;
        id = terminal_[node];
      }
    }
    return best;
  }

 private:
  std::unordered_map<uint64_t, int32_t> edges_;
  std::vector<TokenId> terminal_;
  std::array<bool, 256> first_bytes_{};
};

struct Piece {
  std::string_view text;
  TokenId added = -1;  // >= 0: this piece is that added token
};

void split_on_added(const TokenTrie& trie, std::vector<Piece>& pieces) {
  std::vector<Piece> out;
  for (const Piece& piece : pieces) {
    if (piece.added >= 0) {
      out.push_back(piece);
      continue;
    }
    const std::string_view text = piece.text;
    size_t prev = 0;
    for (size_t i = 0; i < text.size();) {
      TokenId id = -1;
      const size_t len = trie.match_at(text, i, id);
      if (len == 0) {
        ++i;
        continue;
      }
      if (i > prev) out.push_back({text.substr(prev, i - prev), -1});
      out.push_back({text.substr(i, len), id});
      i += len;
      prev = i;
    }
    if (prev < text.size()) out.push_back({text.substr(prev), -1});
  }
  pieces.swap(out);
}

json parse_json(std::string_view text, std::string_view origin) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    DSV4_THROW(kInvalidArgument) << origin << ": malformed JSON: " << e.what();
  }
}

const json& require(const json& obj, const char* key, std::string_view origin, std::string_view where) {
  DSV4_CHECK_ARG(obj.is_object() && obj.contains(key)) << origin << ": " << where << " lacks key '" << key << "'";
  return obj.at(key);
}

bool is_null_or_false(const json& obj, const char* key) {
  return !obj.contains(key) || obj.at(key).is_null() || (obj.at(key).is_boolean() && !obj.at(key).get<bool>());
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
struct BpeTokenizer::Impl {
  std::string origin;
  std::vector<std::string> id_bytes;  // raw bytes of each id
  std::vector<uint8_t> id_present;    // 1 vocab entry, 2 added token, 0 hole
  std::unordered_map<std::string, TokenId> vocab;  // byte-level content -> id
  std::unordered_map<std::string, TokenId> vocab_by_bytes;
  std::array<TokenId, 256> byte_id{};
  struct Merge {
    int32_t rank;
    TokenId merged;
  };
  std::unordered_map<uint64_t, Merge> merges;
  bool ignore_merges = false;
  std::vector<std::unique_ptr<Regex>> splits;
  std::vector<AddedToken> added;
  std::unordered_map<std::string, size_t> added_by_content;
  TokenTrie raw_trie;         // non-normalized added tokens
  TokenTrie normalized_trie;  // normalized added tokens

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<TokenId>> cache;
  static constexpr size_t kCacheMaxEntries = 1 << 18;
  static constexpr size_t kCacheMaxWordBytes = 256;

  static uint64_t pair_key(TokenId a, TokenId b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  void set_id(TokenId id, std::string bytes, uint8_t kind) {
    if (static_cast<size_t>(id) >= id_bytes.size()) {
      id_bytes.resize(id + 1);
      id_present.resize(id + 1, 0);
    }
    id_bytes[id] = std::move(bytes);
    id_present[id] = kind;
  }

  void rebuild_added_index() {
    added_by_content.clear();
    raw_trie.clear();
    normalized_trie.clear();
    for (size_t i = 0; i < added.size(); ++i) {
      added_by_content[added[i].content] = i;
      (added[i].normalized ? normalized_trie : raw_trie).insert(added[i].content, added[i].id);
    }
  }

  // BPE on one pre-tokenized word: lowest merge rank first, leftmost on ties, as `tokenizers` does with its
  // priority queue of (rank, position).
  void bpe_word(std::string_view word, std::vector<TokenId>& out) const {
    if (ignore_merges) {
      auto it = vocab_by_bytes.find(std::string(word));
      if (it != vocab_by_bytes.end()) {
        out.push_back(it->second);
        return;
      }
    }
    struct Sym {
      TokenId id;
      int32_t prev;
      int32_t next;
      bool alive;
    };
    std::vector<Sym> syms(word.size());
    for (size_t i = 0; i < word.size(); ++i) {
      syms[i] = {byte_id[static_cast<uint8_t>(word[i])], static_cast<int32_t>(i) - 1,
                 i + 1 < word.size() ? static_cast<int32_t>(i + 1) : -1, true};
    }
    struct Cand {
      int32_t rank;
      int32_t pos;
      TokenId merged;
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> queue;
    auto push_pair = [&](int32_t left) {
      if (left < 0 || syms[left].next < 0) return;
      auto it = merges.find(pair_key(syms[left].id, syms[syms[left].next].id));
      if (it != merges.end()) queue.push({it->second.rank, left, it->second.merged});
    };
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(word.size()); ++i) push_pair(i);
    while (!queue.empty()) {
      const Cand top = queue.top();
      queue.pop();
      Sym& left = syms[top.pos];
      if (!left.alive || left.next < 0) continue;
      // The pair may have changed since it was queued; only act on it if it still merges into the same id.
      auto it = merges.find(pair_key(left.id, syms[left.next].id));
      if (it == merges.end() || it->second.merged != top.merged) continue;
      Sym& right = syms[left.next];
      left.id = top.merged;
      right.alive = false;
      left.next = right.next;
      if (left.next >= 0) syms[left.next].prev = top.pos;
      push_pair(left.prev);
      push_pair(top.pos);
    }
    for (int32_t i = 0; i >= 0 && i < static_cast<int32_t>(syms.size()); i = syms[i].next) out.push_back(syms[i].id);
  }

  void encode_word(std::string_view word, std::vector<TokenId>& out) const {
    if (word.size() > kCacheMaxWordBytes) {
      bpe_word(word, out);
      return;
    }
    const std::string key(word);
    {
      std::lock_guard<std::mutex> lock(cache_mutex);
      auto it = cache.find(key);
      if (it != cache.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    const size_t first = out.size();
    bpe_word(word, out);
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache.size() >= kCacheMaxEntries) cache.clear();
    cache.emplace(key, std::vector<TokenId>(out.begin() + first, out.end()));
  }
};

BpeTokenizer::BpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;
BpeTokenizer::~BpeTokenizer() = default;

BpeTokenizer BpeTokenizer::from_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  DSV4_CHECK_CODE(in.good(), ErrorCode::kNotFound) << "cannot open tokenizer file " << path.string();
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return from_json(buffer.str(), path.string());
}

BpeTokenizer BpeTokenizer::from_json(std::string_view json_text, std::string_view origin_view) {
  const std::string origin(origin_view);
  const json root = parse_json(json_text, origin);
  DSV4_CHECK_ARG(root.is_object()) << origin << ": top level is not a JSON object";
  auto impl = std::make_unique<Impl>();
  impl->origin = origin;

  // Normalizer: only "none" is supported (null or an empty Sequence).
  if (root.contains("normalizer") && !root["normalizer"].is_null()) {
    const json& norm = root["normalizer"];
    const bool empty_sequence = norm.value("type", "") == "Sequence" && norm.contains("normalizers") &&
                                norm["normalizers"].is_array() && norm["normalizers"].empty();
    DSV4_CHECK_CODE(empty_sequence, ErrorCode::kUnsupported)
        << origin << ": normalizer " << norm.dump() << " is not supported (only none)";
  }

  // Pre-tokenizer: Split(Isolated) steps and a final ByteLevel.
  const json& pre = require(root, "pre_tokenizer", origin, "top level");
  std::vector<json> steps;
  if (pre.is_object() && pre.value("type", "") == "Sequence") {
    for (const json& s : require(pre, "pretokenizers", origin, "pre_tokenizer")) steps.push_back(s);
  } else if (pre.is_object()) {
    steps.push_back(pre);
  } else {
    DSV4_THROW(kInvalidArgument) << origin << ": pre_tokenizer is not an object";
  }
  bool saw_byte_level = false;
  for (size_t i = 0; i < steps.size(); ++i) {
    const json& step = steps[i];
    const std::string where = "pre_tokenizer step " + std::to_string(i);
    const std::string type = step.is_object() ? step.value("type", "") : "";
    if (type == "Split") {
      DSV4_CHECK_CODE(!saw_byte_level, ErrorCode::kUnsupported) << origin << ": " << where << ": Split after ByteLevel";
      DSV4_CHECK_CODE(step.value("behavior", "") == "Isolated", ErrorCode::kUnsupported)
          << origin << ": " << where << ": Split behavior '" << step.value("behavior", "") << "' (only Isolated)";
      DSV4_CHECK_CODE(is_null_or_false(step, "invert"), ErrorCode::kUnsupported) << origin << ": " << where << ": invert";
      const json& pattern = require(step, "pattern", origin, where);
      if (pattern.contains("Regex") && pattern["Regex"].is_string()) {
        impl->splits.push_back(std::make_unique<Regex>(pattern["Regex"].get<std::string>(), false, origin + ": " + where));
      } else if (pattern.contains("String") && pattern["String"].is_string()) {
        impl->splits.push_back(std::make_unique<Regex>(pattern["String"].get<std::string>(), true, origin + ": " + where));
      } else {
        DSV4_THROW(kInvalidArgument) << origin << ": " << where << ": pattern needs a Regex or String";
      }
    } else if (type == "ByteLevel") {
      DSV4_CHECK_CODE(is_null_or_false(step, "add_prefix_space"), ErrorCode::kUnsupported)
          << origin << ": " << where << ": ByteLevel add_prefix_space=true is not supported";
      if (step.contains("use_regex") && step["use_regex"].is_boolean() && step["use_regex"].get<bool>()) {
        impl->splits.push_back(std::make_unique<Regex>(kGpt2Pattern, false, origin + ": " + where));
      }
      saw_byte_level = true;
    } else {
      DSV4_THROW(kUnsupported) << origin << ": " << where << ": pre-tokenizer type '" << type << "' is not supported";
    }
  }
  DSV4_CHECK_CODE(saw_byte_level, ErrorCode::kUnsupported) << origin << ": pre_tokenizer has no ByteLevel step";

  if (root.contains("decoder") && !root["decoder"].is_null()) {
    DSV4_CHECK_CODE(root["decoder"].value("type", "") == "ByteLevel", ErrorCode::kUnsupported)
        << origin << ": decoder type '" << root["decoder"].value("type", "") << "' is not supported (only ByteLevel)";
  }

  // Model: BPE with vocab and merges.
  const json& model = require(root, "model", origin, "top level");
  DSV4_CHECK_CODE(model.is_object() && model.value("type", "") == "BPE", ErrorCode::kUnsupported)
      << origin << ": model type '" << (model.is_object() ? model.value("type", "") : "") << "' is not supported (only BPE)";
  for (const char* key : {"dropout", "continuing_subword_prefix", "end_of_word_suffix", "byte_fallback"}) {
    DSV4_CHECK_CODE(is_null_or_false(model, key), ErrorCode::kUnsupported)
        << origin << ": model." << key << " = " << model[key].dump() << " is not supported";
  }
  impl->ignore_merges = !is_null_or_false(model, "ignore_merges");
  const json& vocab = require(model, "vocab", origin, "model");
  DSV4_CHECK_ARG(vocab.is_object() && !vocab.empty()) << origin << ": model.vocab is not a non-empty object";
  impl->vocab.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    DSV4_CHECK_ARG(it.value().is_number_integer() && it.value().get<int64_t>() >= 0 &&
                   it.value().get<int64_t>() < (int64_t{1} << 30))
        << origin << ": model.vocab['" << it.key() << "'] is not a valid id";
    const auto id = static_cast<TokenId>(it.value().get<int64_t>());
    DSV4_CHECK_ARG(static_cast<size_t>(id) >= impl->id_present.size() || impl->id_present[id] == 0)
        << origin << ": model.vocab id " << id << " is used twice (again by '" << it.key() << "')";
    std::string bytes = byte_level_to_bytes(it.key());
    impl->vocab_by_bytes.emplace(bytes, id);
    impl->set_id(id, std::move(bytes), 1);
    impl->vocab.emplace(it.key(), id);
  }
  const auto& table = byte_level();
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    append_utf8(ch, table.byte_to_cp[b]);
    auto it = impl->vocab.find(ch);
    DSV4_CHECK_ARG(it != impl->vocab.end()) << origin << ": model.vocab lacks the byte-level token for byte " << b;
    impl->byte_id[b] = it->second;
  }
  const json& merges = require(model, "merges", origin, "model");
  DSV4_CHECK_ARG(merges.is_array()) << origin << ": model.merges is not an array";
  impl->merges.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const json& m = merges[r];
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      DSV4_CHECK_ARG(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos)
          << origin << ": model.merges[" << r << "] '" << s << "' is not two tokens separated by one space";
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      DSV4_THROW(kInvalidArgument) << origin << ": model.merges[" << r << "] is neither \"a b\" nor [a, b]";
    }
    auto ia = impl->vocab.find(a);
    auto ib = impl->vocab.find(b);
    auto im = impl->vocab.find(a + b);
    DSV4_CHECK_ARG(ia != impl->vocab.end()) << origin << ": model.merges[" << r << "] uses '" << a << "', not in the vocab";
    DSV4_CHECK_ARG(ib != impl->vocab.end()) << origin << ": model.merges[" << r << "] uses '" << b << "', not in the vocab";
    DSV4_CHECK_ARG(im != impl->vocab.end())
        << origin << ": model.merges[" << r << "] makes '" << a + b << "', not in the vocab";
    // A repeated pair takes its last rank: `tokenizers` collects the merges into a map in file order.
    impl->merges.insert_or_assign(Impl::pair_key(ia->second, ib->second), Impl::Merge{static_cast<int32_t>(r), im->second});
  }

  // Added tokens.
  std::vector<AddedToken> added;
  if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
    const json& list = root["added_tokens"];
    DSV4_CHECK_ARG(list.is_array()) << origin << ": added_tokens is not an array";
    for (size_t i = 0; i < list.size(); ++i) {
      const json& t = list[i];
      const std::string where = "added_tokens[" + std::to_string(i) + "]";
      DSV4_CHECK_ARG(t.is_object() && t.contains("id") && t["id"].is_number_integer() && t["id"].get<int64_t>() >= 0 &&
                     t["id"].get<int64_t>() < (int64_t{1} << 30) && t.contains("content") && t["content"].is_string() &&
                     !t["content"].get<std::string>().empty())
          << origin << ": " << where << " needs an integer id and a non-empty content";
      for (const char* key : {"lstrip", "rstrip", "single_word"}) {
        DSV4_CHECK_CODE(is_null_or_false(t, key), ErrorCode::kUnsupported)
            << origin << ": " << where << "." << key << "=true is not supported";
      }
      added.push_back({static_cast<TokenId>(t["id"].get<int64_t>()), t["content"].get<std::string>(),
                       t.value("special", false), t.value("normalized", false)});
    }
  }
  // `tokenizers` ignores the ids written in added_tokens: a token gets its vocab id, or the next id after
  // the vocabulary and the added tokens so far. A file whose ids disagree would tokenize differently there.
  int64_t max_added = -1;
  const auto model_size = static_cast<int64_t>(impl->vocab.size());
  for (const AddedToken& t : added) {
    auto in_vocab = impl->vocab.find(t.content);
    const int64_t assigned = in_vocab != impl->vocab.end() ? in_vocab->second
                             : max_added < 0                ? model_size
                             : max_added >= model_size      ? max_added + 1
                                                            : model_size;
    DSV4_CHECK_CODE(assigned == t.id, ErrorCode::kUnsupported)
        << origin << ": added token '" << t.content << "' declares id " << t.id << " but `tokenizers` would give it "
        << assigned << " (ids must follow the vocabulary without gaps)";
    max_added = std::max(max_added, assigned);
  }
  BpeTokenizer tokenizer(std::move(impl));
  tokenizer.add_tokens(added);
  return tokenizer;
}

void BpeTokenizer::add_tokens(std::span<const AddedToken> tokens) {
  Impl& im = *impl_;
  for (const AddedToken& token : tokens) {
    DSV4_CHECK_ARG(token.id >= 0 && !token.content.empty()) << im.origin << ": added token '" << token.content
                                                            << "' needs a non-negative id and non-empty content";
    std::erase_if(im.added, [&](const AddedToken& t) { return t.id == token.id || t.content == token.content; });
    im.added.push_back(token);
    im.set_id(token.id, token.content, 2);
  }
  std::sort(im.added.begin(), im.added.end(), [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
  im.rebuild_added_index();
}

std::vector<TokenId> BpeTokenizer::encode(std::string_view text, bool parse_added_tokens) const {
  const Impl& im = *impl_;
  DSV4_CHECK_ARG(utf8_is_valid(text)) << "text to encode is not valid UTF-8";
  std::vector<Piece> pieces{{text, -1}};
  if (parse_added_tokens) {
    split_on_added(im.raw_trie, pieces);
    split_on_added(im.normalized_trie, pieces);
  }
  std::vector<TokenId> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<std::string_view> words, next;
  for (const Piece& piece : pieces) {
    if (piece.added >= 0) {
      ids.push_back(piece.added);
      continue;
    }
    words.assign(1, piece.text);
    for (const auto& regex : im.splits) {
      next.clear();
      for (std::string_view w : words) regex->split_isolated(w, next);
      words.swap(next);
    }
    for (std::string_view w : words) im.encode_word(w, ids);
  }
  return ids;
}

bool BpeTokenizer::is_valid_id(TokenId id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->id_present.size() && impl_->id_present[id] != 0;
}

const std::string& BpeTokenizer::token_bytes(TokenId id) const {
  DSV4_CHECK_CODE(is_valid_id(id), ErrorCode::kOutOfRange)
      << "token id " << id << " is not in the vocabulary of " << impl_->origin << " (size " << vocab_size() << ")";
  return impl_->id_bytes[id];
}

std::string BpeTokenizer::decode_bytes(std::span<const TokenId> ids) const {
  std::string out;
  for (TokenId id : ids) out += token_bytes(id);
  return out;
}

std::string BpeTokenizer::decode(std::span<const TokenId> ids) const { return utf8_lossy(decode_bytes(ids)); }

std::optional<TokenId> BpeTokenizer::token_to_id(std::string_view content) const {
  const std::string key(content);
  if (auto it = impl_->added_by_content.find(key); it != impl_->added_by_content.end()) return impl_->added[it->second].id;
  if (auto it = impl_->vocab.find(key); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

const AddedToken* BpeTokenizer::added_token(TokenId id) const {
  auto it = std::lower_bound(impl_->added.begin(), impl_->added.end(), id,
                             [](const AddedToken& t, TokenId v) { return t.id < v; });
  return it != impl_->added.end() && it->id == id ? &*it : nullptr;
}

const std::vector<AddedToken>& BpeTokenizer::added_tokens() const { return impl_->added; }

int32_t BpeTokenizer::vocab_size() const { return static_cast<int32_t>(impl_->id_present.size()); }

}  // namespace dsv4
