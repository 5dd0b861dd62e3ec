// Byte-level BPE on a small synthetic tokenizer.json (expected ids from the Rust `tokenizers` library on the
// same file), validation errors, UTF-8 helpers and the incremental detokenizer.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runtime/core/error.h"
#include "runtime/tokenizer/bpe.h"

namespace dsv4 {
namespace {

using nlohmann::json;

std::string utf8(uint32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

// Vocab: byte b -> id b (GPT-2 byte-level characters), then ab=256, abc=257, bc=258; merges a+b, ab+c, b+c;
// added tokens cd (raw) 259, bcd (normalized) 260, <s> 261, <s>x 262.
json synthetic() {
  json vocab = json::object();
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    vocab[utf8(printable ? b : next++)] = b;
  }
  vocab["ab"] = 256;
  vocab["abc"] = 257;
  vocab["bc"] = 258;
  auto added = [](int id, const char* content, bool normalized) {
    return json{{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                {"normalized", normalized}, {"special", true}};
  };
  return json{
      {"version", "1.0"},
      {"added_tokens", {added(259, "cd", false), added(260, "bcd", true), added(261, "<s>", false), added(262, "<s>x", false)}},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", "\\p{N}{1,2}| ?\\p{L}+|\\s+"}}}, {"behavior", "Isolated"}, {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"byte_fallback", false}, {"vocab", vocab},
        {"merges", {"a b", json::array({"ab", "c"}), "b c"}}}}};
}

BpeTokenizer load(const json& j) { return BpeTokenizer::from_json(j.dump(), "synthetic.json"); }

TEST(TokenizerBpe, MatchesTokenizersOnSyntheticFile) {
  const BpeTokenizer tok = load(synthetic());
  using V = std::vector<TokenId>;
  EXPECT_EQ(tok.encode("abc"), (V{257}));
  EXPECT_EQ(tok.encode("abcbc"), (V{257, 258}));
  EXPECT_EQ(tok.encode("bcab"), (V{258, 256}));
  // Non-normalized added tokens are matched first: "cd" wins over the normalized "bcd".
  EXPECT_EQ(tok.encode("abcd"), (V{256, 259}));
  EXPECT_EQ(tok.encode("xbcdx"), (V{120, 98, 259, 120}));
  EXPECT_EQ(tok.encode("q<s>xq"), (V{113, 262, 113}));  // longest match
  EXPECT_EQ(tok.encode("q<s>q"), (V{113, 261, 113}));
  EXPECT_EQ(tok.encode("12345 ab\n\nc"), (V{49, 50, 51, 52, 53, 32, 256, 10, 10, 99}));
  EXPECT_EQ(tok.encode("a\xC3\xA9"), (V{97, 195, 169}));
  EXPECT_EQ(tok.encode("q<s>xq", /*parse_added_tokens=*/false), (V{113, 60, 115, 62, 120, 113}));
  EXPECT_EQ(tok.decode(V{113, 262, 257}), "q<s>xabc");
  EXPECT_EQ(tok.vocab_size(), 263);
  EXPECT_EQ(tok.token_to_id("abc"), 257);
  EXPECT_EQ(tok.token_to_id("<s>x"), 262);
  EXPECT_FALSE(tok.token_to_id("zzz").has_value());
  EXPECT_TRUE(tok.encode("").empty());
}

void expect_error(const json& j, ErrorCode code, const std::string& fragment) {
  try {
    load(j);
    FAIL() << "loaded; expected an error containing '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.message();
    EXPECT_NE(e.message().find("synthetic.json"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find(fragment), std::string::npos) << e.message();
  }
}

TEST(TokenizerBpe, RejectsBadFiles) {
  try {
    BpeTokenizer::from_json("{\"model\": [", "broken.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(e.message().find("broken.json: malformed JSON"), std::string::npos);
  }
  EXPECT_THROW(BpeTokenizer::from_file("/nonexistent/tokenizer.json"), Error);

  json j = synthetic();
  j["model"]["type"] = "WordPiece";
  expect_error(j, ErrorCode::kUnsupported, "WordPiece");
  j = synthetic();
  j["model"]["merges"].push_back("x zz");
  expect_error(j, ErrorCode::kInvalidArgument, "'zz', not in the vocab");
  j = synthetic();
  j["model"]["merges"].push_back("c a");  // "ca" is not in the vocab
  expect_error(j, ErrorCode::kInvalidArgument, "makes 'ca'");
  j = synthetic();
  j["model"]["merges"].push_back("abc");
  expect_error(j, ErrorCode::kInvalidArgument, "merges[3]");
  j = synthetic();
  j["model"]["vocab"].erase("a");
  expect_error(j, ErrorCode::kInvalidArgument, "byte 97");
  j = synthetic();
  j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed";
  expect_error(j, ErrorCode::kUnsupported, "Removed");
  j = synthetic();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  expect_error(j, ErrorCode::kInvalidArgument, "regex does not compile");
  j = synthetic();
  j["normalizer"] = {{"type", "NFC"}};
  expect_error(j, ErrorCode::kUnsupported, "normalizer");
  j = synthetic();
  j["added_tokens"][1]["id"] = 300;  // tokenizers would number it 260
  expect_error(j, ErrorCode::kUnsupported, "would give it 260");
  j = synthetic();
  j.erase("model");
  expect_error(j, ErrorCode::kInvalidArgument, "lacks key 'model'");
}

TEST(TokenizerBpe, EncodeRejectsInvalidUtf8AndDecodeRejectsUnknownIds) {
  const BpeTokenizer tok = load(synthetic());
  EXPECT_THROW(tok.encode("a\xFF"), Error);
  try {
    tok.decode(std::vector<TokenId>{263});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kOutOfRange);
  }
}

TEST(TokenizerUtf8, LossyFollowsMaximalSubparts) {
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(utf8_lossy("ok"), "ok");
  EXPECT_EQ(utf8_lossy("\xE4\xB8"), r);                 // truncated 3-byte sequence: one U+FFFD
  EXPECT_EQ(utf8_lossy("\xC0\x80"), r + r);             // overlong lead byte
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), r + r + r);     // surrogate
  EXPECT_EQ(utf8_lossy("\xF0\x9F\x98" "A"), r + "A");   // 3 of 4 bytes then ASCII
  EXPECT_EQ(utf8_lossy("\xF4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
  EXPECT_TRUE(utf8_is_valid("\xF0\x9F\x98\x80"));
  EXPECT_FALSE(utf8_is_valid("\xF0\x9F\x98"));
  EXPECT_EQ(utf8_complete_prefix("ab\xF0\x9F"), 2u);
  EXPECT_EQ(utf8_complete_prefix("ab\xFF"), 3u);
}

TEST(TokenizerUtf8, IncrementalDetokenizerHoldsBackOnlyWhatCanStillBecomeValid) {
  const BpeTokenizer tok = load(synthetic());  // ids 0..255 are the single bytes
  IncrementalDetokenizer detok(tok);
  EXPECT_EQ(detok.push(0xF0), "");
  EXPECT_EQ(detok.push(0x9F), "");
  EXPECT_EQ(detok.push(0x98), "");
  EXPECT_EQ(detok.pending_bytes(), 3u);
  EXPECT_EQ(detok.push(0x80), "\xF0\x9F\x98\x80");
  EXPECT_EQ(detok.push(0xFF), "\xEF\xBF\xBD");  // can never become valid: replaced at once
  EXPECT_EQ(detok.push(0xE4), "");
  EXPECT_EQ(detok.push('a'), "\xEF\xBF\xBD" "a");
  EXPECT_EQ(detok.push(257), "abc");
  EXPECT_EQ(detok.push(0xE4), "");
  EXPECT_EQ(detok.push(0xB8), "");
  EXPECT_EQ(detok.finish(), "\xEF\xBF\xBD");  // end of stream: the incomplete tail is one U+FFFD
  EXPECT_EQ(detok.pending_bytes(), 0u);
}

}  // namespace
}  // namespace dsv4
