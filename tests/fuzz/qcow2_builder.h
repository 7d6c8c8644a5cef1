// A small consistent qcow2 image made in code around fuzzed bytes, so that
// a target spends its time on one table's parser instead of on the header
// checks in front of it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "imagecore/file.h"
#include "imagecore/status.h"

namespace imgfs::fuzz {

// Where the fuzzed bytes go: cluster aligned for every cluster size used.
constexpr uint64_t kPayloadOffset = 256 << 10;

struct SyntheticQcow2 {
  uint32_t cluster_bits = 16;  // 9..16
  uint64_t size = 1 << 20;     // virtual size; bounded by the caller
  // Snapshot table at kPayloadOffset when nb_snapshots > 0.
  uint32_t nb_snapshots = 0;
  // Bitmap extension naming a directory at kPayloadOffset.
  bool bitmaps = false;
  uint32_t nb_bitmaps = 0;
  uint64_t bitmap_directory_size = 0;
};

// Writes into the empty file `f` a version 3 image: header, an empty L1
// table, refcount table and blocks giving every metadata and payload
// cluster refcount 1, and `payload` at kPayloadOffset.
Status WriteQcow2Around(io::File& f, const SyntheticQcow2& spec, const uint8_t* payload, size_t n);

}  // namespace imgfs::fuzz
