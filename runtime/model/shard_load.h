// Loading one rank's shard of a checkpoint: which slice of every tensor the rank holds (ModelShard from the
// Mesh), the ShardPlan of the whole model (for `dsv4-launch plan` and the per-rank byte accounting), and a
// loader that reads only the owned bytes of each tensor into memory of its own and binds ModelWeights to it.
#pragma once

#include <cstdint>

#include "parallel/mesh.h"
#include "parallel/shard_plan.h"
#include "runtime/config/model_config.h"
#include "runtime/model/weights.h"

namespace dsv4 {

class Checkpoint;

/// The part of the model `rank` holds under `mesh` (heads, groups, shared-expert columns, vocabulary rows
/// from its tp rank; experts from its ep rank). The mesh must have been created with mesh_dims(config).
ModelShard model_shard_for_rank(const ModelConfig& config, const parallel::Mesh& mesh, int rank);

/// Every tensor of the model (the names of expected_tensors) with its split kind and alignment.
parallel::ShardPlan model_shard_plan(const ModelConfig& config, const parallel::Mesh& mesh);

/// "Checkpoint bytes / owners": what one rank would hold if every tensor were spread evenly over the ranks
/// sharing one copy of it, independent of which rank owns what: sum over the plan's tensors of bytes(t) / k(t),
/// with k = 1 for replicated tensors, tp for row-, column- and vocabulary-split tensors and ep for routed
/// experts (one copy of each layer's experts per EP group). The target of a loader's bytes_read: equal to
/// bytes_for_rank on balanced layouts (the ceil-sized vocabulary shards make the last tp rank hold less).
double even_share_bytes(const parallel::ShardPlan& plan);

/// What one rank's load did.
struct ShardLoadReport {
  uint64_t bytes_read = 0;      // tensor bytes read from the checkpoint files
  uint64_t bytes_planned = 0;   // what the ShardPlan says this rank owns (bytes_read must equal it)
  uint64_t tensors_read = 0;    // tensors of which this rank read any byte
  double seconds = 0.0;
};

/// Reads this rank's shard of `checkpoint` (only the owned byte ranges of each tensor) and binds the model
/// weights to it (weights.storage owns the memory; weights.shard == shard). The bytes are copied out of the
/// checkpoint's mapping after requesting exactly the owned pages (shard_load.cc says why not pread), so the
/// weights do not point into the checkpoint, which may be closed afterwards. Shapes are the shard's (see
/// the three-argument bind_weights); a column-split FP8 weight (wo_b, shared w2) is a dense [out, in_local]
/// matrix with its own [ceil(out/128), in_local/128] scale grid, so kernels::column_slice works on it. Validates the tensor set against
/// the config first, like Model::from_checkpoint. Throws Error(kInvalidCheckpoint) naming the tensor on a
/// shape, dtype or size mismatch.
ModelWeights load_shard(const Checkpoint& checkpoint, const ModelShard& shard, ShardLoadReport* report = nullptr);

}  // namespace dsv4
