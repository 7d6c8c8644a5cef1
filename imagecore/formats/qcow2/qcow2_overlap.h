// Which host clusters of a qcow2 file hold metadata, and which kind: the
// overlap check qemu makes before a write. A write of guest data, or of one
// structure, that would land on another structure means the metadata is
// damaged (a refcount or a pointer is wrong); it is refused before it is
// issued, and the image turns corrupt.
//
// Not thread safe: the image keeps it under its metadata lock.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>

namespace imgfs::qcow2 {

enum MetaKind : uint16_t {
  kMetaHeader = 1 << 0,
  kMetaL1 = 1 << 1,
  kMetaL2 = 1 << 2,
  kMetaRefTable = 1 << 3,
  kMetaRefBlock = 1 << 4,
  kMetaSnapshotTable = 1 << 5,
  kMetaSnapshotL1 = 1 << 6,
  kMetaBitmapDirectory = 1 << 7,
  kMetaBitmapTable = 1 << 8,
};

class OverlapMap {
 public:
  // Clusters [cluster, cluster + n) hold structure `kind`.
  void Add(uint64_t cluster, uint64_t n, MetaKind kind);
  // The cluster was freed: it holds nothing any more.
  void Remove(uint64_t cluster) { kinds_.erase(cluster); }
  void Clear() { kinds_.clear(); }
  // The kinds other than those in `allowed` found in [cluster, cluster+n).
  uint16_t Hit(uint64_t cluster, uint64_t n, uint16_t allowed) const;
  // "refcount table", "L2 table and refcount block", ... for messages.
  static std::string Names(uint16_t kinds);
  size_t size() const { return kinds_.size(); }

 private:
  std::unordered_map<uint64_t, uint16_t> kinds_;
};

}  // namespace imgfs::qcow2
