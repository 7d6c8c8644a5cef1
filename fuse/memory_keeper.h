// The memory keeper: a thread that gives back the metadata caches of
// images nobody used for a while, and of the least recently used ones
// whenever all caches together pass a limit. Memory then follows the
// working set, not the size of the library. An image's chain stays open
// (its descriptor holds QEMU's lock); what it drops loads again on use.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <thread>

#include "imagecore/mutex.h"

namespace imgfs::fs {

struct FsContext;

struct MemoryLimits {
  uint64_t cache_bytes = 256ull << 20;  // -o cache_limit=SIZE
  uint32_t idle_seconds = 30;           // -o cache_idle=SECONDS
};

class MemoryKeeper {
 public:
  ~MemoryKeeper() { Stop(); }
  void Start(FsContext& ctx, const MemoryLimits& limits);
  void Stop();

 private:
  void Run(FsContext& ctx, MemoryLimits limits);
  // One pass, once a second; true if it dropped anything.
  static bool Sweep(FsContext& ctx, const MemoryLimits& limits);
  Mutex mu_;
  std::condition_variable wake_;
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace imgfs::fs
