// convert --bitmaps: every persistent bitmap of the source image is made
// again in the target, with its granularity, its bits and whether it is
// enabled, as qemu-img convert --bitmaps makes them.
#include "imagecore/format.h"
#include "imagecore/log.h"
#include "ops/convert_copy.h"

namespace imgfs::ops {

Result<BitmapCopy> PlanBitmapCopy(const std::string& path, const std::string& format, bool skip_broken) {
  auto source = OpenImage(path, format, OpenOptions(false));
  if (!source.ok()) return source.status().Prefixed("Could not open '" + path + "'");
  BitmapCopy copy;
  copy.source = std::move(source).value();
  if (!copy.source->StoresBitmaps()) return Unsupported("Source lacks bitmap support");
  for (const ImageInfo::Bitmap& b : copy.source->Info().bitmaps) {
    const bool in_use = std::find(b.flags.begin(), b.flags.end(), "in-use") != b.flags.end();
    if (in_use && skip_broken) {
      Log(LogLevel::kWarning, "Skipping inconsistent bitmap '" + b.name + "'");
      continue;
    }
    if (in_use)
      return InvalidArgument("Cannot copy inconsistent bitmap '" + b.name +
                             "' (try --skip-broken-bitmaps, or remove it with 'imgfs bitmap --remove')");
    copy.names.push_back(b.name);
  }
  return copy;
}

// `target` is null before a new target is made: only its format is known.
Status CheckBitmapTarget(const BitmapCopy& copy, const std::string& target_format, const Image* target) {
  if (!CapabilitiesOf(target_format).bitmaps || (target && !target->StoresBitmaps()))
    return Unsupported("Format driver '" + target_format + "' does not support bitmaps");
  if (!target) return Status::OK();
  for (const ImageInfo::Bitmap& b : target->Info().bitmaps)
    for (const std::string& name : copy.names)
      if (b.name == name) return InvalidArgument("Failed to create bitmap " + name + ": Bitmap already exists: " + name);
  return Status::OK();
}

Status CopyBitmaps(const BitmapCopy& copy, Image& target) {
  for (const std::string& name : copy.names) {
    IMGFS_ASSIGN_OR_RETURN(DirtyBitmap bits, copy.source->ReadBitmap(name));
    std::vector<BitmapChange> steps(2);
    steps[0].kind = BitmapChange::kAdd;
    steps[0].granularity = uint64_t(1) << bits.granularity_bits;
    steps[1].kind = BitmapChange::kMerge;
    steps[1].from = &bits;
    if (!bits.enabled) steps.emplace_back().kind = BitmapChange::kDisable;
    Status st = target.ChangeBitmap(name, steps);
    if (!st.ok()) return st.Prefixed("Failed to copy bitmap " + name);
  }
  return Status::OK();
}

}  // namespace imgfs::ops
