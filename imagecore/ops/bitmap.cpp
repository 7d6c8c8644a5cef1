// qemu-img bitmap: the image alone is opened (its backing file plays no
// part) and its driver runs the steps; merges from another image read that
// image's bitmaps first, read-only.
#include <deque>

#include "imagecore/format.h"
#include "imagecore/ops.h"

namespace imgfs::ops {

Status ChangeBitmap(const BitmapRequest& req) {
  auto image = OpenImage(req.path, req.format, OpenOptions(true));
  if (!image.ok()) return image.status().Prefixed("Could not open '" + req.path + "'");
  Image& img = *image.value();
  if (img.read_only()) return ReadOnly(req.path + ": " + img.read_only_reason());
  if (!img.caps().bitmaps && !req.steps.empty())
    return Unsupported(std::string("Operation ") + BitmapChange::Verb(req.steps[0].kind) + " on bitmap " +
                       req.bitmap + " failed: Can't store persistent bitmaps to " + req.path +
                       ": Operation not supported");
  std::vector<BitmapChange> steps = req.steps;
  std::deque<DirtyBitmap> sources;  // stable addresses for the steps' pointers
  if (!req.merge_file.empty()) {
    auto src = OpenImage(req.merge_file, req.merge_format, OpenOptions(false));
    if (!src.ok()) return src.status().Prefixed("Could not open '" + req.merge_file + "'");
    for (BitmapChange& s : steps) {
      if (s.kind != BitmapChange::kMerge) continue;
      auto bits = src.value()->ReadBitmap(s.source);
      if (!bits.ok())
        return bits.status().Prefixed("Operation merge on bitmap " + req.bitmap + " failed");
      sources.push_back(std::move(bits).value());
      s.from = &sources.back();
    }
  }
  IMGFS_RETURN_IF_ERROR(img.ChangeBitmap(req.bitmap, steps));
  return img.Flush();
}

}  // namespace imgfs::ops
