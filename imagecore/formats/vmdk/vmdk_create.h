// `create -f vmdk`: every subformat qemu-img makes, with its options.
#pragma once

#include <string>

#include "imagecore/format.h"

namespace imgfs::vmdk {

Status CreateFiles(NewFiles& files, const CreateOptions& opts);

// The name of an extent file as qemu-img makes it: "x.vmdk", "s002" -> "x-s002.vmdk".
std::string ExtentName(const std::string& main_path, const std::string& tag);
// A sparse extent of `sectors` in qemu-img's layout (every grain table
// preallocated), with `embedded` as its descriptor text.
Status WriteSparse(io::File& f, uint64_t sectors, bool zeroed_grain, bool stream, const std::string& embedded);

}  // namespace imgfs::vmdk
