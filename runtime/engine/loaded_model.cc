#include "runtime/engine/loaded_model.h"

#include <algorithm>
#include <cstdio>

#include "kernels/backend.h"
#include "runtime/core/error.h"
#include "runtime/core/logging.h"
#include "runtime/tokenizer/dsv4_tokenizer.h"

namespace dsv4 {
namespace {

void load_tokenizer(LoadedModel& loaded, const std::filesystem::path& checkpoint_dir,
                    const std::filesystem::path& tokenizer_path) {
  std::filesystem::path tok = tokenizer_path;
  if (tok.empty() && std::filesystem::exists(checkpoint_dir / "tokenizer.json")) tok = checkpoint_dir / "tokenizer.json";
  if (!tok.empty()) {
    loaded.tokenizer.emplace(load_dsv4_tokenizer(tok));
    const int64_t vocab = loaded.model->config().vocab_size;
    DSV4_CHECK_ARG(loaded.tokenizer->vocab_size() <= vocab)
        << "tokenizer " << tok.string() << " has " << loaded.tokenizer->vocab_size()
        << " ids but the model's vocabulary (" << checkpoint_dir.string() << "/config.json vocab_size) is " << vocab;
  }
  DSV4_LOG(INFO) << "loaded " << checkpoint_dir.string() << " (vocab " << loaded.model->config().vocab_size << ", "
                 << loaded.model->config().num_layers << " layers)"
                 << (tok.empty() ? ", no tokenizer" : ", tokenizer " + tok.string());
}

}  // namespace

std::string format_mib(uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return text;
}

std::unique_ptr<LoadedModel> load_model(const std::filesystem::path& checkpoint_dir,
                                        const std::filesystem::path& tokenizer_path, Numerics numerics,
                                        bool deterministic) {
  auto loaded = std::unique_ptr<LoadedModel>(new LoadedModel{Checkpoint::open(checkpoint_dir)});
  loaded->model.emplace(Model::from_checkpoint(loaded->checkpoint, numerics, deterministic));
  load_tokenizer(*loaded, checkpoint_dir, tokenizer_path);
  return loaded;
}

ThinkingMode parse_thinking_mode(std::string_view text) {
  if (text == "none") return ThinkingMode::kNone;
  if (text == "high") return ThinkingMode::kHigh;
  if (text == "max") return ThinkingMode::kMax;
  DSV4_THROW(kInvalidArgument) << "thinking mode must be none, high or max, got '" << text << "'";
}

parallel::Mesh model_mesh(const ModelConfig& config, const parallel::MeshConfig& layout) {
  return parallel::Mesh::create(layout, mesh_dims(config));
}

std::unique_ptr<LoadedModel> load_model_sharded(const std::filesystem::path& checkpoint_dir,
                                                const std::filesystem::path& tokenizer_path, Numerics numerics,
                                                bool deterministic, parallel::Communicator& world,
                                                const parallel::MeshConfig& layout) {
  auto loaded = std::unique_ptr<LoadedModel>(new LoadedModel{Checkpoint::open(checkpoint_dir)});
  const ModelConfig& cfg = loaded->checkpoint.config();
  // Every rank validates the same layout against the same config, so a bad layout fails on every rank
  // before the first collective (no rank is left waiting in a split).
  const parallel::Mesh mesh = model_mesh(cfg, layout);
  DSV4_CHECK_ARG(mesh.world_size() == world.size())
      << "the layout " << mesh.str() << " needs " << mesh.world_size() << " ranks but the job has " << world.size();
  loaded->groups.emplace(make_model_groups(world, mesh));
  const ModelShard shard = model_shard_for_rank(cfg, mesh, world.rank());
  ModelWeights weights = load_shard(loaded->checkpoint, shard, &loaded->load_report);
  loaded->model.emplace(cfg, std::move(weights), kernels::make_cpu_backend(), numerics,
                        loaded->groups->parallel(deterministic));
  load_tokenizer(*loaded, checkpoint_dir, tokenizer_path);
  return loaded;
}

void log_rank_memory(const LoadedModel& loaded, int64_t state_bytes, std::string_view state_label) {
  if (log_level() > LogLevel::kInfo) return;
  std::string line;
  if (loaded.groups) {
    const parallel::Mesh& mesh = loaded.groups->mesh;
    const parallel::MeshCoord c = mesh.coord(loaded.groups->rank);
    const ShardLoadReport& r = loaded.load_report;
    char seconds[32];
    std::snprintf(seconds, sizeof(seconds), "%.2f", r.seconds);
    line = "[rank " + std::to_string(c.rank) + "] layout " + mesh.str() + " (dp " + std::to_string(c.dp_rank) +
           ", tp " + std::to_string(c.tp_rank) + ", ep " + std::to_string(c.ep_rank) + ") weights " +
           format_mib(r.bytes_planned) + " MiB (read " + format_mib(r.bytes_read) + " MiB in " + seconds + " s), ";
  } else {
    line = "[rank 0] layout single process, weights mapped from the checkpoint, ";
  }
  line += std::string(state_label) + " " + format_mib(static_cast<uint64_t>(std::max<int64_t>(state_bytes, 0))) +
          " MiB\n";
  // One write per line, on every rank whatever the log's rank filter: operators compare ranks' memory.
  std::fputs(line.c_str(), stderr);
  std::fflush(stderr);
}

}  // namespace dsv4
