// A differencing VHDX and its parent: emptied after a commit, relinked to
// a parent that changed, rebased onto another. Every change goes through
// the log.
#include <algorithm>
#include <vector>

#include "base/endian.h"
#include "formats/vhdx/vhdx_create.h"
#include "formats/vhdx/vhdx_image.h"

namespace imgfs::vhdx {
namespace {

std::string Braced(const Guid& g) { return "{" + g.ToText() + "}"; }

ParentLocator WithKey(ParentLocator loc, const std::string& key, const std::string& value) {
  for (auto& [k, v] : loc.entries)
    if (k == key) {
      v = value;
      return loc;
    }
  loc.entries.emplace_back(key, value);
  return loc;
}

ParentLocator WithoutKey(ParentLocator loc, const std::string& key) {
  loc.entries.erase(std::remove_if(loc.entries.begin(), loc.entries.end(),
                                   [&](const auto& kv) { return kv.first == key; }),
                    loc.entries.end());
  return loc;
}

}  // namespace

void VhdxImage::KeepIdentity() {
  MutexLock l(meta_mu_);
  keep_identity_ = true;
}

Status VhdxImage::MakeEmpty() {
  IMGFS_RETURN_IF_ERROR(EnsureStarted());
  MutexLock m(meta_mu_);
  // In batches: the entries durable first, then the blocks' space given
  // back (a crash between reads the parent, never a punched block).
  std::vector<uint64_t> freed;
  auto give_back = [&]() -> Status {
    meta_mu_.AssertHeld();
    IMGFS_RETURN_IF_ERROR(FlushLocked());
    for (uint64_t at : freed) IMGFS_RETURN_IF_ERROR(file_->Deallocate(at, params_.block_size));
    freed.clear();
    return Status::OK();
  };
  for (uint64_t i = 0; i < geometry_->entries; ++i) {
    {
      MutexLock l(bat_mu_);
      IMGFS_ASSIGN_OR_RETURN(const uint64_t e, BatEntryLocked(i));
      if (!e) continue;
      const bool payload = (i + 1) % (geometry_->chunk_ratio + 1) != 0;
      if (payload && (EntryState(e) == kFullyPresent || EntryState(e) == kPartiallyPresent))
        freed.push_back(EntryOffset(e));
      IMGFS_RETURN_IF_ERROR(SetEntryLocked(i, 0));
    }
    if (dirty_.size() >= 32) IMGFS_RETURN_IF_ERROR(give_back());
  }
  return give_back();
}

Status VhdxImage::WriteLocatorLocked(const ParentLocator& loc) {
  const std::vector<uint8_t> bytes = StoreParentLocator(loc);
  uint64_t at = params_.locator_at;
  if (bytes.size() > params_.locator_length) {  // after every item, where the region has room
    at = (params_.items_end + 7) / 8 * 8;
    if (at + bytes.size() > meta_length_) return Unsupported(file_->path() + ": no room for a longer parent locator");
  }
  {
    MutexLock l(bat_mu_);
    IMGFS_RETURN_IF_ERROR(SetBytesLocked(meta_offset_ + at, bytes.data(), bytes.size()));
    uint8_t e[8];
    StoreLE32(e, uint32_t(at));
    StoreLE32(e + 4, uint32_t(bytes.size()));
    // The table entry names the new bytes in the same log entry: a crash
    // leaves the old locator or the new one.
    IMGFS_RETURN_IF_ERROR(SetBytesLocked(meta_offset_ + params_.locator_entry_at + 16, e, sizeof e));
  }
  IMGFS_RETURN_IF_ERROR(FlushLocked());
  params_.locator_at = at;
  params_.locator_length = bytes.size();
  params_.items_end = std::max(params_.items_end, at + bytes.size());
  params_.parent = loc;
  return Status::OK();
}

Status VhdxImage::RelinkParent(const Image& parent) {
  if (!params_.parent || &parent.driver() != &kDriver || read_only()) return Status::OK();
  const std::string link = Braced(static_cast<const VhdxImage&>(parent).data_write_guid());
  if (CheckParent(parent).ok()) return Status::OK();
  IMGFS_RETURN_IF_ERROR(EnsureStarted(/*content=*/false));
  MutexLock m(meta_mu_);
  return WriteLocatorLocked(WithoutKey(WithKey(*params_.parent, "parent_linkage", link), "parent_linkage2"));
}

Status VhdxImage::SetBacking(const std::string& name, const std::string& format, const Image* parent) {
  if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
  if (!params_.parent) return Unsupported(file_->path() + ": only a differencing VHDX has a parent to change");
  if (name.empty()) return Unsupported(file_->path() + ": a differencing VHDX keeps a parent");
  if (!format.empty() && format != "vhdx") return InvalidArgument("a VHDX image's parent is a VHDX image, not " + format);
  if (!parent || &parent->driver() != &kDriver) return InvalidArgument(name + " is not a VHDX image");
  const auto* p = static_cast<const VhdxImage*>(parent);
  if (p->params().logical_sector != params_.logical_sector)
    return InvalidArgument(name + " has another logical sector size");
  IMGFS_RETURN_IF_ERROR(EnsureStarted(/*content=*/false));
  MutexLock m(meta_mu_);
  // The old paths name the old parent: only the new relative path stays.
  ParentLocator loc;
  loc.type = kVhdxParentLocatorType;
  loc.entries.emplace_back("parent_linkage", Braced(p->data_write_guid()));
  loc.entries.emplace_back("relative_path", RelativeParentPath(name));
  return WriteLocatorLocked(loc);
}

}  // namespace imgfs::vhdx
