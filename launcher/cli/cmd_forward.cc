// `dsv4 forward`: runs the CPU model over a token list and writes the fp32 logits of every position,
// little-endian, shape [T, vocab], to --logits-out. --chunk splits the prompt into prefill chunks (the
// state carries across them), which must not change the result.
#include <bit>
#include <charconv>
#include <fstream>
#include <string>
#include <vector>

#include "launcher/cli/command.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/core/env.h"
#include "runtime/core/error.h"
#include "runtime/core/logging.h"
#include "runtime/model/model.h"

namespace dsv4::cli {
namespace {

struct ForwardArgs {
  std::string checkpoint;
  std::string tokens;
  std::string numerics;
  std::string logits_out;
  int64_t chunk = 0;
};

std::vector<int32_t> parse_token_list(const std::string& text) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(pos, comma - pos);
    const size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    item = b == std::string::npos ? "" : item.substr(b, e - b + 1);
    if (!(item.empty() && comma == text.size() && ids.empty() && pos == 0)) {
      int64_t v = 0;
      auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
      DSV4_CHECK_ARG(!item.empty() && ec == std::errc() && ptr == item.data() + item.size())
          << "--tokens: '" << item << "' is not an integer token id";
      DSV4_CHECK_ARG(v >= INT32_MIN && v <= INT32_MAX) << "--tokens: token id " << v << " is out of range";
      ids.push_back(static_cast<int32_t>(v));
    }
    pos = comma + 1;
  }
  return ids;
}

void run_forward(const ForwardArgs& a) {
  static_assert(std::endian::native == std::endian::little, "logits are written as host floats");
  const std::vector<int32_t> tokens = parse_token_list(a.tokens);
  DSV4_CHECK_ARG(!tokens.empty()) << "--tokens: empty prompt";
  const Numerics numerics = parse_numerics(a.numerics.empty() ? env::get_string(env::kNumerics) : a.numerics);
  Checkpoint ckpt = Checkpoint::open(a.checkpoint);
  const ModelConfig& cfg = ckpt.config();
  for (size_t i = 0; i < tokens.size(); ++i) {
    DSV4_CHECK_ARG(tokens[i] >= 0 && tokens[i] < cfg.vocab_size)
        << "--tokens: id " << tokens[i] << " at index " << i << " is outside the vocabulary [0, " << cfg.vocab_size
        << ")";
  }
  DSV4_CHECK_ARG(cfg.max_position_embeddings <= 0 ||
                 static_cast<int64_t>(tokens.size()) <= cfg.max_position_embeddings)
      << "--tokens: " << tokens.size() << " tokens exceed max_position_embeddings " << cfg.max_position_embeddings;
  Model model = Model::from_checkpoint(ckpt, numerics);
  SequenceState state = model.new_sequence();
  const size_t chunk = a.chunk > 0 ? static_cast<size_t>(a.chunk) : tokens.size();
  std::ofstream out(a.logits_out, std::ios::binary | std::ios::trunc);
  DSV4_CHECK_CODE(out.good(), ErrorCode::kIo) << "cannot open " << a.logits_out << " for writing";
  for (size_t i = 0; i < tokens.size(); i += chunk) {
    const size_t n = std::min(chunk, tokens.size() - i);
    Tensor logits = model.prefill(state, std::span<const int32_t>(tokens.data() + i, n));
    out.write(static_cast<const char*>(logits.data()), static_cast<std::streamsize>(logits.nbytes()));
  }
  out.close();
  DSV4_CHECK_CODE(!out.fail(), ErrorCode::kIo) << "writing " << a.logits_out << " failed";
  DSV4_LOG(INFO) << "forward: " << tokens.size() << " tokens, logits [" << tokens.size() << ", " << cfg.vocab_size
                 << "] written to " << a.logits_out;
}

void setup(CLI::App& app) {
  auto args = std::make_shared<ForwardArgs>();
  auto* cmd = app.add_subcommand("forward", "Run the CPU model on token ids and write fp32 logits [T, vocab]");
  cmd->add_option("--checkpoint", args->checkpoint, "checkpoint directory")->required();
  cmd->add_option("--tokens", args->tokens, "comma-separated token ids, e.g. 0,17,42")->required();
  cmd->add_option("--numerics", args->numerics, "plain|reference (default: DSV4_NUMERICS)");
  cmd->add_option("--logits-out", args->logits_out, "output file: little-endian fp32 [T, vocab]")->required();
  cmd->add_option("--chunk", args->chunk, "prefill chunk size (0 = the whole prompt at once)");
  cmd->callback([args] { run_forward(*args); });
}

}  // namespace
DSV4_REGISTER_COMMAND(forward, setup);

}  // namespace dsv4::cli
