// A checkpoint opened for serving: the mapped checkpoint, the model bound to it and (optionally) the tokenizer.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "parallel/communicator.h"
#include "parallel/mesh.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/model/model.h"
#include "runtime/model/model_parallel.h"
#include "runtime/model/shard_load.h"
#include "runtime/tokenizer/bpe.h"
#include "runtime/tokenizer/chat_encoding.h"

namespace dsv4 {

/// Owns the checkpoint the model's weights point into; keep it behind the unique_ptr load_model() returns
/// so that the views stay put.
struct LoadedModel {
  Checkpoint checkpoint;
  /// A sharded load: this rank's groups (declared before the model, which uses them, so they outlive it) and
  /// what reading the shard did. Absent for a single-process model.
  std::optional<ModelGroups> groups;
  ShardLoadReport load_report;
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
                                        const std::filesystem::path& tokenizer_path, Numerics numerics,
                                        bool deterministic = false);

/// One rank's part of a sharded model: validates `layout` against the model (Error(kInvalidArgument) naming
/// the broken constraint, raised alike on every rank before any collective), splits `world` into the model's
/// groups (collective) and reads only this rank's shard (load_shard). `world` must outlive the returned model.
std::unique_ptr<LoadedModel> load_model_sharded(const std::filesystem::path& checkpoint_dir,
                                                const std::filesystem::path& tokenizer_path, Numerics numerics,
                                                bool deterministic, parallel::Communicator& world,
                                                const parallel::MeshConfig& layout);

/// The validated Mesh of `layout` for the model of `config` (Error(kInvalidArgument) naming the constraint).
parallel::Mesh model_mesh(const ModelConfig& config, const parallel::MeshConfig& layout);

/// "1.5" (MiB with one decimal) for log lines.
std::string format_mib(uint64_t bytes);

/// Writes one line to stderr on every rank (when the log level shows INFO): "[rank R] layout <mesh> (dp d, tp
/// t, ep e) weights X MiB (read Y MiB in Z s), <state_label> W MiB".
void log_rank_memory(const LoadedModel& loaded, int64_t state_bytes, std::string_view state_label = "state");

/// "none" / "high" / "max"; kInvalidArgument otherwise.
ThinkingMode parse_thinking_mode(std::string_view text);

}  // namespace dsv4
