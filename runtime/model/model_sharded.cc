// One rank of a sharded model from a checkpoint (load_shard + the sharded constructor), and the gather of
// vocabulary-sharded logits into whole rows for tools and tests. A file of its own so that programs that
// never load shards do not link the shard loader.
#include <algorithm>
#include <cstring>
#include <vector>

#include "runtime/checkpoint/checkpoint.h"
#include "runtime/core/error.h"
#include "runtime/model/model.h"
#include "runtime/model/shard_load.h"

namespace dsv4 {

Model Model::from_checkpoint_sharded(const Checkpoint& checkpoint, Numerics numerics, const ModelParallel& parallel,
                                     const ModelShard& shard, ShardLoadReport* report) {
  ModelWeights w = load_shard(checkpoint, shard, report);
  return Model(checkpoint.config(), std::move(w), kernels::make_cpu_backend(), numerics, parallel);
}

Tensor gather_full_logits(const Model& model, const Tensor& logits, int64_t vocab_begin, int root) {
  parallel::Communicator& tp = *model.parallel().tp;
  const int64_t V = model.config().vocab_size;
  DSV4_CHECK_ARG(logits.dtype() == DType::kF32 && logits.shape().rank() == 2)
      << "gather_full_logits: logits must be [rows, vocab_rows] F32, not " << logits.shape().str();
  DSV4_CHECK_ARG(root < tp.size()) << "gather_full_logits: root " << root << " is not a TP rank";
  const int64_t rows = logits.shape()[0], cols = logits.shape()[1];
  // Shards may differ in width (ceil-sized, the last one shorter): exchange (begin, width, rows) first,
  // then every shard padded to the widest.
  const int n = tp.size();
  const int64_t mine[3] = {vocab_begin, cols, rows};
  std::vector<int64_t> info(3 * static_cast<size_t>(n));
  if (n == 1) {
    std::copy_n(mine, 3, info.data());
  } else {
    tp.all_gather(mine, info.data(), 3, DType::kI64, parallel::kDefaultStream);
  }
  int64_t widest = 0, covered = 0;
  for (int q = 0; q < n; ++q) {
    DSV4_CHECK_ARG(info[3 * q + 2] == rows)
        << "gather_full_logits: TP rank " << q << " has " << info[3 * q + 2] << " rows, this rank " << rows;
    DSV4_CHECK_ARG(info[3 * q] == covered) << "gather_full_logits: vocabulary shards are not contiguous at TP rank "
                                           << q << " (begins at " << info[3 * q] << ", expected " << covered << ")";
    covered += info[3 * q + 1];
    widest = std::max(widest, info[3 * q + 1]);
  }
  DSV4_CHECK_ARG(covered == V) << "gather_full_logits: shards cover " << covered << " of " << V << " ids";
  std::vector<float> padded(rows * widest, 0.0f);
  for (int64_t r = 0; r < rows; ++r) std::copy_n(logits.as<const float>() + r * cols, cols, padded.data() + r * widest);
  const size_t block = static_cast<size_t>(rows * widest);
  const bool receive = root < 0 || tp.rank() == root;
  std::vector<float> all(receive ? block * n : 0);
  if (n == 1) {
    std::copy(padded.begin(), padded.end(), all.begin());
  } else if (root < 0) {
    tp.all_gather(padded.data(), all.data(), block, DType::kF32, parallel::kDefaultStream);
  } else if (tp.rank() == root) {
    for (int q = 0; q < n; ++q) {
      if (q == root) {
        std::copy(padded.begin(), padded.end(), all.begin() + q * block);
      } else if (block > 0) {
        tp.recv(all.data() + q * block, block, DType::kF32, q, parallel::kDefaultStream);
      }
    }
  } else if (block > 0) {
    tp.send(padded.data(), block, DType::kF32, root, parallel::kDefaultStream);
  }
  if (!receive) return Tensor(DType::kF32, Shape{0, V});
  Tensor full(DType::kF32, Shape{rows, V});
  for (int q = 0; q < n; ++q) {
    const int64_t begin = info[3 * q], width = info[3 * q + 1];
    for (int64_t r = 0; r < rows; ++r) {
      std::copy_n(all.data() + q * block + r * widest, width, full.as<float>() + r * V + begin);
    }
  }
  return full;
}

}  // namespace dsv4
