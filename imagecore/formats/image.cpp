// Image's portable defaults.
#include <algorithm>
#include <vector>

#include "imagecore/image.h"

namespace imgfs {

Status Image::WriteZeroes(uint64_t off, uint64_t len, bool, const LayerReader* below) {
  std::vector<uint8_t> zeros(std::min<uint64_t>(len, 1 << 20), 0);
  while (len > 0) {
    const uint64_t n = std::min<uint64_t>(len, zeros.size());
    IMGFS_RETURN_IF_ERROR(Write(off, zeros.data(), n, below));
    off += n;
    len -= n;
  }
  return Status::OK();
}

}  // namespace imgfs
