// `dsv4 plan-memory --config FILE --context N [--budget-gib X] [--mtp]`: per-sequence decode state of a model
// (spec §5.3) in the production FP8 layout and the bf16 reference layout, and what fits in a memory budget.
// With a layout (`--tp/--dp/--cp`, or `--deployment F`, whose model config is used when --config is not
// given) it answers the capacity question per rank (runtime/kv/capacity.h): with --budget-gib of state memory
// per rank, or else the deployment's memory.budget_per_rank minus the rank's weights and workspace (the
// `dsv4-launch plan` figures), how many sequences of the context each GPU holds and how long one context fits.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <utility>

#include "launcher/cli/command.h"
#include "launcher/launch/memory_plan.h"
#include "runtime/config/deployment_config.h"
#include "runtime/config/model_config.h"
#include "runtime/core/error.h"
#include "runtime/kv/capacity.h"
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
  std::string deployment;
  int64_t context = 1048576;
  double budget_gib = 0.0;
  bool mtp = false;
  ParallelLayout layout;
  bool layout_given = false;
};

// Per-rank capacity of a layout (the deployment's, or --tp/--dp/--cp) in both row layouts.
void print_capacity(const Opts& o, const ModelConfig& c, const ParallelLayout& layout, int64_t budget,
                    const std::string& budget_source) {
  std::printf("\ncapacity per rank, layout %s, state budget %s per rank (%s):\n", to_string(layout).c_str(),
              bytes_text(budget).c_str(), budget_source.c_str());
  const KvLayout layouts[2] = {KvLayout::kProductionFp8, KvLayout::kReferenceBf16};
  RankCapacity cap[2];
  for (int i = 0; i < 2; ++i) cap[i] = rank_capacity(c, layouts[i], layout, budget, o.context, o.mtp);
  print_row("", "fp8 (production layout)", "bf16 (reference layout)");
  print_row("state of one sequence on a rank", bytes_text(cap[0].bytes_per_sequence),
            bytes_text(cap[1].bytes_per_sequence));
  print_row("sequences of this context per GPU", std::to_string(cap[0].sequences_per_rank),
            std::to_string(cap[1].sequences_per_rank));
  print_row("sequences, all " + std::to_string(layout.dp) + " dp replicas",
            std::to_string(cap[0].sequences_total), std::to_string(cap[1].sequences_total));
  auto tokens_text = [&](int64_t n) {
    return std::to_string(n) + (n == c.max_position_embeddings ? " (max_position_embeddings)" : "");
  };
  print_row("longest single context (tokens)", tokens_text(cap[0].longest_context),
            tokens_text(cap[1].longest_context));
}

void run(const Opts& o) {
  DSV4_CHECK_ARG(!o.config.empty() || !o.deployment.empty()) << "plan-memory needs --config or --deployment";
  DSV4_CHECK_ARG(o.deployment.empty() || !o.layout_given)
      << "--deployment gives the layout: do not combine it with --tp/--dp/--cp";
  DeploymentConfig dep;
  if (!o.deployment.empty()) dep = load_deployment_config(o.deployment);
  const std::string config_path = o.config.empty() ? dep.model_config.string() : o.config;
  const ModelConfig c = load_model_config(config_path);
  DSV4_CHECK_ARG(o.context >= 0) << "--context must be >= 0, got " << o.context;
  DSV4_CHECK_ARG(o.budget_gib >= 0.0) << "--budget-gib must be >= 0, got " << o.budget_gib;
  int swa = 0, csa = 0, hca = 0;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const AttentionKind kind = c.attention_kind(l);
    (kind == AttentionKind::kSlidingWindow ? swa : kind == AttentionKind::kCompressed4 ? csa : hca)++;
  }
  std::printf("model %s: %lld layers (%d SWA, %d CSA ratio 4, %d HCA ratio 128), %lld MTP, window %lld\n",
              config_path.c_str(), static_cast<long long>(c.num_layers), swa, csa, hca,
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

  if (!o.deployment.empty()) {
    check_layout(c, dep.layout);
    int64_t budget = 0;
    std::string source;
    if (o.budget_gib > 0.0) {
      budget = static_cast<int64_t>(std::floor(o.budget_gib * kGiB));
      source = "--budget-gib";
    } else {
      const launch::MemoryPlan plan = launch::plan_memory(c, dep);
      budget = std::max<int64_t>(0, plan.budget - plan.weights.total() - plan.workspace);
      source = dep.name + ": budget_per_rank " + bytes_text(plan.budget) + " - weights " +
               bytes_text(plan.weights.total()) + " - workspace " + bytes_text(plan.workspace);
    }
    print_capacity(o, c, dep.layout, budget, source);
  } else if (o.layout_given) {
    DSV4_CHECK_ARG(o.budget_gib > 0.0) << "--tp/--dp/--cp need --budget-gib (state memory per rank)";
    check_layout(c, o.layout);
    print_capacity(o, c, o.layout, static_cast<int64_t>(std::floor(o.budget_gib * kGiB)), "--budget-gib");
  }
}

void setup(CLI::App& app) {
  auto opts = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("plan-memory", "Per-sequence KV / compressor state bytes of a model (spec 5.3)");
  cmd->add_option("--config", opts->config, "model config.json (official or transformers form)");
  cmd->add_option("--deployment", opts->deployment,
                  "deployment YAML: its layout and memory budget (and its model, without --config)");
  for (auto [flag, field] : {std::pair{"--tp", &opts->layout.tp}, std::pair{"--dp", &opts->layout.dp},
                             std::pair{"--cp", &opts->layout.cp}}) {
    cmd->add_option(flag, *field, "layout size for the capacity question (needs --budget-gib)")
        ->check(CLI::PositiveNumber)
        ->each([opts](const std::string&) { opts->layout_given = true; });
  }
  cmd->add_option("--context", opts->context, "context length in tokens (default 1048576)");
  cmd->add_option("--budget-gib", opts->budget_gib,
                  "memory for sequence state, GiB (per rank with a layout): prints what fits");
  cmd->add_flag("--mtp", opts->mtp, "count the MTP layers' raw window (speculative drafting)");
  cmd->callback([opts] { run(*opts); });
}

}  // namespace
DSV4_REGISTER_COMMAND(plan_memory, setup);

}  // namespace dsv4::cli
