// qcow2 on-disk layout (docs/interop/qcow2.txt in qemu), field names as in
// the specification. Decoding checks every field that later code trusts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "imagecore/file.h"
#include "imagecore/status.h"

namespace imgfs::qcow2 {

constexpr uint32_t kMagic = 0x514649fb;  // "QFI\xfb"
constexpr uint32_t kV2HeaderSize = 72;
constexpr uint32_t kV3HeaderSize = 104;

// incompatible_features bits
constexpr uint64_t kIncompatDirty = 1ull << 0;
constexpr uint64_t kIncompatCorrupt = 1ull << 1;
constexpr uint64_t kIncompatDataFile = 1ull << 2;
constexpr uint64_t kIncompatCompression = 1ull << 3;
constexpr uint64_t kIncompatExtendedL2 = 1ull << 4;
constexpr uint64_t kIncompatKnown = 0x1f;
// compatible_features bits
constexpr uint64_t kCompatLazyRefcounts = 1ull << 0;
// autoclear_features bits
constexpr uint64_t kAutoclearBitmaps = 1ull << 0;
constexpr uint64_t kAutoclearDataFileRaw = 1ull << 1;

// header extension types
constexpr uint32_t kExtEnd = 0;
constexpr uint32_t kExtBackingFormat = 0xe2792aca;
constexpr uint32_t kExtFeatureTable = 0x6803f857;
constexpr uint32_t kExtBitmaps = 0x23852875;
constexpr uint32_t kExtCrypto = 0x0537be77;
constexpr uint32_t kExtDataFile = 0x44415441;

// L1/L2 entry bits
constexpr uint64_t kOflagCopied = 1ull << 63;
constexpr uint64_t kOflagCompressed = 1ull << 62;
constexpr uint64_t kOflagZero = 1ull << 0;
constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;  // bits 9-55
constexpr uint64_t kL1Reserved = 0x7f000000000001ffull;
constexpr uint64_t kL2Reserved = 0x3f000000000001feull;  // a standard (uncompressed) entry's
constexpr uint64_t kRefTableOffsetMask = 0xfffffffffffffe00ull;

constexpr uint32_t kMinClusterBits = 9;
constexpr uint32_t kMaxClusterBits = 21;
constexpr uint64_t kMaxL1Bytes = 32ull << 20;  // as qemu: refuse absurd tables
constexpr uint64_t kMaxRefTableBytes = 8ull << 20;

struct Header {
  uint32_t magic = kMagic;
  uint32_t version = 3;
  uint64_t backing_file_offset = 0;
  uint32_t backing_file_size = 0;
  uint32_t cluster_bits = 16;
  uint64_t size = 0;
  uint32_t crypt_method = 0;
  uint32_t l1_size = 0;
  uint64_t l1_table_offset = 0;
  uint64_t refcount_table_offset = 0;
  uint32_t refcount_table_clusters = 0;
  uint32_t nb_snapshots = 0;
  uint64_t snapshots_offset = 0;
  // version 3
  uint64_t incompatible_features = 0;
  uint64_t compatible_features = 0;
  uint64_t autoclear_features = 0;
  uint32_t refcount_order = 4;
  uint32_t header_length = kV3HeaderSize;
  uint8_t compression_type = 0;  // 0 zlib, 1 zstd

  // From header extensions and the backing file name field.
  std::string backing_file;
  std::string backing_format;
  std::string data_file;  // external data file name, as stored
  bool has_bitmaps_ext = false;
  uint32_t nb_bitmaps = 0;
  uint32_t bitmaps_reserved = 0;
  uint32_t bitmaps_ext_len = 24;
  uint64_t bitmap_directory_size = 0;
  uint64_t bitmap_directory_offset = 0;
  // The LUKS header's clusters (crypt_method 2): offset and length in bytes.
  bool has_crypto_ext = false;
  uint64_t crypto_offset = 0;
  uint64_t crypto_length = 0;

