// VHDX's on-disk structures (MS-VHDX), parsed from and written to bytes.
//
//   0       file type identifier ("vhdxfile")
//   64 KiB  header 1, 128 KiB header 2 (4 KiB each; the valid one with the
//           higher sequence number is current)
//   192 KiB region table 1, 256 KiB region table 2 (64 KiB each)
//   then, at 1 MiB multiples anywhere: the log, the metadata region, the
//   BAT region and the payload and sector bitmap blocks.
//
// Every field is little-endian; GUIDs are stored as Windows lays them out
// (three little-endian words, then eight bytes).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "imagecore/status.h"

namespace imgfs::vhdx {

constexpr uint64_t kKiB = 1024, kMiB = 1024 * 1024;
constexpr uint64_t kHeaderOffsets[2] = {64 * kKiB, 128 * kKiB};
constexpr uint64_t kRegionTableOffsets[2] = {192 * kKiB, 256 * kKiB};
constexpr size_t kHeaderBytes = 4096;
constexpr size_t kRegionTableBytes = 64 * kKiB;
constexpr size_t kMetadataTableBytes = 64 * kKiB;
constexpr uint32_t kMinBlockSize = 1 * kMiB, kMaxBlockSize = 256 * kMiB;
constexpr uint64_t kMaxDiskSize = 64ull << 40;  // 64 TiB
constexpr uint32_t kMaxItemBytes = 1 * kMiB;    // a metadata item
constexpr uint32_t kMaxTableEntries = 2047;     // region and metadata tables

struct Guid {
  std::array<uint8_t, 16> b{};
  // From "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (as the specification
  // writes them); all zeros for malformed text.
  static Guid FromText(const char* text);
  static Guid Load(const uint8_t* p);
  // A fresh random GUID (version 4).
  static Guid Random();
  void Store(uint8_t* p) const;
  bool zero() const;
  std::string ToText() const;
  bool operator==(const Guid& o) const { return b == o.b; }
  bool operator!=(const Guid& o) const { return b != o.b; }
};

// Regions and metadata items the specification defines.
extern const Guid kBatRegion, kMetadataRegion;
extern const Guid kFileParametersItem, kVirtualDiskSizeItem, kPage83Item, kLogicalSectorItem,
    kPhysicalSectorItem, kParentLocatorItem;
extern const Guid kVhdxParentLocatorType;

struct Header {
  uint64_t sequence = 0;
  Guid file_write, data_write, log;
  uint16_t log_version = 0;
  uint16_t version = 1;
  uint32_t log_length = 0;
  uint64_t log_offset = 0;
};
// One copy of the header (4 KiB), or why it is not valid (signature,
// checksum, version).
Result<Header> ParseHeader(const uint8_t* p);
// The 4 KiB of `h`, checksummed.
void StoreHeader(const Header& h, uint8_t* p);

struct Region {
  Guid id;
  uint64_t offset = 0;
  uint32_t length = 0;
  bool required = false;
};
// One copy of the region table (64 KiB), or why it is not valid.
Result<std::vector<Region>> ParseRegionTable(const uint8_t* p);
void StoreRegionTable(const std::vector<Region>& regions, uint8_t* p);

struct MetadataEntry {
  Guid id;
  uint32_t offset = 0;  // from the start of the metadata region
  uint32_t length = 0;
  bool is_user = false, is_virtual_disk = false, is_required = false;
};
// The metadata table (the region's first 64 KiB).
Result<std::vector<MetadataEntry>> ParseMetadataTable(const uint8_t* p);
void StoreMetadataTable(const std::vector<MetadataEntry>& entries, uint8_t* p);

// The parent locator: key/value pairs, UTF-16LE on disk, UTF-8 here.
struct ParentLocator {
  Guid type;
  std::vector<std::pair<std::string, std::string>> entries;
  const std::string* Find(const std::string& key) const;
};
Result<ParentLocator> ParseParentLocator(const uint8_t* p, size_t len);
std::vector<uint8_t> StoreParentLocator(const ParentLocator& loc);

// UTF-16LE to UTF-8 and back (unpaired surrogates: an error).
Result<std::string> Utf16ToUtf8(const uint8_t* p, size_t bytes);
std::vector<uint8_t> Utf8ToUtf16(const std::string& s);

}  // namespace imgfs::vhdx
