// NCCL communicator: device memory, stream-ordered, asynchronous (calls return once the work is queued).
//
// Lifecycle as NCCL intends: rank 0 creates a unique id, the Bootstrap broadcasts it, every rank calls
// ncclCommInitRank on its current CUDA device (the caller selects it, e.g. local rank % device count);
// groups come from ncclCommSplit; abort() is ncclCommAbort, which makes pending and future operations of
// this communicator fail instead of hanging. Reductions are NCCL's own (not rank-ordered, so not bitwise
// equal to the host backends).
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstring>

#include "parallel/backends.h"
#include "parallel/fault_inject.h"
#include "parallel/reduce.h"
#include "runtime/core/error.h"

/// Throws Error(kNccl) with NCCL's error string and its last detailed message (ncclGetLastError).
#define DSV4_NCCL_CHECK(expr)                                                                                 \
  do {                                                                                                        \
    const ncclResult_t dsv4_nccl_rc_ = (expr);                                                                \
    DSV4_CHECK_CODE(dsv4_nccl_rc_ == ncclSuccess, ::dsv4::ErrorCode::kNccl)                                   \
        << #expr << " failed: " << ncclGetErrorString(dsv4_nccl_rc_) << " (" << ncclGetLastError(nullptr) << ")"; \
  } while (0)

namespace dsv4::parallel::detail {
namespace {

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::kF32: return ncclFloat32;
    case DType::kF16: return ncclFloat16;
    case DType::kBF16: return ncclBfloat16;
    case DType::kF64: return ncclFloat64;
    case DType::kI32: return ncclInt32;
    case DType::kI64: return ncclInt64;
    case DType::kI8: return ncclInt8;
    default:
      // Data movement only (reductions are checked first): move the bytes.
      comm_element_size(dtype);
      return ncclUint8;
  }
}

/// Elements of `dtype` expressed in units of nccl_type(dtype).
size_t nccl_count(DType dtype, size_t count) {
  return nccl_type(dtype) == ncclUint8 ? count * comm_element_size(dtype) : count;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, int world_rank) : comm_(comm), world_rank_(world_rank) {
    DSV4_NCCL_CHECK(ncclCommUserRank(comm_, &rank_));
    DSV4_NCCL_CHECK(ncclCommCount(comm_, &size_));
  }
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);  // teardown never throws; an error here has nobody to report to
  }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string_view backend_name() const override { return "nccl"; }

  void all_reduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op, Stream stream) override {
    check_reducible(dtype, "all_reduce");
    begin("all_reduce");
    DSV4_NCCL_CHECK(ncclAllReduce(send, recv, count, nccl_type(dtype), nccl_op(op), comm_, stream));
  }

  void all_gather(const void* send, void* recv, size_t count_per_rank, DType dtype, Stream stream) override {
    begin("all_gather");
    DSV4_NCCL_CHECK(ncclAllGather(send, recv, nccl_count(dtype, count_per_rank), nccl_type(dtype), comm_, stream));
  }

  void reduce_scatter(const void* send, void* recv, size_t count_per_rank, DType dtype, ReduceOp op,
                      Stream stream) override {
    check_reducible(dtype, "reduce_scatter");
    begin("reduce_scatter");
    DSV4_NCCL_CHECK(ncclReduceScatter(send, recv, count_per_rank, nccl_type(dtype), nccl_op(op), comm_, stream));
  }

  void all_to_all_v(const AllToAllVArgs& args, Stream stream) override {
    const size_t elem = comm_element_size(args.dtype);
    const size_t n = static_cast<size_t>(size_);
    DSV4_CHECK_ARG(args.send_counts.size() == n && args.send_displs.size() == n && args.recv_counts.size() == n &&
                   args.recv_displs.size() == n)
        << "all_to_all_v: counts and displacements need " << n << " entries each";
    begin("all_to_all_v");
    // One group of point-to-point operations: NCCL schedules them together, so the order does not deadlock.
    DSV4_NCCL_CHECK(ncclGroupStart());
    ncclResult_t first_error = ncclSuccess;
    for (size_t p = 0; p < n && first_error == ncclSuccess; ++p) {
      if (args.send_counts[p])
        first_error = ncclSend(static_cast<const std::byte*>(args.send) + args.send_displs[p] * elem,
                               args.send_counts[p] * elem, ncclUint8, static_cast<int>(p), comm_, stream);
      if (first_error == ncclSuccess && args.recv_counts[p])
        first_error = ncclRecv(static_cast<std::byte*>(args.recv) + args.recv_displs[p] * elem,
                               args.recv_counts[p] * elem, ncclUint8, static_cast<int>(p), comm_, stream);
    }
    const ncclResult_t end = ncclGroupEnd();
    DSV4_NCCL_CHECK(first_error);
    DSV4_NCCL_CHECK(end);
  }

  void broadcast(void* buf, size_t count, DType dtype, int root, Stream stream) override {
    DSV4_CHECK_ARG(root >= 0 && root < size_) << "broadcast root " << root << " of " << size_ << " ranks";
    begin("broadcast");
    DSV4_NCCL_CHECK(ncclBroadcast(buf, buf, nccl_count(dtype, count), nccl_type(dtype), root, comm_, stream));
  }

  void send(const void* buf, size_t count, DType dtype, int peer, Stream stream) override {
    check_peer(peer, "send");
    begin("send");
    DSV4_NCCL_CHECK(ncclSend(buf, nccl_count(dtype, count), nccl_type(dtype), peer, comm_, stream));
  }

  void recv(void* buf, size_t count, DType dtype, int peer, Stream stream) override {
    check_peer(peer, "recv");
    begin("recv");
    DSV4_NCCL_CHECK(ncclRecv(buf, nccl_count(dtype, count), nccl_type(dtype), peer, comm_, stream));
  }

  std::unique_ptr<Communicator> split(int color, int key) override {
    begin("split");
    ncclComm_t child = nullptr;
    DSV4_NCCL_CHECK(ncclCommSplit(comm_, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &child, nullptr));
    if (!child) return nullptr;
    return std::make_unique<NcclCommunicator>(child, world_rank_);
  }

  void abort() noexcept override {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
  }

 private:
  void begin(std::string_view op) {
    DSV4_CHECK_CODE(comm_ != nullptr, ErrorCode::kAborted) << "nccl " << op << " on an aborted communicator";
    maybe_inject_fault(op, world_rank_);
  }

  void check_peer(int peer, std::string_view op) const {
    DSV4_CHECK_ARG(peer >= 0 && peer < size_ && peer != rank_)
        << op << ": peer " << peer << " is not another rank of this " << size_ << "-rank communicator";
  }

  ncclComm_t comm_ = nullptr;
  int world_rank_ = 0;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Bootstrap& bootstrap) {
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  // Every rank reaches the broadcast below, even one without a device, so that no peer waits forever;
  // the failure is reported after it.
  const bool usable = status == cudaSuccess && devices > 0;
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (bootstrap.rank() == 0 && usable) DSV4_NCCL_CHECK(ncclGetUniqueId(&id));
  bootstrap.broadcast(&id, sizeof id, 0);
  DSV4_CHECK_CODE(usable, ErrorCode::kCuda)
      << "the 'nccl' communicator needs a CUDA device: "
      << (status == cudaSuccess ? "no device found" : cudaGetErrorString(status));
  ncclComm_t comm = nullptr;
  DSV4_NCCL_CHECK(ncclCommInitRank(&comm, bootstrap.size(), id, bootstrap.rank()));
  return std::make_unique<NcclCommunicator>(comm, bootstrap.rank());
}

}  // namespace dsv4::parallel::detail
