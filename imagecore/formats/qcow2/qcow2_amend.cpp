// qemu-img amend for qcow2: compat, lazy_refcounts, refcount_bits,
// data_file (and data_file_raw, which cannot change). Every option is
// checked before anything changes; then the steps run in qemu's order: an
// upgrade first, a downgrade last, each one crash-safe on its own.
#include <optional>

#include "formats/qcow2/qcow2_image.h"
#include "imagecore/mutex.h"

namespace imgfs::qcow2 {

namespace {
struct AmendPlan {
  uint32_t version = 0;  // 0: unchanged
  std::optional<bool> lazy;
  std::optional<uint32_t> refcount_order;
  std::optional<std::string> data_file;
  std::optional<bool> data_file_raw;
};

Status ParseAmend(const std::map<std::string, std::string>& options, AmendPlan* p) {
  for (const auto& [k, v] : options) {
    if (k == "lazy_refcounts") {
      bool on;
      if (!ParseOnOff(v, &on)) return InvalidArgument("Parameter 'lazy_refcounts' expects 'on' or 'off'");
      p->lazy = on;
    } else if (k == "compat") {
      p->version = v == "0.10" || v == "v2" ? 2 : v == "1.1" || v == "v3" ? 3 : 0;
      if (!p->version) return InvalidArgument("Invalid compatibility level: '" + v + "'");
    } else if (k == "refcount_bits") {
      char* end = nullptr;
      const unsigned long bits = std::strtoul(v.c_str(), &end, 10);
      uint32_t order = 0;
      while (order <= 6 && (1ul << order) != bits) ++order;
      if (v.empty() || *end || order > 6)
        return InvalidArgument("Refcount width must be a power of two and may not exceed 64 bits");
      p->refcount_order = order;
    } else if (k == "data_file") {
      p->data_file = v;
    } else if (k == "data_file_raw") {
      bool on;
      if (!ParseOnOff(v, &on)) return InvalidArgument("Parameter 'data_file_raw' expects 'on' or 'off'");
      p->data_file_raw = on;
    } else {
      return Unsupported("Changing the qcow2 option '" + k + "' is not supported");
    }
  }
  return Status::OK();
}
}  // namespace

Status Qcow2Image::Amend(const std::map<std::string, std::string>& options, const ProgressFn& progress) {
  AmendPlan p;
  IMGFS_RETURN_IF_ERROR(ParseAmend(options, &p));
  if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
  MutexLock l(meta_mu_);
  const uint32_t now = header_.version, then = p.version ? p.version : now;
  // As qemu: turning them on needs v3 at the end; kept on, a downgrade
  // just takes them away.
  if (p.lazy.value_or(false) && !(header_.compatible_features & kCompatLazyRefcounts) && then < 3)
    return InvalidArgument("Lazy refcounts only supported with compatibility level 1.1 and above "
                           "(use compat=1.1 or greater)");
  if (p.refcount_order && *p.refcount_order != 4 && then < 3)
    return InvalidArgument("Refcount widths other than 16 bits require compatibility level 1.1 or above "
                           "(use compat=1.1 or greater)");
  if (p.data_file && !data_file_) return InvalidArgument("data-file can only be set for images that use an external data file");
  if (p.data_file_raw && *p.data_file_raw != ((header_.autoclear_features & kAutoclearDataFileRaw) != 0))
    return InvalidArgument("data-file-raw cannot be set on existing images");
  if (then < now) {
    // What the downgrade will refuse, asked now, at the width it will have.
    if (p.refcount_order.value_or(header_.refcount_order) != 4) return InvalidArgument("compat=0.10 requires refcount_bits=16");
    if (data_file_) return InvalidArgument("Cannot downgrade an image with a data file");
    const uint32_t order = header_.refcount_order;
    header_.refcount_order = 4;  // (only for the question)
    Status st = CanDowngradeLocked();
    header_.refcount_order = order;
    IMGFS_RETURN_IF_ERROR(st);
  }
  // Refcounts are exact here (a dirty image was repaired at open).
  IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(/*apply_releases=*/false));
  op_progress_ = &progress;
  struct Reset {
    const ProgressFn*& p;
    ~Reset() { p = nullptr; }
  } reset{op_progress_};
  if (then > now) IMGFS_RETURN_IF_ERROR(UpgradeLocked());
  if (p.refcount_order && *p.refcount_order != header_.refcount_order)
    IMGFS_RETURN_IF_ERROR(ChangeRefcountOrderLocked(*p.refcount_order));
  if (p.lazy && header_.version >= 3) {
    const uint64_t compat = *p.lazy ? header_.compatible_features | kCompatLazyRefcounts
                                    : header_.compatible_features & ~kCompatLazyRefcounts;
    if (compat != header_.compatible_features) {
      IMGFS_RETURN_IF_ERROR(WriteHeaderWordLocked(80, compat));
      header_.compatible_features = compat;
    }
  }
  if (p.data_file && *p.data_file != header_.data_file) IMGFS_RETURN_IF_ERROR(SetDataFileNameLocked(*p.data_file));
  if (then < now) IMGFS_RETURN_IF_ERROR(DowngradeLocked());
  if (progress) progress(header_.size, header_.size);
  return Status::OK();
}

}  // namespace imgfs::qcow2
