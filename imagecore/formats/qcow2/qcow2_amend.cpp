// qemu-img amend for qcow2: the options that are header bits.
#include "formats/qcow2/qcow2_image.h"

namespace imgfs::qcow2 {

namespace {
bool ParseOnOff(const std::string& v, bool* out) {
  if (v == "on" || v == "true" || v == "yes") return *out = true, true;
  if (v == "off" || v == "false" || v == "no") return *out = false, true;
  return false;
}
}  // namespace

Status Qcow2Image::Amend(const std::map<std::string, std::string>& options) {
  if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
  std::lock_guard<std::mutex> l(meta_mu_);
  uint64_t compat = header_.compatible_features;
  for (const auto& [k, v] : options) {
    if (k == "lazy_refcounts") {
      bool on;
      if (!ParseOnOff(v, &on)) return InvalidArgument("Parameter 'lazy_refcounts' expects 'on' or 'off'");
      if (on && header_.version < 3)
        return InvalidArgument("Lazy refcounts only supported with compatibility level 1.1 and above "
                               "(use compat=1.1 or greater)");
      compat = on ? compat | kCompatLazyRefcounts : compat & ~kCompatLazyRefcounts;
    } else if (k == "compat") {
      const int want = v == "0.10" || v == "v2" ? 2 : v == "1.1" || v == "v3" ? 3 : 0;
      if (!want) return InvalidArgument("Invalid compatibility level: '" + v + "'");
      if (want != int(header_.version))
        return Unsupported("changing compat between 0.10 and 1.1 is not supported yet");
    } else {
      return Unsupported("amending the qcow2 option '" + k + "' is not supported yet");
    }
  }
  if (compat == header_.compatible_features) return Status::OK();
  // Refcounts are exact here (a dirty image was repaired at open), so the
  // bit may go either way; one header word, synced.
  IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(/*apply_releases=*/false));
  IMGFS_RETURN_IF_ERROR(WriteHeaderWordLocked(80, compat));
  header_.compatible_features = compat;
  return Status::OK();
}

}  // namespace imgfs::qcow2
