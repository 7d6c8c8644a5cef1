// Grain-mapped extents. Thread model: the grain directory is read at open
// and constant (read-only extents); `mu_` guards the grain-table cache and
// the cache of decoded compressed grains. Decoding runs outside the lock,
// so many threads decode grains at once.
#include "formats/vmdk/vmdk_sparse.h"

#include <cstdio>

#include <algorithm>
#include <cstring>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "base/compress.h"
#include "base/endian.h"
#include "formats/vmdk/vmdk_descriptor.h"
#include "formats/vmdk/vmdk_grains.h"

namespace imgfs::vmdk {
namespace {

bool IsPow2(uint64_t x) { return x && !(x & (x - 1)); }

// Reads a directory of `n` entries of `entry_bytes` at byte `at`, bounded
// by the file, turning each into a byte offset with `decode`.
template <typename F>
Result<std::vector<uint64_t>> ReadDirectory(const io::File& f, uint64_t at, uint64_t n, uint32_t entry_bytes,
                                            F decode) {
  if (n > kMaxGdEntries) return Corrupt(f.path() + ": grain directory of " + std::to_string(n) + " entries is too large");
  if (at > f.Size() || n * entry_bytes > f.Size() - at)
    return Corrupt(f.path() + ": grain directory lies past the end of the file (truncated image?)");
  std::vector<uint8_t> raw(n * entry_bytes);
  IMGFS_RETURN_IF_ERROR(f.PRead(at, raw.data(), raw.size()));
  std::vector<uint64_t> gd(n);
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t e = entry_bytes == 4 ? LoadLE32(&raw[i * 4]) : LoadLE64(&raw[i * 8]);
    IMGFS_ASSIGN_OR_RETURN(gd[i], decode(e));
  }
  return gd;
}

SparseHeader ParseKdmv(const uint8_t* b) {
  SparseHeader h;
  h.version = LoadLE32(b + 4);
  h.flags = LoadLE32(b + 8);
  h.capacity = LoadLE64(b + 12);
  h.grain_sectors = LoadLE64(b + 20);
  h.desc_offset = LoadLE64(b + 28);
  h.desc_sectors = LoadLE64(b + 36);
  h.gtes_per_gt = LoadLE32(b + 44);
  h.rgd_offset = LoadLE64(b + 48);
  h.gd_offset = LoadLE64(b + 56);
  h.overhead = LoadLE64(b + 64);
  h.unclean = b[72];
  h.compress = LoadLE16(b + 77);
  return h;
}

}  // namespace

bool IsKdmv(const uint8_t* head, size_t len) { return len >= 4 && !std::memcmp(head, "KDMV", 4); }
bool IsCowd(const uint8_t* head, size_t len) { return len >= 4 && !std::memcmp(head, "COWD", 4); }
bool IsSeSparse(const uint8_t* head, size_t len) {
  return len >= 8 && LoadLE64(head) == 0xcafebabeULL;
}

Result<SparseHeader> ReadSparseHeader(const io::File& file) {
  uint8_t b[512];
  IMGFS_RETURN_IF_ERROR(file.PRead(0, b, sizeof b));
  if (!IsKdmv(b, sizeof b)) return Corrupt("not a VMDK sparse extent");
  SparseHeader h = ParseKdmv(b);
  if (h.gd_offset == kGdAtEnd) {
    // A stream: the footer, two sectors before the end, holds the real header.
    const uint64_t size = file.Size();
    uint8_t tail[1536];
    if (size < 512 + sizeof tail) return Corrupt("streamOptimized image without its footer (truncated?)");
    IMGFS_RETURN_IF_ERROR(file.PRead(size - sizeof tail, tail, sizeof tail));
    const uint8_t* marker = tail;
    const uint8_t* footer = tail + 512;
    const uint8_t* eos = tail + 1024;
    static const uint8_t zeros[512] = {};
    if (LoadLE32(marker + 8) != 0 || LoadLE32(marker + 12) != 3 || !IsKdmv(footer, 512) ||
        std::memcmp(eos, zeros, 512) != 0)
      return Corrupt("streamOptimized image without its footer (truncated?)");
    h = ParseKdmv(footer);
    if (h.gd_offset == kGdAtEnd) return Corrupt("the footer does not locate the grain directory");
  }
  if (h.version < 1 || h.version > 3) return Unsupported("VMDK sparse extent version " + std::to_string(h.version));
  const uint32_t incompatible = h.flags & 0xffff0000u & ~(kFlagCompressed | kFlagMarkers);
  if (incompatible) return Unsupported("VMDK sparse extent with unknown incompatible flags 0x" + [&] {
    char s[16];
    std::snprintf(s, sizeof s, "%x", incompatible);
    return std::string(s);
  }());
  if (h.compress > 1) return Unsupported("VMDK compression algorithm " + std::to_string(h.compress));
  if (!IsPow2(h.grain_sectors) || h.grain_sectors > kMaxGrainSectors)
    return Corrupt("invalid grain size of " + std::to_string(h.grain_sectors) + " sectors");
  if (h.gtes_per_gt == 0 || h.gtes_per_gt > 65536)
    return Corrupt("invalid number of grain table entries (" + std::to_string(h.gtes_per_gt) + ")");
  if (h.capacity > kMaxCapacitySectors) return Corrupt("capacity of " + std::to_string(h.capacity) + " sectors is too large");
  if (h.desc_sectors > kMaxDescriptorBytes / 512) return Corrupt("embedded descriptor is too large");
  return h;
}

