// Changing the backing file a qcow2 image names (qemu-img rebase): the
// header cluster is rewritten in one write, its fixed fields as they are
// on disk but the backing name's place and length, the extensions kept in
// their order but the backing format's, the name after them.
#include <cstring>

#include "base/endian.h"
#include "formats/qcow2/qcow2_image.h"

namespace imgfs::qcow2 {
namespace {
struct RawExtension {
  uint32_t type;
  std::vector<uint8_t> data;
};

// The header extensions in cluster 0 (bounds were checked at open).
std::vector<RawExtension> ReadExtensions(const std::vector<uint8_t>& c0, uint32_t header_length) {
  std::vector<RawExtension> out;
  for (uint64_t off = header_length; off + 8 <= c0.size();) {
    const uint32_t type = LoadBE32(&c0[off]), len = LoadBE32(&c0[off + 4]);
    off += 8;
    if (type == kExtEnd || len > c0.size() - off) break;
    out.push_back({type, std::vector<uint8_t>(c0.begin() + off, c0.begin() + off + len)});
    off += (uint64_t(len) + 7) & ~uint64_t(7);
  }
  return out;
}

void AppendExtension(std::vector<uint8_t>* out, uint32_t type, const uint8_t* data, size_t len) {
  const size_t at = out->size();
  out->resize(at + 8 + ((len + 7) & ~size_t(7)), 0);
  StoreBE32(&(*out)[at], type);
  StoreBE32(&(*out)[at + 4], uint32_t(len));
  if (len) std::memcpy(&(*out)[at + 8], data, len);
}
}  // namespace

Status Qcow2Image::SetBacking(const std::string& name, const std::string& format, const Image*) {
  if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
  if (name.size() > 1023) return InvalidArgument("backing file name too long (1023 bytes at most)");
  if (!name.empty() && (header_.autoclear_features & kAutoclearDataFileRaw))
    return InvalidArgument(file_->path() + ": an image with data_file_raw=on cannot have a backing file");
  std::lock_guard<std::mutex> l(meta_mu_);
  std::vector<uint8_t> c0(cluster_size_);
  IMGFS_RETURN_IF_ERROR(file_->PRead(0, c0.data(), c0.size()));
  const uint32_t fixed = header_.header_length;
  std::vector<uint8_t> area(c0.begin(), c0.begin() + fixed);
  // The backing format first, as qemu writes it; the rest as they were.
  if (!name.empty() && !format.empty())
    AppendExtension(&area, kExtBackingFormat, reinterpret_cast<const uint8_t*>(format.data()), format.size());
  for (const RawExtension& e : ReadExtensions(c0, fixed))
    if (e.type != kExtBackingFormat) AppendExtension(&area, e.type, e.data.data(), e.data.size());
  AppendExtension(&area, kExtEnd, nullptr, 0);
  const uint64_t name_offset = name.empty() ? 0 : area.size();
  area.insert(area.end(), name.begin(), name.end());
  if (area.size() > cluster_size_)
    return InvalidArgument(file_->path() + ": the backing file name does not fit in the header cluster");
  StoreBE64(&area[8], name_offset);
  StoreBE32(&area[16], uint32_t(name.size()));
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
