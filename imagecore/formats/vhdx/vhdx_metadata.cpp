#include "formats/vhdx/vhdx_metadata.h"

#include <algorithm>
#include <memory>

#include "base/endian.h"

namespace imgfs::vhdx {
namespace {

bool IsPowerOfTwo(uint64_t v) { return v && !(v & (v - 1)); }

// The item's bytes; its length must be `want` where that is not 0.
Result<std::vector<uint8_t>> ReadItem(const io::File& f, const Region& r, const MetadataEntry& e, size_t want,
                                      const char* what) {
  if (want && e.length != want) return Corrupt(std::string(what) + " item of " + std::to_string(e.length) + " bytes");
  if (uint64_t(e.offset) + e.length > r.length) return Corrupt(std::string(what) + " item past the metadata region");
  std::vector<uint8_t> out(e.length);
  if (!out.empty()) IMGFS_RETURN_IF_ERROR(f.PRead(r.offset + e.offset, out.data(), out.size()));
  return out;
}

Status CheckParams(const DiskParams& p) {
  if (p.block_size < kMinBlockSize || p.block_size > kMaxBlockSize || !IsPowerOfTwo(p.block_size))
    return Corrupt("block size " + std::to_string(p.block_size) + " (1 MiB to 256 MiB, a power of two)");
  if (p.logical_sector != 512 && p.logical_sector != 4096)
    return Corrupt("logical sector size " + std::to_string(p.logical_sector) + " (512 or 4096)");
  if (p.physical_sector != 512 && p.physical_sector != 4096)
    return Corrupt("physical sector size " + std::to_string(p.physical_sector) + " (512 or 4096)");
  if (!p.disk_size || p.disk_size > kMaxDiskSize || p.disk_size % p.logical_sector)
    return Corrupt("virtual disk size " + std::to_string(p.disk_size) + " (a whole number of sectors, up to 64 TiB)");
  return Status::OK();
}

}  // namespace

Result<DiskParams> ReadMetadata(const io::File& f, const Region& r) {
  if (r.length < kMetadataTableBytes) return Corrupt("metadata region smaller than its table");
  auto table = std::make_unique<uint8_t[]>(kMetadataTableBytes);
  IMGFS_RETURN_IF_ERROR(f.PRead(r.offset, table.get(), kMetadataTableBytes));
  IMGFS_ASSIGN_OR_RETURN(std::vector<MetadataEntry> entries, ParseMetadataTable(table.get()));
  DiskParams p;
  bool have_params = false, have_size = false, have_logical = false, have_physical = false;
  for (size_t i = 0; i < entries.size(); ++i) {
    const MetadataEntry& e = entries[i];
    p.items_end = std::max<uint64_t>(p.items_end, uint64_t(e.offset) + e.length);
    if (e.is_user) continue;  // the user's own items mean nothing to the disk
    if (e.id == kFileParametersItem) {
      IMGFS_ASSIGN_OR_RETURN(auto b, ReadItem(f, r, e, 8, "file parameters"));
      p.block_size = LoadLE32(&b[0]);
      p.leave_blocks_allocated = b[4] & 1;
      p.has_parent = b[4] & 2;
      have_params = true;
    } else if (e.id == kVirtualDiskSizeItem) {
      IMGFS_ASSIGN_OR_RETURN(auto b, ReadItem(f, r, e, 8, "virtual disk size"));
      p.disk_size = LoadLE64(&b[0]);
      p.disk_size_at = e.offset;
      have_size = true;
    } else if (e.id == kLogicalSectorItem) {
      IMGFS_ASSIGN_OR_RETURN(auto b, ReadItem(f, r, e, 4, "logical sector size"));
      p.logical_sector = LoadLE32(&b[0]);
      have_logical = true;
    } else if (e.id == kPhysicalSectorItem) {
      IMGFS_ASSIGN_OR_RETURN(auto b, ReadItem(f, r, e, 4, "physical sector size"));
      p.physical_sector = LoadLE32(&b[0]);
      have_physical = true;
    } else if (e.id == kPage83Item) {
      IMGFS_ASSIGN_OR_RETURN(auto b, ReadItem(f, r, e, 16, "page 83 data"));
      p.page83 = Guid::Load(b.data());
    } else if (e.id == kParentLocatorItem) {
      IMGFS_ASSIGN_OR_RETURN(auto b, ReadItem(f, r, e, 0, "parent locator"));
      IMGFS_ASSIGN_OR_RETURN(p.parent, ParseParentLocator(b.data(), b.size()));
      p.locator_entry_at = 32 + i * 32;
      p.locator_at = e.offset;
      p.locator_length = e.length;
    } else if (e.is_required) {
      return Unsupported("unknown required metadata item " + e.id.ToText());
    }
  }
  if (!have_params || !have_size || !have_logical || !have_physical)
    return Corrupt("metadata lacks " + std::string(!have_params   ? "the file parameters"
                                                   : !have_size   ? "the virtual disk size"
                                                   : !have_logical ? "the logical sector size"
                                                                   : "the physical sector size"));
  IMGFS_RETURN_IF_ERROR(CheckParams(p));
  if (p.has_parent && !p.parent) return Corrupt("a differencing disk without a parent locator");
  if (p.has_parent && p.parent->type != kVhdxParentLocatorType)
    return Unsupported("parent locator of the unknown type " + p.parent->type.ToText());
  if (!p.has_parent) p.parent.reset();
  return p;
}

BatGeometry::BatGeometry(const DiskParams& p) {
  chunk_ratio = (uint64_t(1) << 23) * p.logical_sector / p.block_size;
  payload_blocks = (p.disk_size + p.block_size - 1) / p.block_size;
  const uint64_t bitmap_blocks = (payload_blocks + chunk_ratio - 1) / chunk_ratio;
  entries = p.has_parent ? bitmap_blocks * (chunk_ratio + 1) : payload_blocks + (payload_blocks - 1) / chunk_ratio;
}

}  // namespace imgfs::vhdx
