// `create -f vhdx`: dynamic and fixed disks with qemu-img's options and
// defaults, and differencing disks (-b), which qemu-img cannot make.
#pragma once

#include "imagecore/format.h"

namespace imgfs::vhdx {

Status CreateImage(io::File& file, const CreateOptions& opts);

// The block size qemu-img picks for a disk of `size` bytes.
uint32_t DefaultBlockSize(uint64_t size);

// What a child stores as the relative path to the parent it names as
// `backing` (Windows separators, ".\" before a name in its directory).
std::string RelativeParentPath(const std::string& backing);

}  // namespace imgfs::vhdx
