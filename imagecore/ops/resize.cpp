// Resizing a disk: the one operation behind `imgfs resize`, the
// user.imgfs.resize attribute, the ctl line and truncate on a mount.
#include "imagecore/chain.h"
#include "imagecore/ops.h"
#include "imagecore/size.h"

namespace imgfs::ops {

Result<uint64_t> ParseNewSize(const std::string& spec, uint64_t current) {
  if (spec.empty()) return InvalidArgument("no size given");
  const char sign = spec[0];
  const bool relative = sign == '+' || sign == '-';
  auto n = ParseSize(relative ? spec.substr(1) : spec);
  if (!n.ok()) return InvalidArgument("invalid size '" + spec + "'");
  if (!relative) return n.value();
  if (sign == '+') {
    if (n.value() > UINT64_MAX - current) return InvalidArgument("size '" + spec + "' is too large");
    return current + n.value();
  }
  if (n.value() > current) return InvalidArgument("size '" + spec + "' is below zero");
  return current - n.value();
}

Result<uint64_t> Resize(Chain& chain, const std::string& spec, bool shrink, Prealloc prealloc) {
  const uint64_t current = chain.VirtualSize();
  IMGFS_ASSIGN_OR_RETURN(uint64_t size, ParseNewSize(spec, current));
  if (size < current && !shrink) return InvalidArgument("Use the --shrink option to perform a shrink operation.");
  if (prealloc != Prealloc::kOff && size < current)
    return InvalidArgument("Preallocation can only be used for growing images");
  IMGFS_RETURN_IF_ERROR(chain.Resize(size));
  if (prealloc != Prealloc::kOff && size > current) IMGFS_RETURN_IF_ERROR(chain.layer(0).Preallocate(current, size - current, prealloc));
  return size;
}

Result<uint64_t> ResizeFile(const std::string& path, const std::string& format, const std::string& spec,
                            bool shrink, Prealloc prealloc) {
  IMGFS_ASSIGN_OR_RETURN(auto chain, Chain::Open(path, format, true));
  if (chain->layer(0).read_only()) return ReadOnly(path + ": " + chain->layer(0).read_only_reason());
  // Refused before the size changes where the format cannot reserve.
  if (prealloc != Prealloc::kOff) IMGFS_RETURN_IF_ERROR(chain->layer(0).Preallocate(0, 0, prealloc));
  IMGFS_ASSIGN_OR_RETURN(uint64_t size, Resize(*chain, spec, shrink, prealloc));
  IMGFS_RETURN_IF_ERROR(chain->Flush());
  return size;
}

}  // namespace imgfs::ops
