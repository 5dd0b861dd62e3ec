// A checkpoint opened for serving: the mapped checkpoint, the model bound to it and (optionally) the tokenizer.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string_view>

#include "runtime/checkpoint/checkpoint.h"
#include "runtime/model/model.h"
#include "runtime/tokenizer/bpe.h"
#include "runtime/tokenizer/chat_encoding.h"

namespace dsv4 {

/// Owns the checkpoint the model's weights point into; keep it behind the unique_ptr load_model() returns
/// so that the views stay put.
struct LoadedModel {
  Checkpoint checkpoint;
  std::optional<Model> model;
  /// Absent when no tokenizer was given and the checkpoint folder has no tokenizer.json: then only raw token
  /// prompts work and no text is produced.
  std::optional<BpeTokenizer> tokenizer;

  const BpeTokenizer* tokenizer_or_null() const { return tokenizer ? &*tokenizer : nullptr; }
};

/// Opens `checkpoint_dir` and binds the model. `tokenizer_path` empty means `<checkpoint>/tokenizer.json` when
/// that file exists. The tokenizer is loaded with load_dsv4_tokenizer and must not have more ids than the
/// model's vocabulary (kInvalidArgument naming both).
std::unique_ptr<LoadedModel> load_model(const std::filesystem::path& checkpoint_dir,
                                        const std::filesystem::path& tokenizer_path, Numerics numerics);

/// "none" / "high" / "max"; kInvalidArgument otherwise.
ThinkingMode parse_thinking_mode(std::string_view text);

}  // namespace dsv4
