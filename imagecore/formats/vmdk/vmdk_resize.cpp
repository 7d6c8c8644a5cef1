// Resizing a VMDK disk (qemu-img 7.2 cannot). Growing: the last extent
// grows, and a twoGbMaxExtent disk gains extent files of 2 GiB at most;
// the descriptor is rewritten last, so until then the disk reads at its
// old size and a crash leaves at most an extent file nothing names.
// Shrinking: the descriptor first, then the last kept extent, then the
// files of the extents cut off.
#include <algorithm>

#include "formats/vmdk/vmdk_create.h"
#include "formats/vmdk/vmdk_image.h"
#include "formats/vmdk/vmdk_sparse.h"
#include "imagecore/mutex.h"

namespace imgfs::vmdk {
Status VmdkImage::GrowLast(uint64_t new_size) {
  DiskExtent& last = *extents_.back();
  const bool split = desc_.create_type.rfind("twoGb", 0) == 0;
  uint64_t want = new_size - starts_.back();
  if (split) want = std::min(want, std::max(kSplitBytes, last.bytes()));
  if (want <= last.bytes()) return Status::OK();
  IMGFS_RETURN_IF_ERROR(last.Grow(want));
  if (!desc_.extents.empty()) desc_.extents.back().sectors = want / 512;
  size_ = starts_.back() + want;
  return Status::OK();
}

Status VmdkImage::AddExtentFile(uint64_t sectors) {
  const bool flat = desc_.extents.back().type == "FLAT";
  char tag[16];
  std::snprintf(tag, sizeof tag, flat ? "f%03zu" : "s%03zu", desc_.extents.size() + 1);
  const std::string name = ExtentName(main_->path(), tag);
  const std::string path = ResolveNamedPath(main_->path(), name);
  // Made with the owner's rights and the descriptor's mode, claimed on the
  // descriptor it was made with: never closed in between, a mount's
  // watcher does not see it as a new image before the descriptor names it.
  auto st_main = main_->Stat();
  const mode_t mode = st_main.ok() ? (st_main.value().mode & 0777) : 0644;
  IMGFS_ASSIGN_OR_RETURN(auto made, opener_->Create(path, access_, mode));
  Status st = made->ClaimForWriting();
  if (st.ok()) st = flat ? made->Truncate(sectors * 512) : WriteSparse(*made, sectors, false, false, "");
  if (st.ok()) st = made->Sync();
  std::unique_ptr<DiskExtent> e;
  if (st.ok() && flat) e = NewFlatExtent(std::move(made), 0, sectors * 512, "FLAT", path);
  if (st.ok() && !flat) {
    auto h = ReadSparseHeader(*made);
    st = h.status();
    if (st.ok()) {
      auto opened = OpenHostedSparse(std::move(made), h.value(), "SPARSE", path);
      st = opened.status();
      if (st.ok()) e = std::move(opened).value();
    }
  }
  if (!st.ok()) {
    opener_->Remove(path);
    return st.Prefixed("cannot add extent " + name);
  }
  ExtentLine line;
  line.sectors = sectors;
  line.type = flat ? "FLAT" : "SPARSE";
  line.file = name;
  line.has_file = true;
  desc_.extents.push_back(line);
  Append(std::move(e));
  return Status::OK();
}

Status VmdkImage::ShrinkTo(uint64_t new_size) {
  IMGFS_RETURN_IF_ERROR(ChangeCidOnce());
  const size_t keep = ExtentAt(new_size - 1);
  const uint64_t partial = new_size - starts_[keep];
  const bool described = descriptor_file_ && desc_.extents.size() == extents_.size();
  // A text descriptor first: from then on the extents past the new end are
  // not part of the disk (a crash after it leaves the last kept extent
  // larger than its line, never extents out of place).
  MutexLock lock(cid_mu_);
  if (described) {
    desc_.extents.resize(keep + 1);
    desc_.extents[keep].sectors = partial / 512;
    const std::string text = WithExtents(desc_text_, desc_.extents);
    IMGFS_RETURN_IF_ERROR(WriteDescriptor(text));
    desc_text_ = text;
  }
  if (partial < extents_[keep]->bytes()) IMGFS_RETURN_IF_ERROR(extents_[keep]->Shrink(partial));
  if (!described && desc_room_ && !desc_.extents.empty()) {
    // Embedded (monolithicSparse): the header governs; the line follows it.
    desc_.extents.resize(1);
    desc_.extents[0].sectors = partial / 512;
    const std::string text = WithExtents(desc_text_, desc_.extents);
    IMGFS_RETURN_IF_ERROR(WriteDescriptor(text));
    desc_text_ = text;
  }
  // The extent files no kept extent uses are removed last.
  std::vector<std::string> gone;
  for (size_t i = keep + 1; i < extents_.size(); ++i) {
    io::File* f = extents_[i]->file();
    if (!f || f == main_) continue;
    bool used = false;
    for (size_t j = 0; j <= keep; ++j) used |= extents_[j]->file() == f;
    if (!used && std::find(gone.begin(), gone.end(), f->path()) == gone.end()) gone.push_back(f->path());
  }
  // (The list of files first: closing the extents closes their files.)
  files_.erase(std::remove_if(files_.begin(), files_.end(),
                              [&](const LayerFile& lf) {
                                return std::find(gone.begin(), gone.end(), lf.file->path()) != gone.end();
                              }),
               files_.end());
  extents_.resize(keep + 1);
  starts_.resize(keep + 1);
  size_ = new_size;
  for (const std::string& p : gone) opener_->Remove(p);
  return Flush();
}

Status VmdkImage::Resize(uint64_t new_size, const LayerReader* below) {
  if (read_only()) return ReadOnly(main_->path() + ": " + read_only_reason_);
  if (new_size % 512) return InvalidArgument("a VMDK disk's size is a multiple of 512 bytes");
  if (new_size == 0) return InvalidArgument("a VMDK disk cannot shrink to nothing");
  if (new_size < size_) return ShrinkTo(new_size);
  if (new_size == size_) return Status::OK();
  if (new_size / 512 > kMaxCapacitySectors) return InvalidArgument("the size is too large for a VMDK image");
  const bool split = desc_.create_type.rfind("twoGb", 0) == 0;
  if (split && (!descriptor_file_ || desc_.extents.size() != extents_.size()))
    return Unsupported("a twoGbMaxExtent disk without its own descriptor file cannot grow");
  IMGFS_RETURN_IF_ERROR(ChangeCidOnce());
  const uint64_t old_size = size_;
  IMGFS_RETURN_IF_ERROR(GrowLast(new_size));
  while (split && size_ < new_size) IMGFS_RETURN_IF_ERROR(AddExtentFile(std::min(new_size - size_, kSplitBytes) / 512));
  if (size_ != new_size) return Unsupported("this VMDK layout cannot grow to that size");
  {
    MutexLock lock(cid_mu_);
    if (descriptor_file_ || desc_room_) {
      const std::string text = WithExtents(desc_text_, desc_.extents);
      IMGFS_RETURN_IF_ERROR(WriteDescriptor(text));
      desc_text_ = text;
    }
  }
  // What the layers below hold past the old end stays hidden: it reads as
  // zeros, as a grown qcow2 reads.
  if (below && below->VirtualSize() > old_size)
    IMGFS_RETURN_IF_ERROR(WriteZeroes(old_size, std::min(below->VirtualSize(), new_size) - old_size, false, below));
  return Flush();
}

}  // namespace imgfs::vmdk
