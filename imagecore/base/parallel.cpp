#include "imagecore/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
#include "imagecore/mutex.h"

namespace imgfs {
namespace {

// One batch: items are claimed with an atomic counter by whoever runs.
// An item that throws still counts as done; the first exception is kept
// for the caller, which rethrows it once no thread uses the batch's items.
struct Batch {
  size_t n;
  const std::function<void(size_t)>* fn;
  std::atomic<size_t> next{0};
  std::atomic<size_t> done{0};
  Mutex mu;                     // also held for the wait below
  std::condition_variable cv;   // signalled when done reaches n
  std::exception_ptr error GUARDED_BY(mu);  // the first item's exception

  void Run() {
    for (size_t i; (i = next.fetch_add(1)) < n;) {
      try {
        (*fn)(i);
      } catch (...) {
        MutexLock l(mu);
        if (!error) error = std::current_exception();
      }
      if (done.fetch_add(1) + 1 == n) {
        MutexLock l(mu);
        cv.notify_all();
      }
    }
  }
};

class Pool {
 public:
  Pool() {
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    for (unsigned i = 1; i < cores; ++i) std::thread([this] { Work(); }).detach();
  }
  void Submit(const std::shared_ptr<Batch>& b) {
    {
      MutexLock l(mu_);
      queue_.push_back(b);
    }
    cv_.notify_all();
  }

 private:
  void Work() {
    for (;;) {
      std::shared_ptr<Batch> b;
      {
        UniqueMutexLock l(mu_);
        cv_.wait(l.native(), [this] {
          mu_.AssertHeld();  // wait() holds it when it asks
          return !queue_.empty();
        });
        b = queue_.front();
        if (b->next.load() >= b->n) {
          queue_.pop_front();
          continue;
        }
      }
      b->Run();
    }
  }
  Mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Batch>> queue_ GUARDED_BY(mu_);  // batches that may have work left
};

Pool& ThePool() {
  static Pool* pool = new Pool();  // never destroyed: workers are detached
  return *pool;
}

}  // namespace

void ParallelFor(size_t n, const std::function<void(size_t)>& fn) {
  if (n == 0) return;
  if (n == 1) {
    fn(0);
    return;
  }
  auto b = std::make_shared<Batch>();
  b->n = n;
  b->fn = &fn;
  ThePool().Submit(b);
  b->Run();
  UniqueMutexLock l(b->mu);
  b->cv.wait(l.native(), [&] { return b->done.load() == n; });
  if (b->error) std::rethrow_exception(b->error);
}

}  // namespace imgfs
