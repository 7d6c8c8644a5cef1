#include "memory_keeper.h"

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "imagecore/memory.h"
#include "guard.h"
#include "ops.h"

namespace imgfs::fs {

void MemoryKeeper::Start(FsContext& ctx, const MemoryLimits& limits) {
  thread_ = std::thread([this, &ctx, limits] { RunGuarded("the memory keeper", [&] { Run(ctx, limits); }); });
}

void MemoryKeeper::Stop() {
  if (!thread_.joinable()) return;
  {
    MutexLock l(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void MemoryKeeper::Run(FsContext& ctx, MemoryLimits limits) {
  UniqueMutexLock l(mu_);
  while (!wake_.wait_for(l.native(), std::chrono::seconds(1), [&]() REQUIRES(mu_) { return stop_; })) {
    l.unlock();
    ctx.ns.Tick();
    // Freed tables sit in malloc's free lists until trimmed.
    if (Sweep(ctx, limits)) ReturnFreedMemory();
    l.lock();
  }
}

bool MemoryKeeper::Sweep(FsContext& ctx, const MemoryLimits& limits) {
  const uint32_t now = ctx.ns.tick();
  bool dropped = false;
  std::vector<std::pair<uint32_t, size_t>> holding;  // last use, image
  for (size_t i = 0; i < ctx.ns.size(); ++i) {
    ImageEntry& e = ctx.ns.image(i);
    if (!e.caches_held.load(std::memory_order_relaxed)) continue;
    const uint32_t last = e.last_use.load(std::memory_order_relaxed);
    if (now - last >= limits.idle_seconds) {
      ctx.ns.DropCaches(i);
      dropped = true;
    } else {
      holding.emplace_back(last, i);
    }
  }
  if (CachedMetadataBytes() <= limits.cache_bytes) return dropped;
  // Over the limit: the least recently used first, until under it.
  std::sort(holding.begin(), holding.end());
  for (const auto& [last, i] : holding) {
    ctx.ns.DropCaches(i);
    dropped = true;
    if (CachedMetadataBytes() <= limits.cache_bytes) break;
  }
  return dropped;
}

}  // namespace imgfs::fs
