// Image's portable defaults.
#include <algorithm>
#include <vector>

#include "imagecore/format.h"
#include "imagecore/image.h"

namespace imgfs {

const char* Image::format_name() const { return driver().name; }
const Capabilities& Image::caps() const { return driver().caps; }

const char* BitmapChange::Verb(Kind k) {
  switch (k) {
    case kAdd: return "add";
    case kRemove: return "remove";
    case kClear: return "clear";
    case kEnable: return "enable";
    case kDisable: return "disable";
    case kMerge: return "merge";
  }
  return "?";
}

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

uint64_t Image::AllocatedBytes() const {
  uint64_t sum = 0;
  std::vector<const io::File*> seen;
  for (const LayerFile& f : files()) {
    if (std::find(seen.begin(), seen.end(), f.file) != seen.end()) continue;  // an extent named twice
    seen.push_back(f.file);
    sum += f.file->AllocatedBytes();
  }
  return sum;
}

Status Image::ClaimWriting() {
  for (const LayerFile& f : files())
    if (f.file->writable()) IMGFS_RETURN_IF_ERROR(f.file->ClaimForWriting());
  return Status::OK();
}

Status Image::CheckWriteClaim() const {
  for (const LayerFile& f : files())
    if (f.file->writable()) IMGFS_RETURN_IF_ERROR(f.file->CheckClaim());
  return Status::OK();
}

void Image::DropWriteClaim() {
  for (const LayerFile& f : files()) f.file->DropClaim();
}

}  // namespace imgfs
