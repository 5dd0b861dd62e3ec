// Mesh: world rank <-> (dp, cp, tp) coordinates and the expert-parallel position, pure arithmetic.
//
// Rank order (fastest first): tp, then cp, then dp:
//     rank = (dp_rank * cp + cp_rank) * tp + tp_rank
// so a TP group is `tp` consecutive ranks, which a launcher places inside one node (the all-reduces of
// the dense part are the most frequent and should ride NVLink). A CP group strides by tp, a DP group by
// tp * cp.
//
// Expert parallelism spans the world independently of the dense layout: ep divides the world size and
// EP groups are blocks of `ep` consecutive ranks (ep_rank = rank % ep); with ep < world the
// world / ep blocks are replicas that each hold every expert once. Experts are assigned to ep ranks in
// contiguous blocks (expert e lives on ep_rank e / (num_experts / ep)).
//
// Everything a layout must satisfy is checked by Mesh::create with a message naming the numbers:
// world = dp * tp * cp; ep divides world; heads, output groups and the dense FFN width divisible by tp;
// each rank's FFN slice a multiple of the FP8 block (128), so e.g. TP = 16 on a 3072-wide FFN
// (192 columns per rank) is refused; experts divisible by ep.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dsv4::parallel {

/// The deployment's layout (what --tp/--ep/--dp or a deployment YAML give).
struct MeshConfig {
  int world_size = 1;
  int dp = 1;
  int tp = 1;
  int ep = 1;
  int cp = 1;
};

/// The model numbers a layout depends on, as plain ints (parallel/ knows no model config).
struct MeshModelDims {
  int num_heads = 1;
  int o_groups = 1;           // output-projection groups, split over tp like heads
  int num_experts = 0;        // routed experts per MoE layer (0: a dense model)
  int64_t dense_ffn_width = 0;  // intermediate width of the TP-split dense / shared-expert FFN (0: none)
  int fp8_block = 128;        // block size of FP8 weight scales; TP slices must be multiples of it
};

/// Where one rank sits.
struct MeshCoord {
  int rank = 0;
  int dp_rank = 0;
  int cp_rank = 0;
  int tp_rank = 0;
  int ep_rank = 0;
  int ep_replica = 0;  // which block of `ep` ranks (0 when ep == world)
};

/// (color, key) for Communicator::split: ranks with the same color form the group, ordered by key.
struct SplitKey {
  int color = 0;
  int key = 0;
};

class Mesh {
 public:
  /// Validates `config` against `dims`; throws Error(kInvalidArgument) naming the first broken constraint.
  static Mesh create(const MeshConfig& config, const MeshModelDims& dims);
  /// Every broken constraint, one message each (empty when the layout is valid).
  static std::vector<std::string> violations(const MeshConfig& config, const MeshModelDims& dims);

  const MeshConfig& config() const { return config_; }
  const MeshModelDims& dims() const { return dims_; }
  int world_size() const { return config_.world_size; }

  MeshCoord coord(int rank) const;
  /// The world rank at (dp_rank, cp_rank, tp_rank).
  int rank_of(int dp_rank, int cp_rank, int tp_rank) const;

  /// Members (world ranks, in group-rank order) of the groups `rank` belongs to.
  std::vector<int> tp_group(int rank) const;
  std::vector<int> cp_group(int rank) const;
  std::vector<int> dp_group(int rank) const;
  std::vector<int> ep_group(int rank) const;

  /// Split keys that build the same groups from the world communicator (group rank = position in the
  /// member lists above).
  SplitKey tp_split(int rank) const;
  SplitKey cp_split(int rank) const;
  SplitKey dp_split(int rank) const;
  SplitKey ep_split(int rank) const;

  int heads_per_tp_rank() const { return dims_.num_heads / config_.tp; }
  int o_groups_per_tp_rank() const { return dims_.o_groups / config_.tp; }
  int64_t ffn_width_per_tp_rank() const { return dims_.dense_ffn_width / config_.tp; }
  int experts_per_ep_rank() const { return config_.ep ? dims_.num_experts / config_.ep : 0; }
  /// The ep rank owning expert `expert` (contiguous blocks).
  int expert_owner(int expert) const;
  /// The first expert of `ep_rank`; it owns [first, first + experts_per_ep_rank()).
  int first_expert(int ep_rank) const { return ep_rank * experts_per_ep_rank(); }

  /// "world=8 dp=2 cp=1 tp=4 ep=8".
  std::string str() const;

 private:
  Mesh(const MeshConfig& config, const MeshModelDims& dims) : config_(config), dims_(dims) {}
  void check_rank(int rank) const;

  MeshConfig config_;
  MeshModelDims dims_;
};

}  // namespace dsv4::parallel
