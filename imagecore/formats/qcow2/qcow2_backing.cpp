// Changing the backing file a qcow2 image names (qemu-img rebase): the
// header cluster is rewritten in one write, its fixed fields as they are
// on disk but the backing name's place and length, the extensions kept in
// their order but the backing format's, the name after them.
#include <cstring>

#include "base/endian.h"
#include "formats/qcow2/qcow2_image.h"

namespace imgfs::qcow2 {

Status Qcow2Image::SetBacking(const std::string& name, const std::string& format, const Image*) {
  if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
  if (name.size() > 1023) return InvalidArgument("backing file name too long (1023 bytes at most)");
  if (!name.empty() && (header_.autoclear_features & kAutoclearDataFileRaw))
    return InvalidArgument(file_->path() + ": an image with data_file_raw=on cannot have a backing file");
  std::lock_guard<std::mutex> l(meta_mu_);
  std::vector<uint8_t> c0(cluster_size_);
  IMGFS_RETURN_IF_ERROR(file_->PRead(0, c0.data(), c0.size()));
  const uint32_t fixed = header_.header_length;
  // The backing format first, as qemu writes it; the rest as they were.
  std::vector<RawExtension> exts;
  if (!name.empty() && !format.empty()) exts.push_back({kExtBackingFormat, {format.begin(), format.end()}});
  for (RawExtension& e : ReadExtensions(c0, fixed))
    if (e.type != kExtBackingFormat) exts.push_back(std::move(e));
  const std::vector<uint8_t> area =
      BuildHeaderArea(std::vector<uint8_t>(c0.begin(), c0.begin() + fixed), exts, name);
  if (area.size() > cluster_size_)
    return InvalidArgument(file_->path() + ": the backing file name does not fit in the header cluster");
  const uint64_t name_offset = name.empty() ? 0 : area.size() - name.size();
  // One write of at most a cluster, then durable: a crash leaves the old
  // header or the new one (what lies past the new name is never read).
  IMGFS_RETURN_IF_ERROR(file_->PWrite(0, area.data(), area.size()));
  IMGFS_RETURN_IF_ERROR(file_->Sync());
  header_.backing_file_offset = name_offset;
  header_.backing_file_size = uint32_t(name.size());
  header_.backing_file = name;
  header_.backing_format = name.empty() ? "" : format;
  return Status::OK();
}

}  // namespace imgfs::qcow2
