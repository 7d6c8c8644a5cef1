#include "formats/vmdk/vmdk_image.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "formats/vmdk/vmdk_sparse.h"

namespace imgfs::vmdk {
namespace {

std::string Hex32(uint32_t v) {
  char s[16];
  std::snprintf(s, sizeof s, "%08x", v);
  return s;
}

// A parent named by a Windows path ("C:\VMs\base.vmdk") is looked for by
// its file name beside the child.
std::string PortableHint(const std::string& hint) {
  const bool drive = hint.size() >= 2 && std::isalpha(static_cast<unsigned char>(hint[0])) && hint[1] == ':';
  if (!drive && hint.find('\\') == std::string::npos) return hint;
  const size_t cut = hint.find_last_of("\\/");
  return cut == std::string::npos ? hint.substr(2) : hint.substr(cut + 1);
}

}  // namespace

void VmdkImage::Append(std::unique_ptr<DiskExtent> e) {
  starts_.push_back(size_);
  size_ += e->bytes();
  if (io::File* f = e->file()) {
    const bool known = std::any_of(files_.begin(), files_.end(), [f](const LayerFile& x) { return x.file == f; });
    if (!known) files_.push_back({f, f == main_ ? FileRole::kImage : FileRole::kExtent});
  }
  extents_.push_back(std::move(e));
}

Status VmdkImage::OpenMonolithic(std::unique_ptr<io::File> file) {
  IMGFS_ASSIGN_OR_RETURN(SparseHeader h, ReadSparseHeader(*file));
  if (h.desc_offset && h.desc_sectors) {
    std::string text(h.desc_sectors * 512, '\0');
    IMGFS_RETURN_IF_ERROR(file->PRead(h.desc_offset * 512, text.data(), text.size()));
    IMGFS_ASSIGN_OR_RETURN(desc_, ParseDescriptor(text));
  } else {
    desc_.cid = desc_.parent_cid = 0;  // as qemu reads a sparse file without a descriptor
    desc_.create_type = "monolithicSparse";
  }
  if (h.compressed()) desc_.create_type = "streamOptimized";  // as qemu names it, whatever the text says
  const std::string name = file->path();
  main_ = file.get();
  IMGFS_ASSIGN_OR_RETURN(auto extent, OpenHostedSparse(std::move(file), h, "", name));
  files_.push_back({main_, FileRole::kImage});
  Append(std::move(extent));
  return Status::OK();
}

Status VmdkImage::AddExtent(const ExtentLine& line, const OpenOptions& opts) {
  if (line.access == ExtentAccess::kNoAccess)
    return Unsupported("a NOACCESS extent (\"" + line.file + "\") cannot be read");
  if (line.access == ExtentAccess::kRdOnly && read_only_reason_.empty())
    read_only_reason_ = "extent \"" + line.file + "\" is RDONLY";
  const uint64_t bytes = line.sectors * 512;
  if (line.type == "ZERO") {
    Append(NewZeroExtent(bytes));
    return Status::OK();
  }
  const bool flat = line.type == "FLAT" || line.type == "VMFS";
  const bool sparse = line.type == "SPARSE" || line.type == "VMFSSPARSE" || line.type == "SESPARSE";
  if (!flat && !sparse) return Unsupported("extent type " + line.type + " (\"" + line.file + "\")");
  if (!flat && line.offset) return Corrupt("a " + line.type + " extent with a start offset");
  auto opened = opts.OpenNamed(main_->path(), line.file, false);
  if (!opened.ok()) return opened.status().Prefixed("cannot open extent \"" + line.file + "\"");
  std::unique_ptr<io::File> f = std::move(opened).value();
  const std::string path = f->path();
  Result<std::unique_ptr<DiskExtent>> e = Corrupt("");
  if (flat) {
    if (line.offset > (uint64_t(1) << 52)) return Corrupt("extent offset out of range");
    e = NewFlatExtent(std::move(f), line.offset * 512, bytes, line.type, path);
  } else if (line.type == "SPARSE") {
    auto h = ReadSparseHeader(*f);
    if (!h.ok()) return h.status().Prefixed(path);
    e = OpenHostedSparse(std::move(f), h.value(), line.type, path);
  } else if (line.type == "VMFSSPARSE") {
    e = OpenCowd(std::move(f), path);
  } else {
    e = OpenSeSparse(std::move(f), path);
  }
  if (!e.ok()) return e.status().message().rfind(path, 0) == 0 ? e.status() : e.status().Prefixed(path);
  Append(std::move(e).value());
  return Status::OK();
}

Status VmdkImage::OpenDescribed(std::unique_ptr<io::File> file, const OpenOptions& opts) {
  const uint64_t size = file->Size();
  if (size > kMaxDescriptorBytes) return Corrupt("descriptor file larger than 1 MiB");
  std::string text(size, '\0');
  IMGFS_RETURN_IF_ERROR(file->PRead(0, text.data(), text.size()));
  IMGFS_ASSIGN_OR_RETURN(desc_, ParseDescriptor(text));
  if (desc_.extents.empty()) return Corrupt("descriptor lists no extents");
  main_ = file.get();
  descriptor_file_ = std::move(file);
  files_.push_back({main_, FileRole::kDescriptor});
  for (const ExtentLine& line : desc_.extents) IMGFS_RETURN_IF_ERROR(AddExtent(line, opts));
  return Status::OK();
}

Result<std::unique_ptr<Image>> VmdkImage::Open(std::unique_ptr<io::File> file, const OpenOptions& opts) {
  uint8_t head[512];
  IMGFS_RETURN_IF_ERROR(file->PRead(0, head, sizeof head));
  std::unique_ptr<VmdkImage> img(new VmdkImage());
  if (IsKdmv(head, sizeof head)) {
    IMGFS_RETURN_IF_ERROR(img->OpenMonolithic(std::move(file)));
  } else if (IsCowd(head, sizeof head) || IsSeSparse(head, sizeof head)) {
    return Unsupported("this is an extent of a vmfsSparse or seSparse disk; open its descriptor file");
  } else if (LooksLikeDescriptor(head, sizeof head)) {
    IMGFS_RETURN_IF_ERROR(img->OpenDescribed(std::move(file), opts));
  } else {
    return Corrupt("not a VMDK image");
  }
  if (img->size_ == 0) return Corrupt("a disk of no sectors");
  if (img->read_only_reason_.empty()) img->read_only_reason_ = "writing VMDK images is not supported yet";
  img->DropWriteClaim();  // it never writes: a VM may
  return std::unique_ptr<Image>(std::move(img));
}

size_t VmdkImage::ExtentAt(uint64_t off) const {
  return size_t(std::upper_bound(starts_.begin(), starts_.end(), off) - starts_.begin()) - 1;
}

Status VmdkImage::BlockStatus(uint64_t off, uint64_t len, Extent* out) {
  if (off >= size_) return InvalidArgument("block status past the end of " + main_->path());
  const size_t i = ExtentAt(off);
  const uint64_t rel = off - starts_[i];
  return extents_[i]->Map(rel, std::min(len, extents_[i]->bytes() - rel), out);
}

Status VmdkImage::ReadOpaque(uint64_t off, void* buf, size_t len) {
  auto* p = static_cast<uint8_t*>(buf);
  while (len > 0) {
    if (off >= size_) {
      std::memset(p, 0, len);
      return Status::OK();
    }
    const size_t i = ExtentAt(off);
    const uint64_t rel = off - starts_[i];
    const size_t n = std::min<uint64_t>(len, extents_[i]->bytes() - rel);
    IMGFS_RETURN_IF_ERROR(extents_[i]->ReadOpaque(rel, p, n));
    p += n;
    off += n;
    len -= n;
  }
  return Status::OK();
}

Status VmdkImage::Write(uint64_t, const void*, size_t, const LayerReader*) {
  return ReadOnly(main_->path() + ": " + read_only_reason_);
}

Status VmdkImage::WriteZeroes(uint64_t, uint64_t, bool, const LayerReader*) {
  return ReadOnly(main_->path() + ": " + read_only_reason_);
}

std::optional<BackingRef> VmdkImage::Backing() const {
  if (!desc_.parent_hint || desc_.parent_hint->empty()) return std::nullopt;
  return BackingRef{PortableHint(*desc_.parent_hint), "vmdk"};
}

Status VmdkImage::CheckParent(const Image& parent) const {
  const auto* p = dynamic_cast<const VmdkImage*>(&parent);
  if (!p || desc_.parent_cid == p->desc_.cid) return Status::OK();
  return Corrupt(main_->path() + ": parentCID " + Hex32(desc_.parent_cid) + " does not match CID " +
                 Hex32(p->desc_.cid) + " of its parent " + p->main_->path() +
                 " (the parent changed after this disk was made on it)");
}

ImageInfo VmdkImage::Info() const {
  ImageInfo info;
  info.format = "vmdk";
  info.virtual_size = size_;
  uint64_t grain = extents_.empty() ? 0 : extents_[0]->grain_bytes();
  for (const auto& e : extents_)
    if (e->grain_bytes() != grain) grain = 0;
  info.cluster_size = grain;
  info.specific.push_back(InfoUint("cid", "cid", desc_.cid));
  info.specific.push_back(InfoUint("parent-cid", "parent cid", desc_.parent_cid));
  info.specific.push_back(InfoString("create-type", "create type", desc_.create_type));
  ImageInfo::Field list = ImageInfo::Field::List("extents", "extents");
  for (const auto& e : extents_) list.list.push_back(e->Info());
  info.specific.push_back(std::move(list));
  return info;
}

}  // namespace imgfs::vmdk
