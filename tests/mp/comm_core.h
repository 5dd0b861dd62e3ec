// Backend-agnostic Communicator cases (nccl_m2n style): each takes a Communicator& and the memory the
// backend works on, computes its expected values in closed form, and checks them with gtest EXPECTs.
// Front ends: tests/unit/parallel/comm_inproc_test.cc (threads), comm_mpi.cc (mpirun), comm_nccl_mpi.cc.
//
// Cases never ASSERT between collectives: an early return on one rank would leave its peers waiting.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "parallel/communicator.h"
#include "runtime/core/float_formats.h"

namespace dsv4::parallel::testing {

/// Where the buffers handed to the communicator live (host for mpi/inproc, device for nccl).
class CommMemory {
 public:
  virtual ~CommMemory() = default;
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* ptr) = 0;
  virtual void upload(void* dst, const void* src, size_t bytes) = 0;
  virtual void download(void* dst, const void* src, size_t bytes) = 0;
  virtual Stream stream() { return kDefaultStream; }
};

class HostMemory final : public CommMemory {
 public:
  void* allocate(size_t bytes) override { return ::operator new(bytes ? bytes : 1); }
  void release(void* ptr) override { ::operator delete(ptr); }
  void upload(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
};

/// A buffer of `T` in backend memory, initialised from a host vector.
template <typename T>
class CommBuffer {
 public:
  CommBuffer(CommMemory& memory, const std::vector<T>& init) : memory_(memory), count_(init.size()) {
    ptr_ = memory_.allocate(count_ * sizeof(T));
    if (count_) memory_.upload(ptr_, init.data(), count_ * sizeof(T));
  }
  CommBuffer(CommMemory& memory, size_t count) : CommBuffer(memory, std::vector<T>(count, T{})) {}
  ~CommBuffer() { memory_.release(ptr_); }
  CommBuffer(const CommBuffer&) = delete;
  CommBuffer& operator=(const CommBuffer&) = delete;
  T* data() { return static_cast<T*>(ptr_); }
  std::vector<T> read() const {
    std::vector<T> out(count_);
    if (count_) memory_.download(out.data(), ptr_, count_ * sizeof(T));
    return out;
  }

