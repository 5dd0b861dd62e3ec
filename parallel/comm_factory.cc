// Backend name -> Communicator implementation.
#include <array>
#include <atomic>
#include <sstream>

#include "parallel/backends.h"
#include "runtime/core/error.h"

namespace dsv4::parallel {
namespace {

#if defined(DSV4_WITH_NCCL)
constexpr std::array<std::string_view, 3> kBackends = {"inproc", "mpi", "nccl"};
#else
constexpr std::array<std::string_view, 2> kBackends = {"inproc", "mpi"};
#endif

std::string backend_list() {
  std::ostringstream out;
  for (size_t i = 0; i < kBackends.size(); ++i) out << (i ? ", " : "") << kBackends[i];
  return out.str();
}

std::atomic<int> g_abort_exit_code{1};

}  // namespace

namespace detail {
void set_abort_exit_code(int code) noexcept { g_abort_exit_code.store(code); }
int abort_exit_code() noexcept { return g_abort_exit_code.load(); }
}  // namespace detail

std::string_view reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kMin: return "min";
  }
  return "?";
}

size_t comm_element_size(DType dtype) {
  DSV4_CHECK_ARG(dtype_bits(dtype) % 8 == 0)
      << "communicator: " << dtype_name(dtype) << " has no whole-byte elements; send it as U8 bytes";
  return static_cast<size_t>(dtype_bits(dtype) / 8);
}

std::span<const std::string_view> available_backends() { return kBackends; }

std::unique_ptr<Communicator> make_communicator(std::string_view name, Bootstrap& bootstrap) {
  if (name == "inproc") return detail::make_inproc_communicator(bootstrap);
  if (name == "mpi") return detail::make_mpi_communicator(bootstrap);
  if (name == "nccl") {
#if defined(DSV4_WITH_NCCL)
    return detail::make_nccl_communicator(bootstrap);
#else
    DSV4_THROW(kUnsupported) << "communicator backend 'nccl' is not in this build (built without NCCL); available: "
                             << backend_list();
#endif
  }
  DSV4_THROW(kInvalidArgument) << "unknown communicator backend '" << name << "'; available: " << backend_list();
}

}  // namespace dsv4::parallel
