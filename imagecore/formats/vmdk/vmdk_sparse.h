// Sparse VMDK extents: the hosted "KDMV" extent (monolithicSparse,
// twoGbMaxExtentSparse, streamOptimized), ESX's "COWD" (vmfsSparse) and
// ESXi's seSparse. All map guest grains through a grain directory of grain
// tables; they differ in the entry encodings.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "formats/vmdk/vmdk_extent.h"
#include "imagecore/file.h"

namespace imgfs::vmdk {

constexpr uint32_t kFlagNewlineTest = 0x1;
constexpr uint32_t kFlagRedundantGd = 0x2;
constexpr uint32_t kFlagZeroGrain = 0x4;
constexpr uint32_t kFlagCompressed = 0x10000;
constexpr uint32_t kFlagMarkers = 0x20000;
constexpr uint64_t kGdAtEnd = ~uint64_t(0);
// Bounds on what a header may claim, so no allocation follows a hostile size.
constexpr uint64_t kMaxGrainSectors = 1 << 15;   // 16 MiB grains
constexpr uint64_t kMaxGdEntries = 1 << 25;      // as qemu
constexpr uint64_t kMaxCapacitySectors = uint64_t(1) << 40;  // 512 TiB

// The 512-byte header of a KDMV extent (all sizes in sectors).
struct SparseHeader {
  uint32_t version = 0;
  uint32_t flags = 0;
  uint64_t capacity = 0;
  uint64_t grain_sectors = 0;
  uint64_t desc_offset = 0;
  uint64_t desc_sectors = 0;
  uint32_t gtes_per_gt = 0;
  uint64_t rgd_offset = 0;
  uint64_t gd_offset = 0;
  uint64_t overhead = 0;
  uint8_t unclean = 0;
  uint16_t compress = 0;
  bool compressed() const { return compress == 1; }
  bool markers() const { return flags & kFlagMarkers; }
};

bool IsKdmv(const uint8_t* head, size_t len);
bool IsCowd(const uint8_t* head, size_t len);
bool IsSeSparse(const uint8_t* head, size_t len);

// Reads and checks the header at the start of `file`; a stream whose
// grain directory is at the end takes the footer's copy instead.
Result<SparseHeader> ReadSparseHeader(const io::File& file);

// `type` is the extent type the descriptor named ("" for a file opened
// directly), `name` its file name, both for `info`.
// `cache_bytes`: the memory the extent may keep in its caches.
constexpr size_t kExtentCacheBytes = 8 << 20;
Result<std::unique_ptr<DiskExtent>> OpenHostedSparse(std::unique_ptr<io::File> file, const SparseHeader& h,
                                                     const std::string& type, const std::string& name,
                                                     size_t cache_bytes = kExtentCacheBytes);
Result<std::unique_ptr<DiskExtent>> OpenCowd(std::unique_ptr<io::File> file, const std::string& name,
                                             size_t cache_bytes = kExtentCacheBytes);
Result<std::unique_ptr<DiskExtent>> OpenSeSparse(std::unique_ptr<io::File> file, const std::string& name,
                                                 size_t cache_bytes = kExtentCacheBytes);

}  // namespace imgfs::vmdk