 private:
  CommMemory& memory_;
  size_t count_;
  void* ptr_;
};

/// Options a backend can switch off (NCCL has no bitwise rank-order guarantee).
struct CoreOptions {
  bool rank_ordered_reductions = true;
};

// ---------------------------------------------------------------------------------------------------------
// all_reduce: closed forms for sum/max/min over f32, bf16, i32, i64; zero count; in place; rank order.

inline void case_all_reduce(Communicator& comm, CommMemory& mem, const CoreOptions& options = {}) {
  const int n = comm.size(), r = comm.rank();
  const size_t count = 37;  // odd: uneven chunks in chunked implementations
  Stream s = mem.stream();
  {  // f32 sum/max/min of exact small values: x = r + 0.5 i
    std::vector<float> x(count);
    for (size_t i = 0; i < count; ++i) x[i] = static_cast<float>(r) + 0.5f * static_cast<float>(i);
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin}) {
      CommBuffer<float> in(mem, x), out(mem, count);
      comm.all_reduce(in.data(), out.data(), count, DType::kF32, op, s);
      std::vector<float> got = out.read();
      for (size_t i = 0; i < count; ++i) {
        const float half_i = 0.5f * static_cast<float>(i);
        float want = op == ReduceOp::kSum   ? static_cast<float>(n * (n - 1) / 2) + n * half_i
                     : op == ReduceOp::kMax ? static_cast<float>(n - 1) + half_i
                                            : half_i;
        EXPECT_EQ(got[i], want) << reduce_op_name(op) << " i=" << i << " rank " << r << "/" << n;
      }
    }
  }
  {  // i32 and i64 sum: x = 1000 r + i (i64 beyond 2^32: + r * 2^33)
    std::vector<int32_t> a(count);
    std::vector<int64_t> b(count);
    for (size_t i = 0; i < count; ++i) {
      a[i] = 1000 * r + static_cast<int32_t>(i);
      b[i] = (int64_t{r} << 33) + static_cast<int64_t>(i);
    }
    CommBuffer<int32_t> ai(mem, a), ao(mem, count);
    CommBuffer<int64_t> bi(mem, b), bo(mem, count);
    comm.all_reduce(ai.data(), ao.data(), count, DType::kI32, ReduceOp::kSum, s);
    comm.all_reduce(bi.data(), bo.data(), count, DType::kI64, ReduceOp::kMin, s);
    std::vector<int32_t> ga = ao.read();
    std::vector<int64_t> gb = bo.read();
    for (size_t i = 0; i < count; ++i) {
      EXPECT_EQ(ga[i], 1000 * n * (n - 1) / 2 + n * static_cast<int32_t>(i));
      EXPECT_EQ(gb[i], static_cast<int64_t>(i));
    }
  }
  {  // bf16 sum of exact values (r + 1) / 4, in place
    std::vector<uint16_t> x(count, f32_to_bf16(0.25f * static_cast<float>(r + 1)));
    CommBuffer<uint16_t> buf(mem, x);
    comm.all_reduce(buf.data(), buf.data(), count, DType::kBF16, ReduceOp::kSum, s);
    for (uint16_t v : buf.read()) EXPECT_EQ(bf16_to_f32(v), 0.25f * static_cast<float>(n * (n + 1) / 2));
  }
  if (options.rank_ordered_reductions) {
    // Values whose f32 sum depends on the order: the result must be the left-to-right sum over ranks.
    std::vector<float> x(count);
    auto value = [](int rank, size_t i) { return 1.0f / static_cast<float>(3 + rank * 7 + static_cast<int>(i)); };
    for (size_t i = 0; i < count; ++i) x[i] = value(r, i) * (r % 2 ? 1e7f : 1.0f);
    CommBuffer<float> buf(mem, x);
    comm.all_reduce(buf.data(), buf.data(), count, DType::kF32, ReduceOp::kSum, s);
    std::vector<float> got = buf.read();
    std::vector<uint16_t> xb(count);
    for (size_t i = 0; i < count; ++i) xb[i] = f32_to_bf16(value(r, i));
    CommBuffer<uint16_t> bbuf(mem, xb);
    comm.all_reduce(bbuf.data(), bbuf.data(), count, DType::kBF16, ReduceOp::kSum, s);
    std::vector<uint16_t> gotb = bbuf.read();
    for (size_t i = 0; i < count; ++i) {
      float want = 0.0f, want_b = 0.0f;
      for (int p = 0; p < n; ++p) {
        want += value(p, i) * (p % 2 ? 1e7f : 1.0f);
        want_b += bf16_to_f32(f32_to_bf16(value(p, i)));
      }
      EXPECT_EQ(got[i], want) << "f32 rank-order sum, i=" << i;
      EXPECT_EQ(gotb[i], f32_to_bf16(want_b)) << "bf16 rank-order sum, i=" << i;
    }
  }
  {  // zero elements: still a collective every rank joins
    CommBuffer<float> empty(mem, 0);
    comm.all_reduce(empty.data(), empty.data(), 0, DType::kF32, ReduceOp::kSum, s);
  }
}

// ---------------------------------------------------------------------------------------------------------
inline void case_all_gather(Communicator& comm, CommMemory& mem) {
  const int n = comm.size(), r = comm.rank();
  for (size_t count : {size_t{0}, size_t{1}, size_t{5}}) {
    std::vector<int32_t> mine(count);
    for (size_t j = 0; j < count; ++j) mine[j] = r * 10 + static_cast<int32_t>(j);
    CommBuffer<int32_t> in(mem, mine), out(mem, count * n);
    comm.all_gather(in.data(), out.data(), count, DType::kI32, mem.stream());
    std::vector<int32_t> got = out.read();
    for (int p = 0; p < n; ++p)
      for (size_t j = 0; j < count; ++j) EXPECT_EQ(got[p * count + j], p * 10 + static_cast<int32_t>(j));
  }
}

