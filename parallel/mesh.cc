// Mesh arithmetic and layout validation.
#include "parallel/mesh.h"

#include <sstream>

#include "runtime/core/error.h"

namespace dsv4::parallel {
namespace {

// The tp values in [1, 64] that satisfy every tp-only constraint: offered in the error messages.
std::string valid_tp_values(const MeshModelDims& d) {
  std::ostringstream out;
  bool first = true;
  for (int tp = 1; tp <= 64; ++tp) {
    if (d.num_heads % tp || d.o_groups % tp) continue;
    if (d.dense_ffn_width && (d.dense_ffn_width % tp || (d.dense_ffn_width / tp) % d.fp8_block)) continue;
    out << (first ? "" : ", ") << tp;
    first = false;
  }
  return first ? "none" : out.str();
}

}  // namespace

std::vector<std::string> Mesh::violations(const MeshConfig& c, const MeshModelDims& d) {
  std::vector<std::string> problems;
  auto fail = [&](const std::ostringstream& s) { problems.push_back(s.str()); };
  const std::pair<const char*, int> positive[] = {{"world size", c.world_size}, {"dp", c.dp}, {"tp", c.tp},
                                                  {"ep", c.ep},                 {"cp", c.cp}};
  for (auto [name, value] : positive) {
    if (value < 1) {
      std::ostringstream s;
      s << name << " must be at least 1, got " << value;
      fail(s);
    }
  }
  if (!problems.empty()) return problems;
  if (d.num_heads < 1 || d.o_groups < 1 || d.num_experts < 0 || d.dense_ffn_width < 0 || d.fp8_block < 1) {
    std::ostringstream s;
    s << "model dims must be positive (heads " << d.num_heads << ", o_groups " << d.o_groups << ", experts "
      << d.num_experts << ", ffn " << d.dense_ffn_width << ", fp8 block " << d.fp8_block << ")";
    fail(s);
    return problems;
  }
  if (static_cast<int64_t>(c.dp) * c.tp * c.cp != c.world_size) {
    std::ostringstream s;
    s << "world size " << c.world_size << " != dp * tp * cp = " << c.dp << " * " << c.tp << " * " << c.cp << " = "
      << static_cast<int64_t>(c.dp) * c.tp * c.cp;
    fail(s);
  }
  if (c.world_size % c.ep) {
    std::ostringstream s;
    s << "ep=" << c.ep << " does not divide the world size " << c.world_size;
    fail(s);
  }
  if (d.num_heads % c.tp) {
    std::ostringstream s;
    s << "tp=" << c.tp << " does not divide the " << d.num_heads << " attention heads (valid tp: "
      << valid_tp_values(d) << ")";
    fail(s);
  }
  if (d.o_groups % c.tp) {
    std::ostringstream s;
    s << "tp=" << c.tp << " does not divide the " << d.o_groups << " output groups (valid tp: " << valid_tp_values(d)
      << ")";
    fail(s);
  }
  if (d.dense_ffn_width) {
    if (d.dense_ffn_width % c.tp) {
      std::ostringstream s;
      s << "tp=" << c.tp << " does not divide the " << d.dense_ffn_width << "-wide dense FFN (valid tp: "
        << valid_tp_values(d) << ")";
      fail(s);
    } else if ((d.dense_ffn_width / c.tp) % d.fp8_block) {
      std::ostringstream s;
      s << "tp=" << c.tp << " splits the " << d.dense_ffn_width << "-wide dense FFN into " << d.dense_ffn_width / c.tp
        << " columns per rank, not a multiple of the FP8 scale block " << d.fp8_block << " (valid tp: "
        << valid_tp_values(d) << ")";
      fail(s);
    }
  }
  if (d.num_experts % c.ep) {
    std::ostringstream s;
    s << "ep=" << c.ep << " does not divide the " << d.num_experts << " routed experts";
    fail(s);
  }
  return problems;
}

Mesh Mesh::create(const MeshConfig& config, const MeshModelDims& dims) {
  std::vector<std::string> problems = violations(config, dims);
  if (!problems.empty()) {
    std::ostringstream all;
    all << "invalid parallel layout (world=" << config.world_size << " dp=" << config.dp << " tp=" << config.tp
        << " ep=" << config.ep << " cp=" << config.cp << "): ";
    for (size_t i = 0; i < problems.size(); ++i) all << (i ? "; " : "") << problems[i];
    DSV4_THROW(kInvalidArgument) << all.str();
  }
  return Mesh(config, dims);
}

void Mesh::check_rank(int rank) const {
  DSV4_CHECK_ARG(rank >= 0 && rank < config_.world_size) << "rank " << rank << " outside the world of "
                                                         << config_.world_size;
}

MeshCoord Mesh::coord(int rank) const {
  check_rank(rank);
  MeshCoord c;
  c.rank = rank;
  c.tp_rank = rank % config_.tp;
  c.cp_rank = (rank / config_.tp) % config_.cp;
  c.dp_rank = rank / (config_.tp * config_.cp);
  c.ep_rank = rank % config_.ep;
  c.ep_replica = rank / config_.ep;
  return c;
}

int Mesh::rank_of(int dp_rank, int cp_rank, int tp_rank) const {
  DSV4_CHECK_ARG(dp_rank >= 0 && dp_rank < config_.dp && cp_rank >= 0 && cp_rank < config_.cp && tp_rank >= 0 &&
                 tp_rank < config_.tp)
      << "mesh coordinate (dp " << dp_rank << ", cp " << cp_rank << ", tp " << tp_rank << ") outside " << str();
  return (dp_rank * config_.cp + cp_rank) * config_.tp + tp_rank;
}

std::vector<int> Mesh::tp_group(int rank) const {
  const MeshCoord c = coord(rank);
  std::vector<int> out;
  for (int t = 0; t < config_.tp; ++t) out.push_back(rank_of(c.dp_rank, c.cp_rank, t));
  return out;
}

std::vector<int> Mesh::cp_group(int rank) const {
  const MeshCoord c = coord(rank);
  std::vector<int> out;
  for (int k = 0; k < config_.cp; ++k) out.push_back(rank_of(c.dp_rank, k, c.tp_rank));
  return out;
}

std::vector<int> Mesh::dp_group(int rank) const {
  const MeshCoord c = coord(rank);
  std::vector<int> out;
  for (int d = 0; d < config_.dp; ++d) out.push_back(rank_of(d, c.cp_rank, c.tp_rank));
  return out;
}

std::vector<int> Mesh::ep_group(int rank) const {
  const MeshCoord c = coord(rank);
  std::vector<int> out;
  for (int e = 0; e < config_.ep; ++e) out.push_back(c.ep_replica * config_.ep + e);
  return out;
}

SplitKey Mesh::tp_split(int rank) const {
  const MeshCoord c = coord(rank);
  return {c.dp_rank * config_.cp + c.cp_rank, c.tp_rank};
}
SplitKey Mesh::cp_split(int rank) const {
  const MeshCoord c = coord(rank);
  return {c.dp_rank * config_.tp + c.tp_rank, c.cp_rank};
}
SplitKey Mesh::dp_split(int rank) const {
  const MeshCoord c = coord(rank);
  return {c.cp_rank * config_.tp + c.tp_rank, c.dp_rank};
}
SplitKey Mesh::ep_split(int rank) const {
  const MeshCoord c = coord(rank);
  return {c.ep_replica, c.ep_rank};
}

int Mesh::expert_owner(int expert) const {
  DSV4_CHECK_ARG(expert >= 0 && expert < dims_.num_experts)
      << "expert " << expert << " outside [0, " << dims_.num_experts << ")";
  return expert / experts_per_ep_rank();
}

std::string Mesh::str() const {
  std::ostringstream s;
  s << "world=" << config_.world_size << " dp=" << config_.dp << " cp=" << config_.cp << " tp=" << config_.tp
    << " ep=" << config_.ep;
  return s.str();
}

}  // namespace dsv4::parallel