  uint64_t cluster_size() const { return 1ull << cluster_bits; }
  uint32_t refcount_bits() const { return 1u << refcount_order; }

  // Reads and validates the header of `file` (the first cluster).
  static Result<Header> Read(const io::File& file);
  // The fixed part, version 2 or 3 layout (header_length bytes for v3).
  std::vector<uint8_t> EncodeFixed() const;
};

// A header extension as stored in cluster 0.
struct RawExtension {
  uint32_t type;
  std::vector<uint8_t> data;
};
// The extensions of header cluster `c0` in their order (bounds were
// checked at open; a damaged tail ends the list).
std::vector<RawExtension> ReadExtensions(const std::vector<uint8_t>& c0, uint32_t header_length);
// A new header area: `fixed` (the fixed fields), then `exts` and the end
// mark, then the backing file name, whose offset and length are stored in
// the fixed fields. The caller writes it in one write of at most a cluster.
std::vector<uint8_t> BuildHeaderArea(std::vector<uint8_t> fixed, const std::vector<RawExtension>& exts,
                                     const std::string& backing_name);

// Bitmap directory entry flags.
constexpr uint32_t kBitmapInUse = 1, kBitmapAuto = 2, kBitmapExtraCompatible = 4;
constexpr uint64_t kBitmapOffsetMask = 0x00fffffffffffe00ull;  // of a bitmap table entry
// A bitmap bigger than this in memory is not read (a tracked one is marked
// in_use instead): 64 MiB covers 2 TiB at 4 KiB granularity.
constexpr uint64_t kMaxBitmapBytes = 64ull << 20;
constexpr uint64_t kMaxBitmapDirectory = 64ull << 20;  // qemu's bound
constexpr uint32_t kMaxBitmapNameSize = 1023;

// One entry of the bitmap directory; `pos` is its offset in the directory.
struct BitmapDirEntry {
  uint64_t pos = 0;
  uint64_t table_offset = 0;
  uint32_t table_size = 0;
  uint32_t flags = 0;
  uint8_t type = 0;
  uint8_t granularity_bits = 0;
  uint32_t extra_size = 0;
  std::string name;
};
// The entries of a bitmap directory as read from the file (a truncated
// last entry is left out).
// At most `max_entries` (the header's nb_bitmaps) are read.
constexpr uint32_t kMaxBitmaps = 65535;  // qemu's limit
std::vector<BitmapDirEntry> ParseBitmapDirectory(const std::vector<uint8_t>& dir, uint32_t max_entries = kMaxBitmaps);
// What is wrong with a bitmaps extension that is marked consistent (the
// autoclear bit), as qemu would refuse to open it for; "" if nothing.
// `dir` is its directory, as read.
std::string BitmapsExtensionProblem(const Header& h, uint64_t cluster_size, const std::vector<uint8_t>* dir);

// Where a compressed cluster's bytes lie: from `host`, `bytes` long (whole
// 512-byte sectors counted from the one holding `host`).
struct CompressedRange {
  uint64_t host;
  uint64_t bytes;
};
inline CompressedRange DecodeCompressed(uint64_t entry, uint32_t cluster_bits) {
  const uint32_t x = 62 - (cluster_bits - 8);
  const uint64_t host = entry & ((1ull << x) - 1);
  const uint64_t sectors = ((entry & ((1ull << 62) - 1)) >> x) + 1;
  return {host, sectors * 512 - (host & 511)};
}

// L1 entries needed to map `size` bytes (an L2 table maps cluster/8
// clusters, cluster/16 with extended entries).
inline uint64_t L1EntriesFor(uint64_t size, uint32_t cluster_bits, bool extended_l2 = false) {
  const uint64_t l2_span = 1ull << (cluster_bits + cluster_bits - (extended_l2 ? 4 : 3));
  return (size + l2_span - 1) / l2_span;
}

}  // namespace imgfs::qcow2
