// Decompression of whole clusters (qcow2 now, vmdk stream grains later).
#pragma once

#include <cstddef>
#include <cstdint>

#include "imagecore/status.h"

namespace imgfs {

// Raw deflate (no zlib header). Fills exactly out_len bytes or fails.
Status InflateRaw(const uint8_t* in, size_t in_len, uint8_t* out, size_t out_len);
// zstd frame(s); the input may carry trailing bytes past the frame.
Status ZstdDecompress(const uint8_t* in, size_t in_len, uint8_t* out, size_t out_len);

}  // namespace imgfs
