// TableCache: a bounded LRU of cluster-sized metadata tables (qcow2 L2
// tables, refcount blocks), keyed by their offset in the image file.
//
// Not thread safe: the owner serializes all calls under its metadata lock.
// Pointers returned by Get stay valid until the next Get or Evict call.
// Dirty tables are never evicted silently: the owner is told to write them
// back first (WriteBack), in whatever order its crash-safety rules demand.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <unordered_map>
#include <vector>

#include "imagecore/status.h"

namespace imgfs {

class TableCache {
 public:
  TableCache(size_t table_bytes, size_t capacity) : table_bytes_(table_bytes), capacity_(capacity) {}
  ~TableCache();
  TableCache(const TableCache&) = delete;
  TableCache& operator=(const TableCache&) = delete;

  using Loader = std::function<Status(uint64_t offset, uint8_t* buf)>;
  using Writer = std::function<Status(uint64_t offset, const uint8_t* buf)>;

  // Returns the table at `offset`, loading it with `load` on a miss. When the
  // cache is full, a clean table is dropped; if all are dirty, `flush_all` is
  // called first (it must leave every table clean).
  Result<uint8_t*> Get(uint64_t offset, const Loader& load, const std::function<Status()>& flush_all);
  // Adds a table that exists only in memory so far (a new allocation), zeroed.
  Result<uint8_t*> Create(uint64_t offset, const std::function<Status()>& flush_all);
  void MarkDirty(uint64_t offset);
  bool HasDirty() const { return dirty_count_ > 0; }
  // Writes every dirty table with `write` and marks it clean.
  Status WriteBack(const Writer& write);
  // Forgets a table (after it was freed or moved). Its dirty state is lost.
  void Drop(uint64_t offset);
  size_t table_bytes() const { return table_bytes_; }
  // Bytes this cache holds now.
  size_t bytes() const { return map_.size() * table_bytes_; }
  // Forgets every clean table (memory goes back; they load again on use).
  void DropClean();
  // Bytes all the process's caches hold: what a memory limit watches.
  static uint64_t TotalBytes();

 private:
  struct Entry {
    std::unique_ptr<uint8_t[]> data;
    bool dirty = false;
    std::list<uint64_t>::iterator lru;
  };
  Status MakeRoom(const std::function<Status()>& flush_all);
  Entry& Insert(uint64_t offset);
  void Erase(std::unordered_map<uint64_t, Entry>::iterator it);

  const size_t table_bytes_;
  const size_t capacity_;
  std::unordered_map<uint64_t, Entry> map_;
  std::list<uint64_t> lru_;  // front = most recently used
  size_t dirty_count_ = 0;
};

}  // namespace imgfs
