#include "launcher/server/mpi_plan_channel.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <thread>

#include "runtime/core/error.h"

namespace dsv4::serve {
namespace {

void check(int rc, const char* what) {
  DSV4_CHECK_CODE(rc == MPI_SUCCESS, ErrorCode::kMpi) << "plan channel: " << what << " failed (MPI error " << rc << ")";
}

}  // namespace

MpiPlanChannel::MpiPlanChannel() {
  check(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup");
  check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
}

MpiPlanChannel::~MpiPlanChannel() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiPlanChannel::exchange(v1::StepPlan& plan) {
  std::string bytes;
  uint64_t size = 0;
  if (rank_ == 0) {
    DSV4_CHECK(plan.SerializeToString(&bytes)) << "cannot serialize step plan " << plan.step_id();
    size = bytes.size();
  }
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Ibcast(&size, 1, MPI_UINT64_T, 0, comm_, &request), "MPI_Ibcast");
  if (rank_ == 0) {
    check(MPI_Wait(&request, MPI_STATUS_IGNORE), "MPI_Wait");
  } else {
    using Clock = std::chrono::steady_clock;
    const Clock::time_point start = Clock::now();
    std::chrono::microseconds pause{20};
    int done = 0;
    while (true) {
      check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test");
      if (done) break;
      if (Clock::now() - start < kSpin) continue;
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, kMaxPause);
    }
  }
  DSV4_CHECK(size <= static_cast<uint64_t>(INT32_MAX)) << "step plan of " << size << " bytes is too large";
  bytes.resize(size);
  if (size > 0) {
    check(MPI_Bcast(bytes.data(), static_cast<int>(size), MPI_BYTE, 0, comm_), "MPI_Bcast");
  }
  if (rank_ != 0) {
    plan.Clear();
    DSV4_CHECK(plan.ParseFromString(bytes)) << "rank " << rank_ << ": cannot parse the step plan";
  }
}

}  // namespace dsv4::serve
