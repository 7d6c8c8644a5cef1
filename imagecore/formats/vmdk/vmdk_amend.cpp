// qemu-img amend for vmdk (qemu-img cannot): the descriptor's adapter
// type, hardware version and tools version, rewritten in one write.
#include <algorithm>

#include "formats/vmdk/vmdk_image.h"
#include "imagecore/mutex.h"

namespace imgfs::vmdk {

namespace {
bool Quotable(const std::string& v) { return v.find_first_of("\"\r\n") == std::string::npos; }
}  // namespace

Status VmdkImage::Amend(const std::map<std::string, std::string>& options, const ProgressFn& progress) {
  if (read_only()) return ReadOnly(main_->path() + ": " + read_only_reason_);
  if (!descriptor_file_ && !desc_room_) return Unsupported(main_->path() + ": a sparse file without a descriptor has no options");
  MutexLock lock(cid_mu_);
  std::string text = desc_text_;
  for (const auto& [k, v] : options) {
    if (!Quotable(v)) return InvalidArgument("vmdk option values may not hold quotes or line ends");
    if (k == "adapter_type") {
      if (v != "ide" && v != "buslogic" && v != "lsilogic" && v != "legacyESX")
        return InvalidArgument("Unknown adapter type: '" + v + "'");
      // The geometry follows the adapter, as create writes it.
      const uint64_t heads = v == "ide" ? 16 : 255;
      text = WithKey(text, "ddb.adapterType", "\"" + v + "\"");
      text = WithKey(text, "ddb.geometry.heads", "\"" + std::to_string(heads) + "\"");
      text = WithKey(text, "ddb.geometry.cylinders", "\"" + std::to_string(size_ / (63 * heads * 512)) + "\"");
    } else if (k == "hwversion") {
      text = WithKey(text, "ddb.virtualHWVersion", "\"" + v + "\"");
    } else if (k == "toolsversion") {
      text = WithKey(text, "ddb.toolsVersion", "\"" + v + "\"");
    } else {
      return Unsupported("the vmdk option '" + k + "' cannot be amended (adapter_type, hwversion, toolsversion can)");
    }
  }
  if (text != desc_text_) {
    IMGFS_RETURN_IF_ERROR(WriteDescriptor(text));
    desc_text_ = text;
  }
  if (progress) progress(size_, size_);  // one write: done at once
  return Status::OK();
}

}  // namespace imgfs::vmdk
