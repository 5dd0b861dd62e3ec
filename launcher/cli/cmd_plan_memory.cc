// `dsv4 plan-memory --config FILE --context N [--budget-gib X] [--mtp]`: per-sequence decode state of a model
// (spec §5.3) in the production FP8 layout and the bf16 reference layout, and what fits in a memory budget.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "launcher/cli/command.h"
#include "runtime/config/model_config.h"
#include "runtime/core/error.h"
#include "runtime/kv/state_bytes.h"

namespace dsv4::cli {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr double kMiB = 1024.0 * 1024.0;

std::string fmt(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, value);
  return buf;
}

// "4,037,279,744 B (4.04 GB, 3.76 GiB)"
std::string bytes_text(int64_t bytes) {
  std::string digits = std::to_string(bytes);
  std::string grouped;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) grouped += ',';
    grouped += digits[i];
  }
  const double b = static_cast<double>(bytes);
  if (b >= kGiB) return grouped + " (" + fmt("%.2f", b / 1e9) + " GB, " + fmt("%.2f", b / kGiB) + " GiB)";
  return grouped + " (" + fmt("%.1f", b / kMiB) + " MiB)";
}

void print_row(const std::string& label, const std::string& fp8, const std::string& bf16) {
  std::printf("  %-34s %-36s %s\n", label.c_str(), fp8.c_str(), bf16.c_str());
}

struct Opts {
  std::string config;
  int64_t context = 1048576;
  double budget_gib = 0.0;
  bool mtp = false;
};

void run(const Opts& o) {
  const ModelConfig c = load_model_config(o.config);
  DSV4_CHECK_ARG(o.context >= 0) << "--context must be >= 0, got " << o.context;
  DSV4_CHECK_ARG(o.budget_gib >= 0.0) << "--budget-gib must be >= 0, got " << o.budget_gib;
  int swa = 0, csa = 0, hca = 0;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const AttentionKind kind = c.attention_kind(l);
    (kind == AttentionKind::kSlidingWindow ? swa : kind == AttentionKind::kCompressed4 ? csa : hca)++;
  }
  std::printf("model %s: %lld layers (%d SWA, %d CSA ratio 4, %d HCA ratio 128), %lld MTP, window %lld\n",
              o.config.c_str(), static_cast<long long>(c.num_layers), swa, csa, hca,
              static_cast<long long>(c.num_mtp_layers), static_cast<long long>(c.sliding_window));
  std::printf("context %lld tokens%s%s\n\n", static_cast<long long>(o.context),
              o.context > c.max_position_embeddings ? " (beyond max_position_embeddings)" : "",
              o.mtp ? ", MTP drafting on" : "");

  const KvLayout layouts[2] = {KvLayout::kProductionFp8, KvLayout::kReferenceBf16};
  KvRowBytes rows[2];
  SequenceStateBytes state[2];
  int64_t total[2];
  for (int i = 0; i < 2; ++i) {
    rows[i] = kv_row_bytes(c, layouts[i]);
    state[i] = sequence_state_bytes(c, layouts[i]);
    total[i] = sequence_bytes(c, layouts[i], o.context, o.mtp);
  }
  const int64_t fixed0 = state[0].fixed() + (o.mtp ? state[0].mtp_ring : 0);
  const int64_t fixed1 = state[1].fixed() + (o.mtp ? state[1].mtp_ring : 0);
  print_row("", "fp8 (production layout)", "bf16 (reference layout)");
  print_row("row bytes (main / indexer)", std::to_string(rows[0].main_row) + " / " + std::to_string(rows[0].indexer_row),
            std::to_string(rows[1].main_row) + " / " + std::to_string(rows[1].indexer_row));
  print_row("growth per token, all layers", fmt("%.4f B", state[0].per_token), fmt("%.4f B", state[1].per_token));
  print_row("compressed rows at context", bytes_text(total[0] - fixed0), bytes_text(total[1] - fixed1));
  print_row("raw window ring", bytes_text(state[0].ring), bytes_text(state[1].ring));
  if (o.mtp) print_row("MTP raw window ring", bytes_text(state[0].mtp_ring), bytes_text(state[1].mtp_ring));
  print_row("fp32 compressor state", bytes_text(state[0].compressor), bytes_text(state[1].compressor));
  print_row("total per sequence", bytes_text(total[0]), bytes_text(total[1]));

  if (o.budget_gib > 0.0) {
    const auto budget = static_cast<int64_t>(std::floor(o.budget_gib * kGiB));
    std::printf("\nbudget %.2f GiB for sequence state:\n", o.budget_gib);
    int64_t fit[2], longest[2];
    for (int i = 0; i < 2; ++i) {
      fit[i] = sequences_that_fit(c, layouts[i], o.context, budget, o.mtp);
      longest[i] = max_context_tokens(c, layouts[i], budget, o.mtp);
    }
    print_row("sequences of this context", std::to_string(fit[0]), std::to_string(fit[1]));
    // The search stops at the model's max_position_embeddings: mark a result that hit it.
    auto tokens_text = [&](int64_t n) {
      return std::to_string(n) + (n == c.max_position_embeddings ? " (max_position_embeddings)" : "");
    };
    print_row("longest single context (tokens)", tokens_text(longest[0]), tokens_text(longest[1]));
  }
}

void setup(CLI::App& app) {
  auto opts = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("plan-memory", "Per-sequence KV / compressor state bytes of a model (spec 5.3)");
  cmd->add_option("--config", opts->config, "model config.json (official or transformers form)")->required();
  cmd->add_option("--context", opts->context, "context length in tokens (default 1048576)");
  cmd->add_option("--budget-gib", opts->budget_gib, "memory for sequence state, GiB: prints what fits");
  cmd->add_flag("--mtp", opts->mtp, "count the MTP layers' raw window (speculative drafting)");
  cmd->callback([opts] { run(*opts); });
}

}  // namespace
DSV4_REGISTER_COMMAND(plan_memory, setup);

}  // namespace dsv4::cli