Result<std::unique_ptr<DiskExtent>> OpenHostedSparse(std::unique_ptr<io::File> file, const SparseHeader& h,
                                                     const std::string& type, const std::string& name,
                                                     size_t cache_bytes) {
  Layout l;
  l.cache_bytes = cache_bytes;
  l.flavor = Flavor::kHosted;
  l.capacity_bytes = h.capacity * 512;
  l.grain_bytes = h.grain_sectors * 512;
  l.gt_entries = h.gtes_per_gt;
  l.entry_bytes = 4;
  l.zero_grain = h.version >= 2 && (h.flags & kFlagZeroGrain);
  l.compressed = h.compressed();
  l.markers = h.markers();
  l.type = type;
  l.name = name;
  const uint64_t span = uint64_t(h.gtes_per_gt) * h.grain_sectors;
  const uint64_t n = (h.capacity + span - 1) / span;
  if (h.gd_offset > file->Size() / 512) return Corrupt("grain directory lies past the end of the file (truncated image?)");
  auto sectors = [](uint64_t e) -> Result<uint64_t> { return e * 512; };
  IMGFS_ASSIGN_OR_RETURN(auto gd, ReadDirectory(*file, h.gd_offset * 512, n, 4, sectors));
  std::vector<uint64_t> rgd;
  if ((h.flags & kFlagRedundantGd) && h.rgd_offset && !h.compressed()) {
    if (h.rgd_offset > file->Size() / 512) return Corrupt("redundant grain directory lies past the end of the file");
    IMGFS_ASSIGN_OR_RETURN(rgd, ReadDirectory(*file, h.rgd_offset * 512, n, 4, sectors));
    l.rgd_at = h.rgd_offset * 512;
  }
  l.gd_at = h.gd_offset * 512;
  l.overhead_bytes = h.overhead * 512;
  if (h.desc_offset <= file->Size() / 512) {
    l.desc_at = h.desc_offset * 512;
    l.desc_bytes = h.desc_sectors * 512;
  }
  l.version = h.version;
  return std::unique_ptr<DiskExtent>(new GrainExtent(std::move(file), std::move(l), std::move(gd), std::move(rgd)));
}

Result<std::unique_ptr<DiskExtent>> OpenCowd(std::unique_ptr<io::File> file, const std::string& name,
                                             size_t cache_bytes) {
  uint8_t b[2048];
  IMGFS_RETURN_IF_ERROR(file->PRead(0, b, sizeof b));
  if (!IsCowd(b, sizeof b)) return Corrupt("not a COWD extent");
  const uint32_t sectors = LoadLE32(b + 12), grain = LoadLE32(b + 16), gd_off = LoadLE32(b + 20), n = LoadLE32(b + 24);
  if (!IsPow2(grain) || grain > kMaxGrainSectors) return Corrupt("invalid grain size of " + std::to_string(grain) + " sectors");
  const uint64_t span = uint64_t(4096) * grain;
  if (uint64_t(n) * span < sectors) return Corrupt("COWD grain directory does not cover the capacity");
  Layout l;
  l.flavor = Flavor::kCowd;
  l.cache_bytes = cache_bytes;
  l.capacity_bytes = uint64_t(sectors) * 512;
  l.grain_bytes = uint64_t(grain) * 512;
  l.gt_entries = 4096;
  l.entry_bytes = 4;
  l.type = "VMFSSPARSE";
  l.name = name;
  IMGFS_ASSIGN_OR_RETURN(auto gd, ReadDirectory(*file, uint64_t(gd_off) * 512, n, 4,
                                                [](uint64_t e) -> Result<uint64_t> { return e * 512; }));
  return std::unique_ptr<DiskExtent>(new GrainExtent(std::move(file), std::move(l), std::move(gd), {}));
}

