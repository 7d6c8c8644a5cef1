#include "base/table_cache.h"

#include <atomic>
#include <cstring>

namespace imgfs {

namespace {
std::atomic<uint64_t> g_total_bytes{0};
}  // namespace

uint64_t TableCache::TotalBytes() { return g_total_bytes.load(std::memory_order_relaxed); }

TableCache::~TableCache() { g_total_bytes.fetch_sub(bytes(), std::memory_order_relaxed); }

void TableCache::Erase(std::unordered_map<uint64_t, Entry>::iterator it) {
  if (it->second.dirty) --dirty_count_;
  lru_.erase(it->second.lru);
  map_.erase(it);
  g_total_bytes.fetch_sub(table_bytes_, std::memory_order_relaxed);
}

void TableCache::DropClean() {
  for (auto it = map_.begin(); it != map_.end();) {
    auto next = std::next(it);
    if (!it->second.dirty) Erase(it);
    it = next;
  }
}

Status TableCache::MakeRoom(const std::function<Status()>& flush_all) {
  if (map_.size() < capacity_) return Status::OK();
  // Drop the least recently used clean table; if none is clean, write all
  // back first (the owner orders those writes) and then drop.
  for (int pass = 0; pass < 2; ++pass) {
    for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
      auto e = map_.find(*it);
      if (!e->second.dirty) {
        Erase(e);
        return Status::OK();
      }
    }
    IMGFS_RETURN_IF_ERROR(flush_all());
  }
  return Status(Code::kIoError, "metadata cache: no table could be evicted");
}

TableCache::Entry& TableCache::Insert(uint64_t offset) {
  Entry& e = map_[offset];
  e.data.reset(new uint8_t[table_bytes_]);
  g_total_bytes.fetch_add(table_bytes_, std::memory_order_relaxed);
  lru_.push_front(offset);
  e.lru = lru_.begin();
  return e;
}

Result<uint8_t*> TableCache::Get(uint64_t offset, const Loader& load,
                                 const std::function<Status()>& flush_all) {
  auto it = map_.find(offset);
  if (it != map_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return it->second.data.get();
  }
  IMGFS_RETURN_IF_ERROR(MakeRoom(flush_all));
  Entry& e = Insert(offset);
  Status st = load(offset, e.data.get());
  if (!st.ok()) {
    Erase(map_.find(offset));
    return st;
  }
  return e.data.get();
}

Result<uint8_t*> TableCache::Create(uint64_t offset, const std::function<Status()>& flush_all) {
  Drop(offset);
  IMGFS_RETURN_IF_ERROR(MakeRoom(flush_all));
  Entry& e = Insert(offset);
  std::memset(e.data.get(), 0, table_bytes_);
  e.dirty = true;
  ++dirty_count_;
  return e.data.get();
}

void TableCache::MarkDirty(uint64_t offset) {
  auto it = map_.find(offset);
  if (it != map_.end() && !it->second.dirty) {
    it->second.dirty = true;
    ++dirty_count_;
  }
}

Status TableCache::WriteBack(const Writer& write) {
  for (auto& [off, e] : map_) {
    if (!e.dirty) continue;
    IMGFS_RETURN_IF_ERROR(write(off, e.data.get()));
    e.dirty = false;
    --dirty_count_;
  }
  return Status::OK();
}

void TableCache::Drop(uint64_t offset) {
  auto it = map_.find(offset);
  if (it != map_.end()) Erase(it);
}

}  // namespace imgfs
