#include "launcher/launch/memory_plan.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "parallel/mesh.h"
#include "runtime/core/dtype.h"
#include "runtime/core/error.h"
#include "runtime/kv/state_bytes.h"
#include "runtime/model/model_parallel.h"
#include "runtime/model/shard_load.h"

namespace dsv4::launch {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

std::string format_bytes(double bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 4) {
    bytes /= 1024.0;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.2f %s", bytes, kUnits[u]);
  return buf;
}

int64_t SequenceState::at(int64_t tokens, int64_t cp) const {
  const double growing = bytes_per_token * static_cast<double>(tokens) / static_cast<double>(cp);
  return static_cast<int64_t>(growing + 0.5) + ring_bytes + compressor_bytes;
}

RankWeights weights_per_rank(const ModelConfig& model, const ParallelLayout& layout) {
  check_layout(model, layout);
  // The runtime's own ShardPlan (what load_shard reads), so the plan and the loader cannot disagree.
  const parallel::Mesh mesh = parallel::Mesh::create(
      {static_cast<int>(layout.world()), static_cast<int>(layout.dp), static_cast<int>(layout.tp),
       static_cast<int>(layout.ep), static_cast<int>(layout.cp)},
      mesh_dims(model));
  const parallel::ShardPlan plan = model_shard_plan(model, mesh);
  // Rank 0 holds the most: its vocabulary shard is a full ceil(V/tp) rows (the last tp rank's may be
  // shorter); every other split is even, and every EP slot holds E / ep experts of each layer.
  RankWeights w;
  for (const parallel::TensorSpec& spec : plan.tensors()) {
    const auto bytes = static_cast<int64_t>(plan.shard(spec, 0).range.bytes());
    switch (spec.split) {
      case parallel::SplitKind::kReplicated: w.replicated += bytes; break;
      case parallel::SplitKind::kExpert: w.experts += bytes; break;
      default: w.tp_shard += bytes; break;
    }
  }
  return w;
}

SequenceState sequence_state(const ModelConfig& m) {
  // The runtime's own state accounting (runtime/kv), in the production FP8 layout. The MTP ring is counted
  // too: a server drafting with MTP holds it for every sequence.
  const SequenceStateBytes b = sequence_state_bytes(m, KvLayout::kProductionFp8);
  const KvRowBytes rows = kv_row_bytes(m, KvLayout::kProductionFp8);
  SequenceState s;
  s.bytes_per_token = b.per_token;
  s.ring_bytes = b.ring + b.mtp_ring;
  s.compressor_bytes = b.compressor;
  s.main_row_bytes = rows.main_row;
  s.indexer_row_bytes = rows.indexer_row;
  return s;
}

MemoryPlan plan_memory(const ModelConfig& model, const DeploymentConfig& dep) {
  MemoryPlan p;
  const ParallelLayout& l = dep.layout;
  p.weights = weights_per_rank(model, l);
  p.state = sequence_state(model);
  p.sequences_per_rank = ceil_div(dep.scheduler.max_running, l.dp);
  const int64_t max_context = dep.scheduler.max_prompt_tokens;
  p.workspace = deployment_workspace_bytes(model, l, dep.scheduler);
  const int64_t fixed_state = p.sequences_per_rank * (p.state.ring_bytes + p.state.compressor_bytes);
  const int64_t longest_growth = p.state.at(max_context, l.cp) - p.state.ring_bytes - p.state.compressor_bytes;
  p.required = p.weights.total() + p.workspace + fixed_state + longest_growth;
  p.budget = dep.memory_budget_per_rank;
  const int64_t left = p.budget - p.weights.total() - p.workspace - fixed_state;
  p.max_context_sequences = longest_growth > 0 ? std::max<int64_t>(0, left / longest_growth) : 0;
  p.state_budget = RankMemory{0, p.budget, p.weights.total(), p.workspace}.state();
  return p;
}

nlohmann::json plan_to_json(const ModelConfig& m, const DeploymentConfig& dep, const MemoryPlan& p) {
  const ParallelLayout& l = dep.layout;
  nlohmann::json j;
  j["deployment"] = dep.name;
  j["layout"] = {{"dp", l.dp}, {"tp", l.tp}, {"ep", l.ep}, {"cp", l.cp}, {"world", l.world()}};
  j["nodes"] = dep.nodes;
  j["ranks_per_node"] = dep.ranks_per_node;
  j["gpus_per_node"] = dep.gpus_per_node;
  j["ownership"] = {{"experts_per_rank", m.num_routed_experts / l.ep},
                    {"heads_per_tp_rank", m.num_heads / l.tp},
                    {"o_groups_per_tp_rank", m.o_groups / l.tp},
                    {"shared_ffn_columns_per_tp_rank", m.moe_intermediate_size / l.tp},
                    {"vocab_rows_per_tp_rank", ceil_div(m.vocab_size, l.tp)},
                    {"expert_replicas", l.world() / l.ep}};
  j["weights"] = {{"replicated", p.weights.replicated},
                  {"tp_shard", p.weights.tp_shard},
                  {"experts", p.weights.experts},
                  {"total", p.weights.total()}};
  j["state"] = {{"bytes_per_token", p.state.bytes_per_token},     {"ring_bytes", p.state.ring_bytes},
                {"compressor_bytes", p.state.compressor_bytes},   {"main_row_bytes", p.state.main_row_bytes},
                {"indexer_row_bytes", p.state.indexer_row_bytes}, {"sequences_per_rank", p.sequences_per_rank}};
  j["workspace"] = p.workspace;
  j["required"] = p.required;
  j["budget"] = p.budget;
  j["max_context_sequences"] = p.max_context_sequences;
  j["state_budget"] = p.state_budget;
  j["fits"] = p.fits();
  return j;
}

std::string format_plan(const ModelConfig& m, const DeploymentConfig& dep, const MemoryPlan& p) {
  const ParallelLayout& l = dep.layout;
  std::ostringstream o;
  o << "deployment " << dep.name << ": " << dep.nodes << " node(s) x " << dep.ranks_per_node << " "
    << (dep.uses_gpus() ? "GPU" : "CPU") << " rank(s) = " << dep.world_size() << " ranks\n";
  o << "layout     " << to_string(l) << "  (rank = (dp_index*cp + cp_index)*tp + tp_index; EP slot = rank % ep)\n";
  o << "ownership\n";
  const int64_t epr = m.num_routed_experts / l.ep;
  o << "  routed experts  " << epr << " per rank per layer (" << m.num_routed_experts << " / ep=" << l.ep << "), "
    << l.world() / l.ep << " cop" << (l.world() / l.ep == 1 ? "y" : "ies") << " of each expert\n";
  o << "  heads           " << m.num_heads / l.tp << " per TP rank, " << m.o_groups / l.tp << " output group(s)\n";
  o << "  shared expert   " << m.moe_intermediate_size / l.tp << " FFN columns per TP rank\n";
  o << "  vocab shard     " << ceil_div(m.vocab_size, l.tp) << " rows per TP rank (embedding and LM head)\n";
  // Coordinates and expert ownership come from the runtime's own Mesh, so the plan shows what the ranks do.
  const parallel::Mesh mesh = parallel::Mesh::create(
      {static_cast<int>(l.world()), static_cast<int>(l.dp), static_cast<int>(l.tp), static_cast<int>(l.ep),
       static_cast<int>(l.cp)},
      mesh_dims(m));
  const int64_t shown = std::min<int64_t>(l.world(), 8);
  for (int64_t r = 0; r < shown; ++r) {
    const parallel::MeshCoord c = mesh.coord(static_cast<int>(r));
    const int first = mesh.first_expert(c.ep_rank);
    o << "  rank " << r << ": dp " << c.dp_rank << " cp " << c.cp_rank << " tp " << c.tp_rank << " | heads ["
      << c.tp_rank * mesh.heads_per_tp_rank() << ", " << (c.tp_rank + 1) * mesh.heads_per_tp_rank() << ") | experts ["
      << first << ", " << first + mesh.experts_per_ep_rank() << ")\n";
  }
  if (shown < l.world()) o << "  ... (" << l.world() - shown << " more ranks, same rule)\n";
  o << "memory per rank\n";
  o << "  weights         " << format_bytes(static_cast<double>(p.weights.total())) << " = replicated "
    << format_bytes(static_cast<double>(p.weights.replicated)) << " + TP shard "
    << format_bytes(static_cast<double>(p.weights.tp_shard)) << " + experts "
    << format_bytes(static_cast<double>(p.weights.experts)) << "\n";
  char line[200];
  std::snprintf(line, sizeof(line), "%.4f B/token (rows %lld B main, %lld B indexer)", p.state.bytes_per_token,
                static_cast<long long>(p.state.main_row_bytes), static_cast<long long>(p.state.indexer_row_bytes));
  o << "  state/sequence  " << line << " + ring " << format_bytes(static_cast<double>(p.state.ring_bytes))
    << " + compressors " << format_bytes(static_cast<double>(p.state.compressor_bytes)) << "\n";
  o << "                  at 4K: " << format_bytes(static_cast<double>(p.state.at(4096, l.cp)))
    << ", at 128K: " << format_bytes(static_cast<double>(p.state.at(131072, l.cp)))
    << ", at max_prompt_tokens=" << dep.scheduler.max_prompt_tokens << ": "
    << format_bytes(static_cast<double>(p.state.at(dep.scheduler.max_prompt_tokens, l.cp))) << "\n";
  o << "  workspace       " << format_bytes(static_cast<double>(p.workspace)) << " (step of "
    << ceil_div(dep.scheduler.max_batch_tokens, l.dp) << " tokens per replica)\n";
  o << "  required        " << format_bytes(static_cast<double>(p.required))
    << " = weights + workspace + fixed state of " << p.sequences_per_rank
    << " sequences + one max_prompt_tokens sequence\n";
  o << "  budget          " << format_bytes(static_cast<double>(p.budget)) << " -> "
    << (p.fits() ? "FITS" : "DOES NOT FIT") << "; " << p.max_context_sequences
    << " sequence(s) at max_prompt_tokens fit in what is left\n";
  o << "  state budget    "
    << (p.state_budget > 0 ? format_bytes(static_cast<double>(p.state_budget)) : std::string("none"))
    << " = budget - weights - workspace (dsv4-server's state pool per rank"
    << (p.state_budget > 0 ? ")\n" : "; it refuses to start)\n");
  return o.str();
}

}  // namespace dsv4::launch