Result<std::unique_ptr<DiskExtent>> OpenSeSparse(std::unique_ptr<io::File> file, const std::string& name,
                                                 size_t cache_bytes) {
  uint8_t b[512];
  IMGFS_RETURN_IF_ERROR(file->PRead(0, b, sizeof b));
  if (!IsSeSparse(b, sizeof b)) return Corrupt("not a seSparse extent");
  auto u = [&](size_t off) { return LoadLE64(b + off); };
  if (u(8) != 0x200000001ULL) return Unsupported("seSparse version 0x" + std::to_string(u(8)));
  if (u(24) != 8 || u(32) != 64) return Unsupported("seSparse with grains other than 4 KiB or tables other than 4096 entries");
  if (u(40) != 0) return Unsupported("seSparse flags " + std::to_string(u(40)));
  const uint64_t capacity = u(16);
  if (capacity > kMaxCapacitySectors) return Corrupt("capacity of " + std::to_string(capacity) + " sectors is too large");
  // Where things start is bounded by the file, how large their regions may
  // grow by 2^40 sectors: the byte offsets made from them cannot wrap.
  const uint64_t sectors = file->Size() / 512;
  constexpr uint64_t kMaxRegion = 1ULL << 40;
  if (u(80) >= sectors) return Corrupt("seSparse volatile header lies past the end of the file");
  if (u(144) > sectors || u(192) > sectors) return Corrupt("seSparse grain tables or grains start past the end of the file");
  if (u(152) > kMaxRegion || u(200) > kMaxRegion) return Corrupt("seSparse grain table or grain region is too large");
  uint8_t v[512];
  IMGFS_RETURN_IF_ERROR(file->PRead(u(80) * 512, v, sizeof v));
  if (LoadLE64(v) != 0xcafecafeULL) return Corrupt("seSparse volatile header has a wrong magic");
  if (LoadLE64(v + 24) != 0) return Unsupported("seSparse image with a journal to replay (it was not closed cleanly)");
  Layout l;
  l.flavor = Flavor::kSeSparse;
  l.cache_bytes = cache_bytes;
  l.capacity_bytes = capacity * 512;
  l.grain_bytes = 4096;
  l.gt_entries = 4096;
  l.entry_bytes = 8;
  l.se_gt_base = u(144);
  l.se_gt_count = u(152) / 64;
  l.se_grain_base = u(192);
  l.se_grain_count = u(200) / 8;
  l.type = "SESPARSE";
  l.name = name;
  const uint64_t span = 4096ULL * 8;
  const uint64_t n = (capacity + span - 1) / span;
  if (u(136) > kMaxRegion || u(136) * 512 / 8 < n) return Corrupt("seSparse grain directory does not cover the capacity");
  const uint64_t gt_base = l.se_gt_base, gt_count = l.se_gt_count;
  IMGFS_ASSIGN_OR_RETURN(auto gd, ReadDirectory(*file, u(128) * 512, n, 8, [=](uint64_t e) -> Result<uint64_t> {
                           if (e == 0) return uint64_t(0);
                           if ((e >> 32) != 0x10000000ULL) return Corrupt("invalid seSparse grain directory entry");
                           const uint64_t idx = e & 0xffffffffULL;
                           if (idx >= gt_count) return Corrupt("seSparse grain table index out of range");
                           return (gt_base + idx * 64) * 512;
                         }));
  return std::unique_ptr<DiskExtent>(new GrainExtent(std::move(file), std::move(l), std::move(gd), {}));
}

}  // namespace imgfs::vmdk
