// A small fixed-size thread pool for the CPU kernels.
//
// One process-wide pool (DSV4_NUM_THREADS threads, 0 = hardware threads). parallel_for splits [0, n) into
// contiguous chunks, runs them on the workers and on the caller, and returns when all are done. Chunk
// boundaries depend only on n and the thread count, and each index is handled by exactly one call, so a
// kernel whose per-index work does not depend on the split gives bitwise identical results for any count.
#pragma once

#include <cstdint>
#include <functional>

namespace dsv4::kernels::cpu {

class ThreadPool {
 public:
  /// The process-wide pool, created on first use.
  static ThreadPool& instance();

  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  /// Calls fn(begin, end) over disjoint chunks covering [0, n); chunks hold at least `min_chunk` indices.
  /// Nested calls (from inside fn) run serially on the calling thread.
  void parallel_for(int64_t n, int64_t min_chunk, const std::function<void(int64_t, int64_t)>& fn);

 private:
  struct Impl;
  Impl* impl_;
  int num_threads_;
};

/// Shorthand for ThreadPool::instance().parallel_for.
inline void parallel_for(int64_t n, int64_t min_chunk, const std::function<void(int64_t, int64_t)>& fn) {
  ThreadPool::instance().parallel_for(n, min_chunk, fn);
}

}  // namespace dsv4::kernels::cpu
