// Changing the backing file a qcow2 image names (qemu-img rebase): the
// header cluster is rewritten in one write (qcow2_header_write.cpp), its
// fixed fields as they are on disk but the backing name's place and
// length, the extensions kept in their order but the backing format's.
#include "formats/qcow2/qcow2_image.h"
#include "imagecore/mutex.h"

namespace imgfs::qcow2 {

Status Qcow2Image::SetBacking(const std::string& name, const std::string& format, const Image*) {
  if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
  if (name.size() > 1023) return InvalidArgument("backing file name too long (1023 bytes at most)");
  if (!name.empty() && (header_.autoclear_features & kAutoclearDataFileRaw))
    return InvalidArgument(file_->path() + ": an image with data_file_raw=on cannot have a backing file");
  MutexLock l(meta_mu_);
  IMGFS_ASSIGN_OR_RETURN(HeaderCluster hc, ReadHeaderClusterLocked());
  // The backing format first, as qemu writes it; the rest as they were.
  std::vector<RawExtension> exts;
  if (!name.empty() && !format.empty()) exts.push_back({kExtBackingFormat, {format.begin(), format.end()}});
  for (RawExtension& e : hc.exts)
    if (e.type != kExtBackingFormat) exts.push_back(std::move(e));
  hc.exts = std::move(exts);
  IMGFS_RETURN_IF_ERROR(WriteHeaderClusterLocked(hc, name, "the backing file name"));
  header_.backing_format = name.empty() ? "" : format;
  return Status::OK();
}

}  // namespace imgfs::qcow2
