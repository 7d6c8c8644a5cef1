// The metadata region's items that describe the virtual disk, and the BAT
// geometry they imply.
#pragma once

#include <optional>

#include "formats/vhdx/vhdx_format.h"
#include "imagecore/file.h"

namespace imgfs::vhdx {

struct DiskParams {
  uint32_t block_size = 0;
  bool leave_blocks_allocated = false;
  bool has_parent = false;
  uint64_t disk_size = 0;
  uint64_t disk_size_at = 0;  // where the disk size item lies, from the region's start
  uint32_t logical_sector = 512;
  uint32_t physical_sector = 4096;
  Guid page83;
  std::optional<ParentLocator> parent;  // has_parent only
  // Where the parent locator lies (from the region's start): its table
  // entry, its bytes; and where the items end (room for a larger one).
  uint64_t locator_entry_at = 0, locator_at = 0, locator_length = 0, items_end = 0;
};

// Reads the items of the metadata region at [r.offset, r.offset+r.length)
// of `f`. Unknown items marked required refuse the image, naming them.
Result<DiskParams> ReadMetadata(const io::File& f, const Region& r);

// How the BAT lays out payload and sector bitmap entries: after every
// `chunk_ratio` payload blocks, the sector bitmap block that covers them.
struct BatGeometry {
  uint64_t chunk_ratio = 0;
  uint64_t payload_blocks = 0;
  uint64_t entries = 0;  // the BAT's length in entries
  explicit BatGeometry(const DiskParams& p);
  uint64_t PayloadEntry(uint64_t block) const { return block + block / chunk_ratio; }
  uint64_t BitmapEntry(uint64_t block) const { return block / chunk_ratio * (chunk_ratio + 1) + chunk_ratio; }
};

// BAT entries: the state in the low 3 bits, the file offset in MiB from bit 20.
enum BlockState : uint8_t {
  kNotPresent = 0,  // payload: not in this file (a differencing disk reads its parent)
  kUndefined = 1,
  kZero = 2,
  kUnmapped = 3,
  kFullyPresent = 6,
  kPartiallyPresent = 7,  // differencing only: the sector bitmap says which sectors
};
constexpr uint8_t kBitmapPresent = 6;  // a sector bitmap block's state when it has one
inline uint8_t EntryState(uint64_t e) { return uint8_t(e & 7); }
inline uint64_t EntryOffset(uint64_t e) { return (e >> 20) << 20; }
inline uint64_t MakeEntry(uint8_t state, uint64_t offset) { return (offset >> 20) << 20 | state; }

}  // namespace imgfs::vhdx