inline void case_reduce_scatter(Communicator& comm, CommMemory& mem) {
  const int n = comm.size(), r = comm.rank();
  const size_t block = 3;
  std::vector<int64_t> x(block * n);
  for (int b = 0; b < n; ++b)
    for (size_t j = 0; j < block; ++j) x[b * block + j] = r * 100 + b * 10 + static_cast<int64_t>(j);
  CommBuffer<int64_t> in(mem, x), out(mem, block);
  comm.reduce_scatter(in.data(), out.data(), block, DType::kI64, ReduceOp::kSum, mem.stream());
  std::vector<int64_t> got = out.read();
  for (size_t j = 0; j < block; ++j) EXPECT_EQ(got[j], 100 * n * (n - 1) / 2 + n * (r * 10 + static_cast<int64_t>(j)));
  // max over f32 blocks
  std::vector<float> y(block * n);
  for (int b = 0; b < n; ++b)
    for (size_t j = 0; j < block; ++j) y[b * block + j] = static_cast<float>((r + b) % n);
  CommBuffer<float> yin(mem, y), yout(mem, block);
  comm.reduce_scatter(yin.data(), yout.data(), block, DType::kF32, ReduceOp::kMax, mem.stream());
  for (float v : yout.read()) EXPECT_EQ(v, static_cast<float>(n - 1));
}

// ---------------------------------------------------------------------------------------------------------
// all_to_all_v with uneven counts: rank 0 sends nothing at all; others send (r + 2p) % 3 elements to p.
inline size_t a2a_count(int from, int to) { return from == 0 ? 0 : static_cast<size_t>((from + 2 * to) % 3); }
inline int32_t a2a_value(int from, int to, size_t j) { return from * 10000 + to * 100 + static_cast<int32_t>(j); }

inline void case_all_to_all_v(Communicator& comm, CommMemory& mem) {
  const int n = comm.size(), r = comm.rank();
  std::vector<size_t> sc(n), sd(n), rc(n), rd(n);
  std::vector<int32_t> send;
  size_t recv_total = 0;
  for (int p = 0; p < n; ++p) {
    sc[p] = a2a_count(r, p);
    sd[p] = send.size();
    for (size_t j = 0; j < sc[p]; ++j) send.push_back(a2a_value(r, p, j));
    rc[p] = a2a_count(p, r);
  }
  // Receive in reverse peer order with a gap of one element: displacements need not be increasing.
  for (int p = n - 1; p >= 0; --p) {
    rd[p] = recv_total;
    recv_total += rc[p] + 1;
  }
  CommBuffer<int32_t> in(mem, send), out(mem, std::vector<int32_t>(recv_total, -1));
  AllToAllVArgs args{in.data(), sc, sd, out.data(), rc, rd, DType::kI32};
  comm.all_to_all_v(args, mem.stream());
  std::vector<int32_t> got = out.read();
  for (int p = 0; p < n; ++p) {
    for (size_t j = 0; j < rc[p]; ++j) EXPECT_EQ(got[rd[p] + j], a2a_value(p, r, j)) << "from " << p;
    EXPECT_EQ(got[rd[p] + rc[p]], -1) << "gap after the block from " << p << " was written";
  }
  // Everything zero: still a collective.
  std::vector<size_t> zeros(n, 0);
  AllToAllVArgs none{in.data(), zeros, zeros, out.data(), zeros, zeros, DType::kI32};
  comm.all_to_all_v(none, mem.stream());
}

inline void case_broadcast(Communicator& comm, CommMemory& mem) {
  const int n = comm.size(), r = comm.rank();
  const int root = n - 1;
  std::vector<uint16_t> x(11);
  for (size_t j = 0; j < x.size(); ++j) x[j] = static_cast<uint16_t>(r == root ? 7 * j + 1 : 0xFFFF);
  CommBuffer<uint16_t> buf(mem, x);
  comm.broadcast(buf.data(), x.size(), DType::kBF16, root, mem.stream());
  std::vector<uint16_t> got = buf.read();
  for (size_t j = 0; j < got.size(); ++j) EXPECT_EQ(got[j], 7 * j + 1);
}

