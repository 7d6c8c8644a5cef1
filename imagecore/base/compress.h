// Compression and decompression of whole clusters (qcow2) and grains (vmdk).
#pragma once

#include <cstddef>
#include <cstdint>

#include "imagecore/status.h"

namespace imgfs {

// Raw deflate (no zlib header). Fills exactly out_len bytes or fails.
Status InflateRaw(const uint8_t* in, size_t in_len, uint8_t* out, size_t out_len);
// A zlib stream (RFC 1950, as VMDK's DEFLATE grains are stored). Up to
// out_len bytes; *produced says how many the stream held.
Status InflateZlib(const uint8_t* in, size_t in_len, uint8_t* out, size_t out_len, size_t* produced);
// zstd frame(s); the input may carry trailing bytes past the frame.
Status ZstdDecompress(const uint8_t* in, size_t in_len, uint8_t* out, size_t out_len);

// Compressors for a cluster written compressed. Each returns the compressed
// length, or 0 when the result would not be shorter than `cap` bytes (the
// caller then writes the data as it is).
// Raw deflate with a 4 KiB window: qemu inflates qcow2 clusters with
// window bits -12, so a larger window would not read back there.
Result<size_t> DeflateRaw4K(const uint8_t* in, size_t in_len, uint8_t* out, size_t cap);
// One zstd frame at the default level.
Result<size_t> ZstdCompress(const uint8_t* in, size_t in_len, uint8_t* out, size_t cap);

}  // namespace imgfs
