// Rewriting the qcow2 header cluster: its fixed fields, extensions and
// backing file name in one write of at most a cluster, then a sync, so a
// crash leaves the old header or the new one (what lies past the new name
// is never read). Every header change that moves an extension goes
// through here: rebase, bitmaps, amend.
#include <algorithm>
#include <cstring>

#include "formats/qcow2/qcow2_image.h"

namespace imgfs::qcow2 {

Result<Qcow2Image::HeaderCluster> Qcow2Image::ReadHeaderClusterLocked() const {
  std::vector<uint8_t> c0(cluster_size_);
  IMGFS_RETURN_IF_ERROR(file_->PRead(0, c0.data(), c0.size()));
  HeaderCluster hc;
  hc.exts = ReadExtensions(c0, header_.header_length);
  c0.resize(header_.header_length);
  hc.fixed = std::move(c0);
  return hc;
}

Status Qcow2Image::WriteHeaderClusterLocked(const HeaderCluster& hc, const std::string& backing_name,
                                            const char* what) {
  const std::vector<uint8_t> area = BuildHeaderArea(hc.fixed, hc.exts, backing_name);
  if (area.size() > cluster_size_) return InvalidArgument(file_->path() + ": " + what + " does not fit in the header cluster");
  IMGFS_RETURN_IF_ERROR(file_->PWrite(0, area.data(), area.size()));
  IMGFS_RETURN_IF_ERROR(file_->Sync());
  header_.backing_file_offset = backing_name.empty() ? 0 : area.size() - backing_name.size();
  header_.backing_file_size = uint32_t(backing_name.size());
  header_.backing_file = backing_name;
  return Status::OK();
}

// compat: the fields both versions share as they are on disk; the version
// and the v3 fields from `h`; the extensions but those of `drop`.
Status Qcow2Image::RewriteHeaderLocked(Header h, const std::vector<uint32_t>& drop) {
  IMGFS_ASSIGN_OR_RETURN(HeaderCluster hc, ReadHeaderClusterLocked());
  hc.exts.erase(std::remove_if(hc.exts.begin(), hc.exts.end(),
                               [&](const RawExtension& e) { return std::find(drop.begin(), drop.end(), e.type) != drop.end(); }),
                hc.exts.end());
  std::vector<uint8_t> fixed = h.EncodeFixed();
  std::memcpy(fixed.data() + 8, hc.fixed.data() + 8, kV2HeaderSize - 8);
  hc.fixed = std::move(fixed);
  const std::string backing = header_.backing_file;
  IMGFS_RETURN_IF_ERROR(WriteHeaderClusterLocked(hc, backing, "the new header"));
  h.backing_file_offset = header_.backing_file_offset;
  h.backing_file_size = header_.backing_file_size;
  header_ = std::move(h);
  return Status::OK();
}

Status Qcow2Image::SetDataFileNameLocked(const std::string& name) {
  if (name.empty()) return InvalidArgument("data-file can only be set for images that use an external data file");
  if (name.size() > 1023) return InvalidArgument("data file name too long (1023 bytes at most)");
  IMGFS_ASSIGN_OR_RETURN(HeaderCluster hc, ReadHeaderClusterLocked());
  for (RawExtension& e : hc.exts)
    if (e.type == kExtDataFile) e.data.assign(name.begin(), name.end());
  IMGFS_RETURN_IF_ERROR(WriteHeaderClusterLocked(hc, header_.backing_file, "the data file name"));
  header_.data_file = name;
  return Status::OK();
}

}  // namespace imgfs::qcow2
