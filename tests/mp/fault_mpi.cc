// A multi-rank program in which DSV4_FAULT_INJECT makes one rank throw in the middle of a collective.
//
// The failing rank's top-level handler (run_rank_main) prints "[rank R] fatal: ..." and calls MPI_Abort;
// mpirun then ends the ranks still blocked in the collective. Registered twice by tests/mp/CMakeLists.txt:
// without a fault it must succeed; with DSV4_FAULT_INJECT='rank=1,at=all_reduce#3' it must end non-zero
// with the message within seconds (tests/mp/expect_failure.sh), proving a failure never becomes a hang.
#include <mpi.h>

#include <cstdio>
#include <vector>

#include "parallel/bootstrap.h"
#include "parallel/communicator.h"
#include "parallel/rank_main.h"
#include "runtime/core/error.h"
#include "runtime/core/logging.h"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  using namespace dsv4::parallel;
  int rc = 0;
  {
    auto bootstrap = make_mpi_bootstrap();
    dsv4::set_log_rank(bootstrap->rank());
    std::unique_ptr<Communicator> comm;
    rc = run_rank_main(*bootstrap, nullptr, [&] { comm = make_communicator("mpi", *bootstrap); });
    if (rc == 0) {
      rc = run_rank_main(*bootstrap, comm.get(), [&] {
        const int n = comm->size();
        std::vector<float> x(4096);
        for (int step = 1; step <= 5; ++step) {
          for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(comm->rank() + step);
          comm->all_reduce(x.data(), x.data(), x.size(), dsv4::DType::kF32, ReduceOp::kSum, kDefaultStream);
          const float want = static_cast<float>(n * (n - 1) / 2 + n * step);
          DSV4_CHECK(x[0] == want && x.back() == want) << "step " << step << ": sum " << x[0] << " != " << want;
        }
        if (comm->rank() == 0) std::printf("fault_mpi: 5 all_reduce steps on %d ranks passed\n", n);
      });
    }
  }
  MPI_Finalize();
  return rc;
}
