// Decompression of whole clusters (qcow2 now, vmdk stream grains later).
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

}  // namespace imgfs
