// Bootstrap over MPI: host byte exchange on a private duplicate of MPI_COMM_WORLD.
#include <memory>

#include "parallel/bootstrap.h"
#include "parallel/mpi_util.h"

namespace dsv4::parallel {
namespace detail {

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<size_t>(length));
}

MPI_Comm mpi_dup_comm(MPI_Comm comm) {
  MPI_Comm dup = MPI_COMM_NULL;
  DSV4_MPI_CHECK(MPI_Comm_dup(comm, &dup));
  DSV4_MPI_CHECK(MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN));
  return dup;
}

void mpi_free_comm(MPI_Comm* comm) noexcept {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && *comm != MPI_COMM_NULL) MPI_Comm_free(comm);
  *comm = MPI_COMM_NULL;
}

namespace {

class MpiBootstrap final : public Bootstrap {
 public:
  MpiBootstrap() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    DSV4_CHECK_CODE(initialized, ErrorCode::kMpi) << "MPI bootstrap: MPI is not initialised (call MPI_Init first)";
    comm_ = mpi_dup_comm(MPI_COMM_WORLD);
    DSV4_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    DSV4_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  }
  ~MpiBootstrap() override { mpi_free_comm(&comm_); }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_gather(const void* mine, void* all, size_t bytes) override {
    const int count = mpi_count(bytes, "bootstrap all_gather");
    DSV4_MPI_CHECK(MPI_Allgather(mine, count, MPI_BYTE, all, count, MPI_BYTE, comm_));
  }

  void broadcast(void* data, size_t bytes, int root) override {
    DSV4_CHECK_ARG(root >= 0 && root < size_) << "bootstrap broadcast root " << root << " of " << size_;
    DSV4_MPI_CHECK(MPI_Bcast(data, mpi_count(bytes, "bootstrap broadcast"), MPI_BYTE, root, comm_));
  }

  void barrier() override { DSV4_MPI_CHECK(MPI_Barrier(comm_)); }

  MPI_Comm comm() const { return comm_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace

MPI_Comm mpi_bootstrap_comm(Bootstrap& bootstrap) {
  auto* mpi = dynamic_cast<MpiBootstrap*>(&bootstrap);
  return mpi ? mpi->comm() : MPI_COMM_NULL;
}

}  // namespace detail

std::unique_ptr<Bootstrap> make_mpi_bootstrap() { return std::make_unique<detail::MpiBootstrap>(); }

}  // namespace dsv4::parallel
