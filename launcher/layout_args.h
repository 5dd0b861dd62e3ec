// The parallel layout of a model job from the command line: --dp/--tp/--ep/--cp, or the layout of a deployment
// YAML (configs/deployments/), shared by `dsv4 forward`, `dsv4 generate` and `dsv4-server`.
//
// Resolution: a flag given explicitly wins; then the deployment's layout; then the defaults for the job's world
// size W: tp = 1, cp = 1, dp = W / (tp * cp), ep = W (the routed experts spread over every rank).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "parallel/mesh.h"
#include "runtime/config/deployment_config.h"
#include "runtime/core/error.h"

namespace dsv4 {

struct LayoutArgs {
  std::string deployment;  // a deployment YAML whose `layout` is used (optional)
  int dp = 0, tp = 0, ep = 0, cp = 0;  // 0 = not given
};

/// Adds --dp, --tp, --ep, --cp (and --deployment when `with_deployment`) to `cmd`.
inline void add_layout_options(CLI::App* cmd, LayoutArgs& a, bool with_deployment) {
  if (with_deployment) {
    cmd->add_option("--deployment", a.deployment, "deployment YAML: its layout {dp, tp, ep, cp} (flags override it)");
  }
  cmd->add_option("--dp", a.dp, "attention replicas (default: world / (tp * cp))");
  cmd->add_option("--tp", a.tp, "tensor-parallel ranks of the dense part (default 1)");
  cmd->add_option("--ep", a.ep, "ranks the routed experts are spread over (default: the world size)");
  cmd->add_option("--cp", a.cp, "context-parallel ranks (default 1)");
}

/// The layout for a job of `world_size` ranks. `deployment` (may be null) supplies what the flags leave unset.
/// Throws Error(kInvalidArgument) for a negative value or when the deployment's world size is not the job's.
inline parallel::MeshConfig resolve_layout(const LayoutArgs& a, int world_size, const DeploymentConfig* deployment) {
  DSV4_CHECK_ARG(a.dp >= 0 && a.tp >= 0 && a.ep >= 0 && a.cp >= 0)
      << "--dp/--tp/--ep/--cp must be positive (got dp " << a.dp << ", tp " << a.tp << ", ep " << a.ep << ", cp "
      << a.cp << ")";
  parallel::MeshConfig m;
  m.world_size = world_size;
  if (deployment != nullptr) {
    DSV4_CHECK_ARG(deployment->layout.world() == world_size)
        << deployment->source.string() << ": layout " << to_string(deployment->layout) << " needs "
        << deployment->layout.world() << " ranks but the job has " << world_size
        << " (start it with mpirun -np " << deployment->layout.world() << ")";
    m.dp = static_cast<int>(deployment->layout.dp);
    m.tp = static_cast<int>(deployment->layout.tp);
    m.ep = static_cast<int>(deployment->layout.ep);
    m.cp = static_cast<int>(deployment->layout.cp);
  } else {
    m.tp = 1;
    m.cp = 1;
    m.ep = world_size;
    m.dp = 0;
  }
  if (a.tp > 0) m.tp = a.tp;
  if (a.cp > 0) m.cp = a.cp;
  if (a.ep > 0) m.ep = a.ep;
  if (a.dp > 0) {
    m.dp = a.dp;
  } else if (deployment == nullptr || a.tp > 0 || a.cp > 0) {
    m.dp = world_size / (m.tp * m.cp) > 0 ? world_size / (m.tp * m.cp) : 1;
  }
  return m;
}

}  // namespace dsv4
