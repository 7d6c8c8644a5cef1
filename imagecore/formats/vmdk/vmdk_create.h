// `create -f vmdk`: every subformat qemu-img makes, with its options.
#pragma once

#include "imagecore/format.h"

namespace imgfs::vmdk {

Status CreateFiles(NewFiles& files, const CreateOptions& opts);

}  // namespace imgfs::vmdk
