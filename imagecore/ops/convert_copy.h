// The copy at the heart of convert: the sources' runs, read by several
// threads at once, written into the target in guest order (or as they come
// with out_of_order). Internal to imagecore/ops.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "imagecore/chain.h"
#include "imagecore/image.h"
#include "imagecore/status.h"

namespace imgfs::ops {

struct CopySource {
  const Chain* chain;
  uint64_t start;      // where it begins in the target
  uint64_t size;       // how much of it is copied
  uint64_t from = 0;   // where in the source the copy begins
};

struct CopyPlan {
  std::vector<CopySource> sources;
  Chain* target;
  bool target_backed = false;  // the target has a backing chain: write only what differs from it
  bool target_zero = false;    // the target reads as zeros before the copy
  uint64_t sparse_size = 4096; // zero runs at least this long are not written as data; 0: write all
  unsigned workers = 4;
  bool in_order = true;
  uint64_t rate = 0;           // bytes per second; 0: unlimited
  bool salvage = false;        // a source read that fails is copied as zeros, with a warning
  bool compress = false;       // -c: whole clusters written compressed (not with target_backed)
  Chain::Progress progress;
};

Status CopyImage(const CopyPlan& plan);

// convert --bitmaps (convert_bitmaps.cpp): the source's bitmaps to copy,
// found and checked before any data moves, then written into the target.
struct BitmapCopy {
  std::unique_ptr<Image> source;  // the source image itself (an -l snapshot shares its bitmaps)
  std::vector<std::string> names;
};
Result<BitmapCopy> PlanBitmapCopy(const std::string& path, const std::string& format, bool skip_broken);
Status CheckBitmapTarget(const BitmapCopy& copy, const std::string& target_format, const Image* target);
Status CopyBitmaps(const BitmapCopy& copy, Image& target);

}  // namespace imgfs::ops
