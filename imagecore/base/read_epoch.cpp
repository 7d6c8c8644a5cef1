#include "imagecore/read_epoch.h"

#include <atomic>
#include <mutex>
#include <set>
#include "imagecore/mutex.h"

namespace imgfs {

namespace {

constexpr int kSlots = 1024;
std::atomic<uint64_t> g_epoch{1};
// slot value: the epoch its thread entered at, + 1 (0 = not reading).
std::atomic<uint64_t> g_slots[kSlots];
std::atomic<bool> g_slot_taken[kSlots];
// Threads beyond kSlots (more than libfuse ever runs) record here.
Mutex g_overflow_mu;
std::multiset<uint64_t> g_overflow GUARDED_BY(g_overflow_mu);

struct ThreadSlot {
  int index = -1;
  int depth = 0;
  ThreadSlot() {
    for (int i = 0; i < kSlots; ++i) {
      bool expected = false;
      if (g_slot_taken[i].compare_exchange_strong(expected, true)) {
        index = i;
        break;
      }
    }
  }
  ~ThreadSlot() {
    if (index >= 0) g_slot_taken[index].store(false);
  }
};
thread_local ThreadSlot t_slot;

}  // namespace

ReadScope::ReadScope() {
  if (t_slot.depth++ > 0) return;
  outer_ = true;
  entered_ = g_epoch.load();
  if (t_slot.index >= 0) {
    g_slots[t_slot.index].store(entered_ + 1);
  } else {
    overflow_ = true;
    MutexLock l(g_overflow_mu);
    g_overflow.insert(entered_);
  }
}

ReadScope::~ReadScope() {
  --t_slot.depth;
  if (!outer_) return;
  if (!overflow_) {
    g_slots[t_slot.index].store(0);
    return;
  }
  MutexLock l(g_overflow_mu);
  g_overflow.erase(g_overflow.find(entered_));
}

uint64_t CloseReadEpoch() { return g_epoch.fetch_add(1); }

uint64_t OldestOpenRead() {
  uint64_t oldest = UINT64_MAX;
  for (int i = 0; i < kSlots; ++i) {
    const uint64_t v = g_slots[i].load();
    if (v != 0 && v - 1 < oldest) oldest = v - 1;
  }
  MutexLock l(g_overflow_mu);
  if (!g_overflow.empty() && *g_overflow.begin() < oldest) oldest = *g_overflow.begin();
  return oldest;
}

}  // namespace imgfs
