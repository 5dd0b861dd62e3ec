// A PlanChannel over MPI whose receivers wait without spinning.
//
// A blocking MPI_Bcast polls at 100% of a core until the root sends, so an idle server whose followers sat in
// one would burn a core per rank. Here the plan's size travels with MPI_Ibcast: a follower tests it in a short
// spin (while steps follow each other, the next plan arrives within it), then sleeps between tests with a
// growing pause (up to kMaxPause), so an idle follower costs a few hundred MPI_Test calls per second. The plan
// bytes follow with a blocking broadcast (they are sent right after the size).
#pragma once

#include <mpi.h>

#include <chrono>

#include "runtime/serve/server.h"

namespace dsv4::serve {

class MpiPlanChannel final : public PlanChannel {
 public:
  /// Collective over MPI_COMM_WORLD (duplicates it).
  MpiPlanChannel();
  ~MpiPlanChannel() override;
  MpiPlanChannel(const MpiPlanChannel&) = delete;
  MpiPlanChannel& operator=(const MpiPlanChannel&) = delete;

  void exchange(v1::StepPlan& plan) override;

  static constexpr std::chrono::microseconds kSpin{2000};
  static constexpr std::chrono::microseconds kMaxPause{2000};

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
};

}  // namespace dsv4::serve
