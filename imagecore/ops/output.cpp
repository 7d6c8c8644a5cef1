// Where a command's output goes, and the outputs it must refuse: a device
// that is not a disk, a FIFO, or a file the command reads from.
#include <sys/stat.h>

#include "imagecore/ops.h"

namespace imgfs::ops {

Result<Output> InspectOutput(const std::string& path) {
  Output out;
  out.path = path;
  auto link = io::LinkStatPath(path);
  if (!link.ok()) {
    if (link.status().code() == Code::kNotFound) return out;
    return link.status();
  }
  auto st = io::StatPath(path);
  if (!st.ok()) {
    // A link to nothing: the new file takes the link's place.
    if (st.status().code() == Code::kNotFound) return out;
    return st.status();
  }
  if (st.value().is_block) {
    out.kind = Output::kBlockDevice;
  } else if (st.value().is_regular) {
    out.kind = Output::kRegular;
    // Written beside the file the link names, and renamed over it, as
    // qemu-img writes through the link.
    if (link.value().is_symlink) out.path = io::RealPath(path);
  } else {
    return InvalidArgument(path + ": not a regular file or block device; refusing to replace it");
  }
  out.dev = st.value().dev;
  out.ino = st.value().ino;
  return out;
}

Status CheckNotAnInput(const Output& out, const std::vector<const Chain*>& inputs) {
  if (out.kind == Output::kNew) return Status::OK();
  for (const Chain* chain : inputs) {
    for (size_t d = 0; d < chain->depth(); d++) {
      for (const Image::LayerFile& lf : chain->layer(d).files()) {
        auto st = lf.file->Stat();
        if (!st.ok() || st.value().dev != out.dev || st.value().ino != out.ino) continue;
        return InvalidArgument(out.path + ": is also an input (" + lf.file->path() +
                               "); refusing to write over it");
      }
    }
  }
  return Status::OK();
}

}  // namespace imgfs::ops
