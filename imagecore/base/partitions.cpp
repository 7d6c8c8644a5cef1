// MBR and GPT parsing (layouts from the UEFI specification and the classic
// PC partition table): only what locating partitions needs.
#include "imagecore/partitions.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>

namespace imgfs {

namespace {

constexpr uint64_t kSector = 512;

uint32_t Le32(const uint8_t* p) { return p[0] | p[1] << 8 | p[2] << 16 | uint32_t(p[3]) << 24; }
uint64_t Le64(const uint8_t* p) { return Le32(p) | uint64_t(Le32(p + 4)) << 32; }

bool IsExtended(uint8_t type) { return type == 0x05 || type == 0x0f || type == 0x85; }

void Add(std::vector<Partition>* out, unsigned number, uint64_t start_lba, uint64_t sectors, std::string type,
         uint64_t disk_size) {
  if (!sectors || start_lba > disk_size / kSector) return;
  Partition p;
  p.number = number;
  p.offset = start_lba * kSector;
  p.length = std::min(sectors * kSector, disk_size - p.offset);
  p.type = std::move(type);
  if (p.length) out->push_back(p);
}

std::string MbrType(uint8_t t) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "mbr:0x%02x", t);
  return buf;
}

std::string Guid(const uint8_t* g) {
  // Mixed endian: the first three fields little-endian.
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x", Le32(g), g[4] | g[5] << 8,
                g[6] | g[7] << 8, g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
  return buf;
}

Status ReadGpt(const DiskReader& read, uint64_t disk_size, std::vector<Partition>* out) {
  uint8_t h[kSector];
  IMGFS_RETURN_IF_ERROR(read(kSector, h, kSector));
  if (std::memcmp(h, "EFI PART", 8) != 0) return Status::OK();  // protective MBR, no GPT: nothing
  const uint64_t entries_lba = Le64(h + 72);
  const uint32_t count = Le32(h + 80), entry_size = Le32(h + 84);
  if (entry_size < 128 || entry_size > 4096 || count > 4096 || entries_lba > disk_size / kSector)
    return Corrupt("GPT header has an invalid partition array");
  std::vector<uint8_t> a(uint64_t(count) * entry_size);
  IMGFS_RETURN_IF_ERROR(read(entries_lba * kSector, a.data(), a.size()));
  static const uint8_t kZero[16] = {};
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* e = &a[uint64_t(i) * entry_size];
    if (!std::memcmp(e, kZero, 16)) continue;
    const uint64_t first = Le64(e + 32), last = Le64(e + 40);
    if (last < first) continue;
    Add(out, i + 1, first, last - first + 1, "gpt:" + Guid(e), disk_size);
  }
  return Status::OK();
}

}  // namespace

Result<std::vector<Partition>> ReadPartitionTable(const DiskReader& read, uint64_t disk_size) {
  std::vector<Partition> out;
  if (disk_size < 2 * kSector) return out;
  uint8_t mbr[kSector];
  IMGFS_RETURN_IF_ERROR(read(0, mbr, kSector));
  if (mbr[510] != 0x55 || mbr[511] != 0xaa) return out;
  for (int i = 0; i < 4; ++i) {
    if (mbr[446 + i * 16 + 4] == 0xee) {  // protective MBR
      IMGFS_RETURN_IF_ERROR(ReadGpt(read, disk_size, &out));
      return out;
    }
  }
  for (int i = 0; i < 4; ++i) {
    const uint8_t* e = mbr + 446 + i * 16;
    const uint8_t type = e[4];
    const uint64_t start = Le32(e + 8), count = Le32(e + 12);
    if (!type || !count) continue;
    if (!IsExtended(type)) {
      Add(&out, unsigned(i + 1), start, count, MbrType(type), disk_size);
      continue;
    }
    // Logical partitions: a chain of EBRs inside the extended partition;
    // each names one partition (relative to itself) and the next EBR
    // (relative to the extended partition's start).
    std::set<uint64_t> seen;
    unsigned number = 5;
    for (uint64_t ebr = start; ebr && ebr < disk_size / kSector && seen.insert(ebr).second && number < 256;) {
      uint8_t b[kSector];
      IMGFS_RETURN_IF_ERROR(read(ebr * kSector, b, kSector));
      if (b[510] != 0x55 || b[511] != 0xaa) break;
      const uint8_t* l = b + 446;
      if (l[4] && Le32(l + 12)) Add(&out, number++, ebr + Le32(l + 8), Le32(l + 12), MbrType(l[4]), disk_size);
      const uint8_t* next = b + 446 + 16;
      ebr = IsExtended(next[4]) && Le32(next + 8) ? start + Le32(next + 8) : 0;
    }
  }
  std::sort(out.begin(), out.end(), [](const Partition& a, const Partition& b) { return a.number < b.number; });
  return out;
}

}  // namespace imgfs
