// qemu-img bench: requests through the image core, `depth` threads at once.
#include <algorithm>
#include <cerrno>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "imagecore/ops.h"
#include "imagecore/mutex.h"

namespace imgfs::ops {
namespace {

constexpr uint64_t kMaxThreads = 16;

class Bencher {
 public:
  Bencher(const BenchRequest& req, Chain& chain) : req_(req), chain_(chain), next_offset_(req.offset) {}

  Status Run() {
    const uint64_t batch = req_.write && req_.flush_interval && req_.drain ? req_.flush_interval : req_.count;
    for (uint64_t done = 0; done < req_.count; done += batch) {
      {
        MutexLock l(mu_);  // between batches no worker runs; the lock is for the analysis
        if (!error_.ok()) break;
        end_ = std::min(req_.count, done + batch);
      }
      Threads();
      MutexLock l(mu_);
      if (error_.ok() && req_.write && req_.flush_interval && req_.drain && end_ % req_.flush_interval == 0)
        error_ = chain_.Flush();
    }
    MutexLock l(mu_);
    return error_;
  }

 private:
  // Runs requests up to end_ on `depth` threads (16 at most, as many as
  // there are requests left); returns when all are done. Buffers are made
  // here, so that a failed allocation fails the command, not a thread.
  void Threads() {
    uint64_t left;
    {
      MutexLock l(mu_);
      left = end_ - issued_;
    }
    const uint64_t n = std::clamp<uint64_t>(std::min<uint64_t>(req_.depth, left), 1, kMaxThreads);
    std::vector<std::vector<uint8_t>> bufs(n, std::vector<uint8_t>(req_.size, req_.pattern));
    std::vector<std::thread> threads;
    for (uint64_t i = 0; i < n; ++i) threads.emplace_back([this, &bufs, i] { Work(bufs[i]); });
    for (std::thread& t : threads) t.join();
  }

  // The next request's offset, as qemu-img advances it; false when none is left.
  bool Take(uint64_t* off) {
    MutexLock l(mu_);
    if (issued_ >= end_ || !error_.ok()) return false;
    ++issued_;
    *off = next_offset_;
    const uint64_t size = chain_.VirtualSize();
    next_offset_ += req_.step;
    next_offset_ = size <= req_.size ? 0 : next_offset_ % (size - req_.size);
    return true;
  }

  void Work(std::vector<uint8_t>& buf) {
    uint64_t off;
    while (Take(&off)) {
      // A request past the end fails, as a block device's would.
      const uint64_t size = chain_.VirtualSize();
      Status st = off > size || req_.size > size - off ? IoError("Failed request", EIO)
                  : req_.write                         ? chain_.Write(off, buf.data(), req_.size)
                                                       : chain_.Read(0, off, buf.data(), req_.size);
      const uint64_t done = ++completed_;
      if (st.ok() && req_.write && req_.flush_interval && !req_.drain && done % req_.flush_interval == 0)
        st = chain_.Flush();
      if (!st.ok()) {
        MutexLock l(mu_);
        if (error_.ok()) error_ = st;
      }
    }
  }

  const BenchRequest& req_;
  Chain& chain_;
  Mutex mu_;
  uint64_t issued_ GUARDED_BY(mu_) = 0;
  uint64_t end_ GUARDED_BY(mu_) = 0;
  uint64_t next_offset_ GUARDED_BY(mu_);
  Status error_ GUARDED_BY(mu_);
  std::atomic<uint64_t> completed_{0};
};

}  // namespace

Status CheckBenchRequest(const BenchRequest& req) {
  if (req.flush_interval && !req.write) return InvalidArgument("--flush-interval is only available in write tests");
  if (req.flush_interval && req.flush_interval < req.depth)
    return InvalidArgument("Flush interval can't be smaller than depth");
  if (req.depth < 1) return InvalidArgument("Invalid queue depth specified");
  if (req.size < 1 || req.size > (1u << 30)) return InvalidArgument("Invalid buffer size specified");
  return Status::OK();
}

Result<double> Bench(const BenchRequest& req) {
  IMGFS_RETURN_IF_ERROR(CheckBenchRequest(req));
  auto chain = Chain::Open(req.path, req.format, req.write);
  if (!chain.ok()) return chain.status().Prefixed("Could not open '" + req.path + "'");
  Chain& c = *chain.value();
  if (req.write && c.layer(0).read_only()) return ReadOnly(req.path + ": " + c.layer(0).read_only_reason());
  const auto t0 = std::chrono::steady_clock::now();
  IMGFS_RETURN_IF_ERROR(Bencher(req, c).Run());
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace imgfs::ops
