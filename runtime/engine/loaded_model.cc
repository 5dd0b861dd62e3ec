#include "runtime/engine/loaded_model.h"

#include "runtime/core/error.h"
#include "runtime/core/logging.h"
#include "runtime/tokenizer/dsv4_tokenizer.h"

namespace dsv4 {

std::unique_ptr<LoadedModel> load_model(const std::filesystem::path& checkpoint_dir,
                                        const std::filesystem::path& tokenizer_path, Numerics numerics) {
  auto loaded = std::unique_ptr<LoadedModel>(new LoadedModel{Checkpoint::open(checkpoint_dir), std::nullopt, std::nullopt});
  loaded->model.emplace(Model::from_checkpoint(loaded->checkpoint, numerics));
  std::filesystem::path tok = tokenizer_path;
  if (tok.empty() && std::filesystem::exists(checkpoint_dir / "tokenizer.json")) tok = checkpoint_dir / "tokenizer.json";
  if (!tok.empty()) {
    loaded->tokenizer.emplace(load_dsv4_tokenizer(tok));
    const int64_t vocab = loaded->model->config().vocab_size;
    DSV4_CHECK_ARG(loaded->tokenizer->vocab_size() <= vocab)
        << "tokenizer " << tok.string() << " has " << loaded->tokenizer->vocab_size()
        << " ids but the model's vocabulary (" << checkpoint_dir.string() << "/config.json vocab_size) is " << vocab;
  }
  DSV4_LOG(INFO) << "loaded " << checkpoint_dir.string() << " (vocab " << loaded->model->config().vocab_size
                 << ", " << loaded->model->config().num_layers << " layers)"
                 << (tok.empty() ? ", no tokenizer" : ", tokenizer " + tok.string());
  return loaded;
}

ThinkingMode parse_thinking_mode(std::string_view text) {
  if (text == "none") return ThinkingMode::kNone;
  if (text == "high") return ThinkingMode::kHigh;
  if (text == "max") return ThinkingMode::kMax;
  DSV4_THROW(kInvalidArgument) << "thinking mode must be none, high or max, got '" << text << "'";
}

}  // namespace dsv4
