#include "qcow2_builder.h"

#include <algorithm>
#include <vector>

#include "base/endian.h"
#include "formats/qcow2/qcow2_format.h"

namespace imgfs::fuzz {

namespace {
uint64_t DivUp(uint64_t a, uint64_t b) { return (a + b - 1) / b; }
}  // namespace

Status WriteQcow2Around(io::File& f, const SyntheticQcow2& spec, const uint8_t* payload, size_t n) {
  if (spec.cluster_bits < 9 || spec.cluster_bits > 16) return InvalidArgument("cluster_bits out of range");
  const uint64_t cs = 1ull << spec.cluster_bits;
  const uint64_t l1_size = std::max<uint64_t>(1, qcow2::L1EntriesFor(spec.size, spec.cluster_bits));
  const uint64_t l1_off = cs;
  const uint64_t rt_off = l1_off + DivUp(l1_size * 8, cs) * cs;
  // Refcounts are 16 bits: a block holds cs / 2 of them.
  const uint64_t clusters = DivUp(kPayloadOffset + n, cs);
  const uint64_t blocks = DivUp(clusters, cs / 2);
  const uint64_t rt_clusters = DivUp(blocks * 8, cs);
  const uint64_t rb_off = rt_off + rt_clusters * cs;
  const uint64_t meta_end = rb_off + blocks * cs;
  if (meta_end > kPayloadOffset) return InvalidArgument("metadata does not fit before the payload");

  qcow2::Header h;
  h.cluster_bits = spec.cluster_bits;
  h.size = spec.size;
  h.l1_size = uint32_t(l1_size);
  h.l1_table_offset = l1_off;
  h.refcount_table_offset = rt_off;
  h.refcount_table_clusters = uint32_t(rt_clusters);
  h.nb_snapshots = spec.nb_snapshots;
  h.snapshots_offset = spec.nb_snapshots ? kPayloadOffset : 0;
  if (spec.bitmaps) h.autoclear_features = qcow2::kAutoclearBitmaps;
  std::vector<uint8_t> head = h.EncodeFixed();
  if (spec.bitmaps) {
    uint8_t ext[8 + 24] = {};
    StoreBE32(ext, qcow2::kExtBitmaps);
    StoreBE32(ext + 4, 24);
    StoreBE32(ext + 8, spec.nb_bitmaps);
    StoreBE64(ext + 16, spec.bitmap_directory_size);
    StoreBE64(ext + 24, kPayloadOffset);
    head.insert(head.end(), ext, ext + sizeof ext);
  }
  head.resize(head.size() + 8, 0);  // end of extensions
  head.resize(cs, 0);
  IMGFS_RETURN_IF_ERROR(f.PWrite(0, head.data(), head.size()));

  // The L1 table stays zero (all unallocated); the file is zeros up to the
  // payload, so it is enough to write the refcount structures.
  std::vector<uint8_t> rt(rt_clusters * cs, 0);
  for (uint64_t b = 0; b < blocks; ++b) StoreBE64(&rt[b * 8], rb_off + b * cs);
  IMGFS_RETURN_IF_ERROR(f.PWrite(rt_off, rt.data(), rt.size()));
  std::vector<uint8_t> rb(blocks * cs, 0);
  auto used = [&](uint64_t c) { StoreBE16(&rb[c * 2], 1); };
  for (uint64_t c = 0; c < meta_end / cs; ++c) used(c);
  for (uint64_t c = kPayloadOffset / cs; c < clusters; ++c) used(c);
  IMGFS_RETURN_IF_ERROR(f.PWrite(rb_off, rb.data(), rb.size()));

  IMGFS_RETURN_IF_ERROR(f.Truncate(clusters * cs));
  if (n) IMGFS_RETURN_IF_ERROR(f.PWrite(kPayloadOffset, payload, n));
  return Status::OK();
}

}  // namespace imgfs::fuzz
