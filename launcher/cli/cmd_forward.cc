// `dsv4 forward`: runs the model over token lists and writes the fp32 logits of every position, little-endian,
// shape [T, vocab] per prompt (prompts one after the other), to --logits-out. --chunk splits each prompt into
// prefill chunks (the state carries across them), which must not change the result.
//
// Under mpirun (`mpirun -np N dsv4 forward --tp/--ep/--dp ...` or `--deployment YAML`) every rank loads its
// shard. Prompts (--tokens, or one per line of --prompts-file) go to the DP replicas round-robin: prompt p runs
// on replica p % dp, batched with the replica's other prompts; a replica with fewer chunks to run joins the
// remaining forward calls with zero chunks (the MoE exchange spans replicas). Rank 0 gathers the vocabulary
// shards of every prompt's logits (for output only: a model step never gathers them) and writes the file.
#include <bit>
#include <charconv>
#include <fstream>
#include <string>
#include <vector>

#include "launcher/cli/command.h"
#include "launcher/cli/model_job.h"
#include "runtime/core/error.h"
#include "runtime/core/logging.h"
#include "runtime/model/shard_load.h"

namespace dsv4::cli {
namespace {

struct ForwardArgs {
  ModelJobArgs job;
  std::string tokens;
  std::string prompts_file;
  std::string logits_out;
  int64_t chunk = 0;
};

std::vector<int32_t> parse_token_list(const std::string& text, const std::string& where) {
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
          << where << ": '" << item << "' is not an integer token id";
      DSV4_CHECK_ARG(v >= INT32_MIN && v <= INT32_MAX) << where << ": token id " << v << " is out of range";
      ids.push_back(static_cast<int32_t>(v));
    }
    pos = comma + 1;
  }
  return ids;
}

std::vector<std::vector<int32_t>> read_prompts(const ForwardArgs& a) {
  DSV4_CHECK_ARG(a.tokens.empty() || a.prompts_file.empty()) << "give only one of --tokens and --prompts-file";
  std::vector<std::vector<int32_t>> prompts;
  if (!a.prompts_file.empty()) {
    std::ifstream in(a.prompts_file);
    DSV4_CHECK_ARG(in.good()) << "--prompts-file: cannot read " << a.prompts_file;
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      if (line.back() == '\r') line.pop_back();
      prompts.push_back(parse_token_list(line, a.prompts_file + ":" + std::to_string(n)));
    }
    DSV4_CHECK_ARG(!prompts.empty()) << "--prompts-file: " << a.prompts_file << " holds no prompt";
  } else {
    prompts.push_back(parse_token_list(a.tokens, "--tokens"));
    DSV4_CHECK_ARG(!prompts[0].empty()) << "--tokens: empty prompt";
  }
  return prompts;
}

void check_prompts(const std::vector<std::vector<int32_t>>& prompts, const ModelConfig& cfg) {
  for (size_t p = 0; p < prompts.size(); ++p) {
    const std::string which = prompts.size() == 1 ? "--tokens" : "prompt " + std::to_string(p);
    for (size_t i = 0; i < prompts[p].size(); ++i) {
      DSV4_CHECK_ARG(prompts[p][i] >= 0 && prompts[p][i] < cfg.vocab_size)
          << which << ": id " << prompts[p][i] << " at index " << i << " is outside the vocabulary [0, "
          << cfg.vocab_size << ")";
    }
    DSV4_CHECK_ARG(cfg.max_position_embeddings <= 0 ||
                   static_cast<int64_t>(prompts[p].size()) <= cfg.max_position_embeddings)
        << which << ": " << prompts[p].size() << " tokens exceed max_position_embeddings "
        << cfg.max_position_embeddings;
  }
}