// Ring: every rank sends to r+1 and receives from r-1; even ranks send first (see communicator.h).
inline void case_send_recv_ring(Communicator& comm, CommMemory& mem) {
  const int n = comm.size(), r = comm.rank();
  if (n == 1) return;  // no peer
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  std::vector<int64_t> mine(6);
  for (size_t j = 0; j < mine.size(); ++j) mine[j] = r * 1000 + static_cast<int64_t>(j);
  CommBuffer<int64_t> out(mem, mine), in(mem, mine.size());
  if (r % 2 == 0) {
    comm.send(out.data(), mine.size(), DType::kI64, next, mem.stream());
    comm.recv(in.data(), mine.size(), DType::kI64, prev, mem.stream());
  } else {
    comm.recv(in.data(), mine.size(), DType::kI64, prev, mem.stream());
    comm.send(out.data(), mine.size(), DType::kI64, next, mem.stream());
  }
  std::vector<int64_t> got = in.read();
  for (size_t j = 0; j < got.size(); ++j) EXPECT_EQ(got[j], prev * 1000 + static_cast<int64_t>(j));
}

// ---------------------------------------------------------------------------------------------------------
// split: tp-like groups of consecutive ranks, ep-like strided groups with reversed keys, and opting out.
inline void case_split(Communicator& comm, CommMemory& mem) {
  const int n = comm.size(), r = comm.rank();
  const int tp = n % 2 == 0 ? 2 : 1;
  auto tp_comm = comm.split(r / tp, r % tp);
  EXPECT_NE(tp_comm, nullptr);
  if (!tp_comm) return;
  EXPECT_EQ(tp_comm->size(), tp);
  EXPECT_EQ(tp_comm->rank(), r % tp);
  {  // sum of world ranks inside the tp group
    CommBuffer<int32_t> buf(mem, std::vector<int32_t>{r});
    tp_comm->all_reduce(buf.data(), buf.data(), 1, DType::kI32, ReduceOp::kSum, mem.stream());
    const int first = (r / tp) * tp;
    EXPECT_EQ(buf.read()[0], tp == 2 ? 2 * first + 1 : first);
  }
  // Strided: color = r % 2, key = -r: new rank order is reversed world order.
  auto strided = comm.split(r % 2, -r);
  EXPECT_NE(strided, nullptr);
  if (!strided) return;
  const int members = (n - (r % 2) + 1) / 2;
  EXPECT_EQ(strided->size(), members);
  const int top = (n - 1) % 2 == r % 2 ? n - 1 : n - 2;  // largest world rank of my parity: new rank 0
  EXPECT_EQ(strided->rank(), (top - r) / 2);
  {  // all_gather of world ranks inside the strided group: descending world ranks of my parity
    CommBuffer<int32_t> in(mem, std::vector<int32_t>{r}), out(mem, static_cast<size_t>(members));
    strided->all_gather(in.data(), out.data(), 1, DType::kI32, mem.stream());
    std::vector<int32_t> got = out.read();
    int expect = top;
    for (int32_t v : got) {
      EXPECT_EQ(v, expect);
      expect -= 2;
    }
  }
  // The last rank opts out (color -1) and gets no communicator; the rest form one group.
  auto rest = comm.split(r == n - 1 ? -1 : 0, r);
  if (r == n - 1) {
    EXPECT_EQ(rest, nullptr);
  } else {
    EXPECT_NE(rest, nullptr);
    if (rest) {
      EXPECT_EQ(rest->size(), n - 1);
      CommBuffer<int32_t> buf(mem, std::vector<int32_t>{1});
      rest->all_reduce(buf.data(), buf.data(), 1, DType::kI32, ReduceOp::kSum, mem.stream());
      EXPECT_EQ(buf.read()[0], n - 1);
    }
  }
  // Nested: a split of a split still works (tp group split into singletons).
  auto single = tp_comm->split(tp_comm->rank(), 0);
  EXPECT_NE(single, nullptr);
  if (single) {
    EXPECT_EQ(single->size(), 1);
  }
}

/// Every case, in one order all ranks follow.
inline void run_all_cases(Communicator& comm, CommMemory& mem, const CoreOptions& options = {}) {
  case_all_reduce(comm, mem, options);
  case_all_gather(comm, mem);
  case_reduce_scatter(comm, mem);
  case_all_to_all_v(comm, mem);
  case_broadcast(comm, mem);
  case_send_recv_ring(comm, mem);
  case_split(comm, mem);
}

}  // namespace dsv4::parallel::testing
