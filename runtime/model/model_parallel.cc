// Group construction for a sharded model, and the one-rank world of a single-process model.
#include "runtime/model/model_parallel.h"

#include "parallel/bootstrap.h"
#include "runtime/core/env.h"
#include "runtime/core/error.h"
#include "runtime/model/weights.h"

namespace dsv4 {

parallel::MeshModelDims mesh_dims(const ModelConfig& config) {
  parallel::MeshModelDims d;
  d.num_heads = static_cast<int>(config.num_heads);
  d.o_groups = static_cast<int>(config.o_groups);
  d.num_experts = static_cast<int>(config.num_routed_experts);
  d.dense_ffn_width = shared_expert_width(config);
  d.fp8_block = static_cast<int>(config.fp8_block);
  return d;
}

ModelGroups make_model_groups(parallel::Communicator& world, const parallel::Mesh& mesh) {
  DSV4_CHECK_ARG(world.size() == mesh.world_size())
      << "the job has " << world.size() << " ranks but the layout " << mesh.str() << " needs " << mesh.world_size();
  ModelGroups g{mesh, world.rank(), nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
  // Every rank makes the same four splits in the same order (split is collective over the world).
  const parallel::SplitKey tp = mesh.tp_split(g.rank), ep = mesh.ep_split(g.rank), dp = mesh.dp_split(g.rank),
                           cp = mesh.cp_split(g.rank);
  g.tp = world.split(tp.color, tp.key);
  g.ep = world.split(ep.color, ep.key);
  g.dp = world.split(dp.color, dp.key);
  g.cp = world.split(cp.color, cp.key);
  // The pipeline's second groups (same colours and keys: the same members), where one EP exchange can agree on
  // the pipeline: EP groups inside one replica (identical batches) or made of whole replicas.
  const int replica = mesh.config().tp * mesh.config().cp, ep_size = mesh.config().ep;
  if (ep_size % replica == 0 || replica % ep_size == 0) {
    g.tp2 = world.split(tp.color, tp.key);
    g.ep2 = world.split(ep.color, ep.key);
    g.cp2 = world.split(cp.color, cp.key);
  }
  return g;
}

ModelParallel ModelGroups::parallel(bool deterministic) const {
  ModelParallel p{tp.get(), ep.get(), deterministic, cp.get()};
  p.second = {tp2.get(), ep2.get(), cp2.get()};
  const int replica = mesh.config().tp * mesh.config().cp;
  p.pipeline_agree_over_ep = mesh.config().dp > 1 && mesh.config().ep > replica;
  p.pipeline_min_tokens = env::get_int(env::kPipelineMinTokens, 0, int64_t{1} << 40);
  p.cp_overlap = env::get_bool(env::kCpOverlap);
  return p;
}

// One in-process world of size 1; its communicators are used from the thread that made them, which is
// fine for a one-rank world (every collective is a local copy and never waits).
struct LocalGroups::Impl {
  parallel::InProcWorld world{1};
  std::unique_ptr<parallel::Bootstrap> bootstrap;
  std::unique_ptr<parallel::Communicator> comm, tp, ep;
};

LocalGroups::LocalGroups() : impl_(std::make_unique<Impl>()) {
  impl_->bootstrap = impl_->world.bootstrap(0);
  impl_->comm = parallel::make_communicator("inproc", *impl_->bootstrap);
  impl_->tp = impl_->comm->split(0, 0);
  impl_->ep = impl_->comm->split(0, 0);
}

LocalGroups::~LocalGroups() = default;

ModelParallel LocalGroups::parallel(bool deterministic) const {
  return ModelParallel{impl_->tp.get(), impl_->ep.get(), deterministic};
}

}  // namespace dsv4