void run_forward(const ForwardArgs& a) {
  static_assert(std::endian::native == std::endian::little, "logits are written as host floats");
  const std::vector<std::vector<int32_t>> prompts = read_prompts(a);
  run_model_job(a.job, [&](const ModelConfig& cfg) { check_prompts(prompts, cfg); }, [&](ModelJob& job) {
    Model& model = job.model();
    const ModelConfig& cfg = model.config();
    const int dp = job.engine->dp_size(), my_dp = job.engine->dp_rank();
    const int64_t rows = model.shard().vocab_rows();
    const size_t n = prompts.size();
    auto chunk_of = [&](size_t p) {
      return a.chunk > 0 ? static_cast<size_t>(a.chunk) : prompts[p].size();
    };
    auto chunks_of = [&](size_t p) { return (prompts[p].size() + chunk_of(p) - 1) / chunk_of(p); };
    // Every rank makes the same number of forward calls: the most chunks any replica needs.
    size_t calls = 0;
    for (size_t p = 0; p < n; ++p) calls = std::max(calls, chunks_of(p));
    std::vector<SequenceState> states;
    std::vector<size_t> mine;
    for (size_t p = 0; p < n; ++p) {
      if (static_cast<int>(p % static_cast<size_t>(dp)) != my_dp) continue;
      mine.push_back(p);
      states.push_back(model.new_sequence());
    }
    std::vector<std::vector<float>> logits(n);  // this rank's shard, [T_p, rows] for its prompts
    for (size_t c = 0; c < calls; ++c) {
      std::vector<SequenceChunk> chunks;
      std::vector<size_t> which;
      for (size_t k = 0; k < mine.size(); ++k) {
        const size_t p = mine[k], begin = c * chunk_of(p);
        if (begin >= prompts[p].size()) continue;
        const size_t len = std::min(chunk_of(p), prompts[p].size() - begin);
        chunks.push_back({&states[k], std::span<const int32_t>(prompts[p].data() + begin, len)});
        which.push_back(p);
      }
      ForwardOutput out = model.forward(chunks);
      DSV4_CHECK(out.logits.shape()[1] == rows) << "forward: logits have " << out.logits.shape()[1]
                                                << " columns, the shard holds " << rows;
      const float* data = static_cast<const float*>(out.logits.data());
      for (size_t k = 0; k < chunks.size(); ++k) {
        const size_t t = chunks[k].tokens.size();
        logits[which[k]].insert(logits[which[k]].end(), data, data + t * static_cast<size_t>(rows));
        data += t * static_cast<size_t>(rows);
      }
    }
    int64_t state = 0;
    for (const SequenceState& s : states) state += s.memory_bytes();
    if (job.world->size() > 1) log_rank_memory(*job.loaded, state);

    // Output: rank 0 assembles every prompt's [T, vocab] from the TP shards of its replica (sent in prompt
    // order by each rank, received in prompt then tp order by rank 0, so no send waits on another).
    const int tp = job.layout.tp;
    std::ofstream out;
    if (job.rank() == 0) {
      out.open(a.logits_out, std::ios::binary | std::ios::trunc);
      DSV4_CHECK_CODE(out.good(), ErrorCode::kIo) << "cannot open " << a.logits_out << " for writing";
    }
    const parallel::Mesh* mesh = job.loaded->groups ? &job.loaded->groups->mesh : nullptr;
    for (size_t p = 0; p < n; ++p) {
      const int d = static_cast<int>(p % static_cast<size_t>(dp));
      const size_t T = prompts[p].size();
      if (job.rank() != 0) {
        if (d == my_dp) job.world->send(logits[p].data(), logits[p].size(), DType::kF32, 0, parallel::kDefaultStream);
        continue;
      }
      if (mesh == nullptr) {  // one rank: the whole vocabulary is here
        out.write(reinterpret_cast<const char*>(logits[p].data()), static_cast<std::streamsize>(logits[p].size() * 4));
        continue;
      }
      std::vector<float> full(T * static_cast<size_t>(cfg.vocab_size));
      for (int t = 0; t < tp; ++t) {
        const int from = mesh->rank_of(d, 0, t);
        const ModelShard shard = model_shard_for_rank(cfg, *mesh, from);
        const size_t w = static_cast<size_t>(shard.vocab_rows());
        std::vector<float> part;
        if (from == 0) {
          part = std::move(logits[p]);
        } else {
          part.resize(T * w);
          job.world->recv(part.data(), part.size(), DType::kF32, from, parallel::kDefaultStream);
        }
        DSV4_CHECK(part.size() == T * w) << "forward: rank " << from << " holds " << part.size()
                                         << " logits of prompt " << p << ", expected " << T * w;
        for (size_t r = 0; r < T; ++r) {
          std::copy(part.begin() + static_cast<ptrdiff_t>(r * w), part.begin() + static_cast<ptrdiff_t>((r + 1) * w),
                    full.begin() + static_cast<ptrdiff_t>(r * static_cast<size_t>(cfg.vocab_size) +
                                                          static_cast<size_t>(shard.vocab_begin)));
        }
      }
      out.write(reinterpret_cast<const char*>(full.data()), static_cast<std::streamsize>(full.size() * 4));
    }
    if (job.rank() == 0) {
      out.close();
      DSV4_CHECK_CODE(!out.fail(), ErrorCode::kIo) << "writing " << a.logits_out << " failed";
      size_t total = 0;
      for (const auto& p : prompts) total += p.size();
      DSV4_LOG(INFO) << "forward: " << n << " prompt(s), " << total << " tokens, logits [" << total << ", "
                     << cfg.vocab_size << "] written to " << a.logits_out;
    }
  });
}

void setup(CLI::App& app) {
  auto args = std::make_shared<ForwardArgs>();
  auto* cmd = app.add_subcommand(
      "forward", "Run the model on token ids and write fp32 logits [T, vocab] (under mpirun: sharded by --tp/--ep/--dp)");
  cmd->add_option("--checkpoint", args->job.checkpoint, "checkpoint directory")->required();
  cmd->add_option("--tokens", args->tokens, "comma-separated token ids, e.g. 0,17,42");
  cmd->add_option("--prompts-file", args->prompts_file,
                  "several prompts, one comma-separated id list per line (spread over the DP replicas)");
  cmd->add_option("--logits-out", args->logits_out, "output file: little-endian fp32 [T, vocab] per prompt")->required();
  cmd->add_option("--chunk", args->chunk, "prefill chunk size (0 = the whole prompt at once)");
  add_model_job_options(cmd, args->job);
  cmd->callback([args] { run_forward(*args); });
}

}  // namespace
DSV4_REGISTER_COMMAND(forward, setup);

}  // namespace dsv4::cli
