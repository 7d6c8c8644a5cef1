// The overlap map (qcow2_overlap.h), and how the image builds and consults it.
#include "formats/qcow2/qcow2_overlap.h"

#include "base/endian.h"
#include "formats/qcow2/qcow2_image.h"

namespace imgfs::qcow2 {

void OverlapMap::Add(uint64_t cluster, uint64_t n, MetaKind kind) {
  for (uint64_t c = cluster; c < cluster + n; ++c) kinds_[c] |= kind;
}

uint16_t OverlapMap::Hit(uint64_t cluster, uint64_t n, uint16_t allowed) const {
  uint16_t hit = 0;
  if (kinds_.empty()) return 0;
  for (uint64_t c = cluster; c < cluster + n; ++c) {
    auto it = kinds_.find(c);
    if (it != kinds_.end()) hit |= it->second & ~allowed;
  }
  return hit;
}

std::string OverlapMap::Names(uint16_t kinds) {
  static const char* kNames[] = {"header", "active L1 table", "active L2 table", "refcount table",
                                 "refcount block", "snapshot table", "snapshot L1 table", "bitmap directory",
                                 "bitmap table"};
  std::string out;
  for (int i = 0; i < 9; ++i)
    if (kinds & (1u << i)) out += (out.empty() ? "" : " and ") + std::string(kNames[i]);
  return out;
}

namespace {
uint64_t ClustersFor(uint64_t offset, uint64_t bytes, uint32_t bits) {
  if (!bytes) return 0;
  return ((offset + bytes - 1) >> bits) - (offset >> bits) + 1;
}
}  // namespace

// What qemu's default check covers: header, active L1 and L2, refcount
// table and blocks, snapshot table and snapshot L1 tables, bitmap directory
// and tables. Structures past the end of the file are left out (they are
// damage of their own, found where they are used).
Status Qcow2Image::BuildOverlapMapLocked() {
  if (overlap_built_) return Status::OK();
  IMGFS_RETURN_IF_ERROR(LoadRefTableLocked());
  overlap_.Clear();
  const uint32_t b = cluster_bits_;
  auto add = [&](uint64_t off, uint64_t bytes, MetaKind kind) {
    meta_mu_.AssertHeld();
    if (bytes && WithinFile(off, bytes)) overlap_.Add(off >> b, ClustersFor(off, bytes, b), kind);
  };
  add(0, cluster_size_, kMetaHeader);
  add(header_.l1_table_offset, l1_.size() * 8, kMetaL1);
  for (uint64_t e : l1_)
    if (e & kOffsetMask) add(e & kOffsetMask, cluster_size_, kMetaL2);
  add(header_.refcount_table_offset, uint64_t(header_.refcount_table_clusters) << b, kMetaRefTable);
  for (uint64_t blk : reftable_)
    if (blk) add(blk, cluster_size_, kMetaRefBlock);
  add(header_.snapshots_offset, snapshot_table_bytes_, kMetaSnapshotTable);
  for (const SnapshotEntry& s : snapshots_) add(s.l1_table_offset, uint64_t(s.l1_size) * 8, kMetaSnapshotL1);
  if (header_.bitmap_directory_offset && header_.bitmap_directory_size) {
    add(header_.bitmap_directory_offset, header_.bitmap_directory_size, kMetaBitmapDirectory);
    auto dir = ReadBitmapDirectory();
    if (dir.ok())
      for (const BitmapDirEntry& e : ParseBitmapDirectory(dir.value(), header_.nb_bitmaps))
        add(e.table_offset, uint64_t(e.table_size) * 8, kMetaBitmapTable);
  }
  overlap_built_ = true;
  return Status::OK();
}

Status Qcow2Image::CheckOverlapLocked(uint64_t host, uint64_t len, uint16_t allowed, const char* what) {
  if (!len) return Status::OK();
  IMGFS_RETURN_IF_ERROR(BuildOverlapMapLocked());
  const uint64_t first = host >> cluster_bits_;
  const uint64_t n = ((host + len - 1) >> cluster_bits_) - first + 1;
  const uint16_t hit = overlap_.Hit(first, n, allowed);
  if (!hit) return Status::OK();
  Status st = FoundDamage(std::string("preventing a write of ") + what + " at host offset " +
                          std::to_string(host) + ": it overlaps the " + OverlapMap::Names(hit));
  (void)PrepareForWriteLocked();  // sets the corrupt bit now, as qemu does
  return st;
}

}  // namespace imgfs::qcow2
