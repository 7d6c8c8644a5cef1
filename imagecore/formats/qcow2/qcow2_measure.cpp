// qemu-img measure for a qcow2 output: the metadata of a fully allocated
// image (header, L1 and L2 tables, refcount table and blocks) plus the
// clusters the source's data touches, and room for its bitmaps.
#include <algorithm>

#include "formats/qcow2/qcow2_driver.h"
#include "formats/qcow2/qcow2_format.h"

namespace imgfs::qcow2 {
namespace {

uint64_t RoundUp(uint64_t v, uint64_t m) { return (v + m - 1) / m * m; }
uint64_t DivUp(uint64_t v, uint64_t m) { return (v + m - 1) / m; }

// Refcount table and block clusters that count `clusters` clusters and
// themselves.
uint64_t RefcountBytes(uint64_t clusters, uint64_t cs, uint32_t refcount_bits) {
  const uint64_t per_table_cluster = cs / 8, per_block = cs * 8 / refcount_bits;
  uint64_t table = 0, blocks = 0, n = 0, last;
  do {
    last = n;
    blocks = DivUp(clusters + table + blocks, per_block);
    table = DivUp(blocks, per_table_cluster);
    n = clusters + blocks + table;
  } while (n != last);
  return (blocks + table) * cs;
}

// A fully allocated image of `size` bytes (a multiple of the cluster size).
uint64_t FullSize(uint64_t size, uint64_t cs, uint32_t refcount_bits, uint64_t entry_bytes) {
  uint64_t meta = cs;  // the header
  const uint64_t l2_entries = RoundUp(size / cs, cs / entry_bytes);
  meta += l2_entries * entry_bytes;
  const uint64_t l1_entries = RoundUp(l2_entries * entry_bytes / cs, cs / 8);
  meta += l1_entries * 8;
  meta += RefcountBytes((meta + size) / cs, cs, refcount_bits);
  return meta + size;
}

// Bitmap tables and data as if every bit were stored, and the directory.
uint64_t BitmapBytes(const MeasureInput& in, uint64_t cs) {
  uint64_t total = 0, dir = 0;
  for (const ImageInfo::Bitmap& b : in.bitmaps) {
    if (!b.granularity) continue;
    const uint64_t bytes = DivUp(DivUp(in.size, b.granularity), 8);
    const uint64_t clusters = DivUp(bytes, cs);
    total += clusters * cs + RoundUp(clusters * 8, cs);
    dir += RoundUp(24 + b.name.size(), 8);
  }
  return total + RoundUp(dir, cs);
}

}  // namespace

Result<MeasureResult> Measure(const CreateOptions& opts, const MeasureInput& in) {
  Header h;
  uint64_t cs;
  Prealloc prealloc = Prealloc::kOff;
  IMGFS_RETURN_IF_ERROR(ParseCreateOptions(opts, &h, &cs, &prealloc));
  const bool extended = h.incompatible_features & kIncompatExtendedL2;
  if (L1EntriesFor(in.size, h.cluster_bits, extended) * 8 > kMaxL1Bytes)
    return InvalidArgument("The image size is too large (try using a larger cluster size)");
  const uint64_t size = RoundUp(in.size, cs);
  // A new empty image (--size) needs no data cluster; a converted one each
  // cluster any data byte lies in, once.
  uint64_t data = 0;
  if (in.has_source) {
    uint64_t counted_to = 0;
    for (const auto& [start, len] : in.data) {
      const uint64_t from = std::max(start / cs * cs, counted_to), to = RoundUp(start + len, cs);
      if (to > from) data += to - from;
      counted_to = std::max(counted_to, to);
    }
  }
  MeasureResult r;
  r.fully_allocated = FullSize(size, cs, h.refcount_bits(), extended ? 16 : 8);
  r.required = r.fully_allocated - size + data;
  // Space reserved for every cluster is required (metadata only maps it).
  if (prealloc == Prealloc::kFalloc || prealloc == Prealloc::kFull) r.required = r.fully_allocated;
  r.has_bitmaps = h.version >= 3 && in.has_source && in.source_keeps_bitmaps;
  if (r.has_bitmaps) r.bitmaps = BitmapBytes(in, cs);
  return r;
}

}  // namespace imgfs::qcow2
