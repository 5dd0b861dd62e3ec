#include "kernels/cpu/thread_pool.h"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "runtime/core/env.h"

namespace dsv4::kernels::cpu {
namespace {
thread_local bool t_inside_pool = false;
}  // namespace

struct ThreadPool::Impl {
  std::mutex job_mu;  // one parallel_for at a time from outside the pool
  std::mutex mu;
  std::condition_variable work_cv;
  std::condition_variable done_cv;
  std::vector<std::thread> workers;
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0;
  int64_t num_chunks = 0;
  int64_t next_chunk = 0;
  int64_t chunks_done = 0;
  uint64_t generation = 0;
  bool stop = false;
  std::exception_ptr error;

  void chunk_range(int64_t c, int64_t* b, int64_t* e) const {
    *b = n * c / num_chunks;
    *e = n * (c + 1) / num_chunks;
  }

  // Takes chunks until none is left. Called with the lock held; releases it while running.
  void drain(std::unique_lock<std::mutex>& lock) {
    while (next_chunk < num_chunks) {
      int64_t c = next_chunk++;
      int64_t b, e;
      chunk_range(c, &b, &e);
      const auto* f = fn;
      lock.unlock();
      std::exception_ptr err;
      try {
        t_inside_pool = true;
        (*f)(b, e);
      } catch (...) {
        err = std::current_exception();
      }
      t_inside_pool = false;
      lock.lock();
      if (err && !error) error = err;
      if (++chunks_done == num_chunks) done_cv.notify_all();
    }
  }

  void worker_loop() {
    std::unique_lock<std::mutex> lock(mu);
    uint64_t seen = 0;
    while (true) {
      work_cv.wait(lock, [&] { return stop || generation != seen; });
      if (stop) return;
      seen = generation;
      drain(lock);
    }
  }
};

ThreadPool& ThreadPool::instance() {
  static ThreadPool pool([] {
    int64_t n = env::get_int(env::kNumThreads, 0, 1024);
    if (n == 0) n = std::max(1u, std::thread::hardware_concurrency());
    return static_cast<int>(n);
  }());
  return pool;
}

ThreadPool::ThreadPool(int num_threads) : impl_(new Impl), num_threads_(std::max(1, num_threads)) {
  for (int i = 1; i < num_threads_; ++i) impl_->workers.emplace_back([this] { impl_->worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop = true;
  }
  impl_->work_cv.notify_all();
  for (auto& t : impl_->workers) t.join();
  delete impl_;
}

void ThreadPool::parallel_for(int64_t n, int64_t min_chunk, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  int64_t chunks = std::min<int64_t>(num_threads_, (n + std::max<int64_t>(1, min_chunk) - 1) /
                                                       std::max<int64_t>(1, min_chunk));
  if (chunks <= 1 || t_inside_pool) {
    fn(0, n);
    return;
  }
  // Over-split a little so uneven chunks balance; boundaries still depend on n and the count only.
  chunks = std::min<int64_t>(n, chunks * 4);
  std::lock_guard<std::mutex> job(impl_->job_mu);
  std::unique_lock<std::mutex> lock(impl_->mu);
  impl_->fn = &fn;
  impl_->n = n;
  impl_->num_chunks = chunks;
  impl_->next_chunk = 0;
  impl_->chunks_done = 0;
  impl_->error = nullptr;
  ++impl_->generation;
  impl_->work_cv.notify_all();
  impl_->drain(lock);
  impl_->done_cv.wait(lock, [&] { return impl_->chunks_done == impl_->num_chunks; });
  impl_->fn = nullptr;
  std::exception_ptr err = impl_->error;
  impl_->error = nullptr;
  lock.unlock();
  if (err) std::rethrow_exception(err);
}

}  // namespace dsv4::kernels::cpu
