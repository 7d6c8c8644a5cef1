#include "formats/vmdk/vmdk_image.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "formats/vmdk/vmdk_sparse.h"
#include "imagecore/log.h"
#include "imagecore/mutex.h"

namespace imgfs::vmdk {
namespace {

// A parent named by a Windows path ("C:\VMs\base.vmdk") is looked for by
// its file name beside the child.
std::string PortableHint(const std::string& hint) {
  const bool drive = hint.size() >= 2 && std::isalpha(static_cast<unsigned char>(hint[0])) && hint[1] == ':';
  if (!drive && hint.find('\\') == std::string::npos) return hint;
  const size_t cut = hint.find_last_of("\\/");
  return cut == std::string::npos ? hint.substr(2) : hint.substr(cut + 1);
}

}  // namespace

size_t VmdkImage::CacheBytesPerExtent() const {
  // 16 MiB per image, at least 64 KiB per extent (two tables of the
  // largest kind): 256 MiB for the most extents a descriptor may list.
  return std::max<size_t>(64 << 10, (16 << 20) / std::max<size_t>(1, desc_.extents.size()));
}

void VmdkImage::Append(std::unique_ptr<DiskExtent> e) {
  e->ReportDamageTo(damage_);
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
  std::string text;
  if (h.desc_offset && h.desc_sectors) {
    text.assign(h.desc_sectors * 512, '\0');
    IMGFS_RETURN_IF_ERROR(file->PRead(h.desc_offset * 512, text.data(), text.size()));
  }
  // An extent of a twoGbMaxExtentSparse disk has room for a descriptor
  // but none in it: opened alone, it is a disk of its own, as qemu opens it.
  if (!text.empty() && text[0] != '\0') {
    IMGFS_ASSIGN_OR_RETURN(desc_, ParseDescriptor(text));
    MutexLock l(cid_mu_);  // at open: for the analysis
    desc_text_ = text.substr(0, text.find('\0'));
    desc_at_ = h.desc_offset * 512;
    desc_room_ = h.desc_sectors * 512;
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
  if (size_ + bytes > kMaxCapacitySectors * 512) return Corrupt("the extents add up to more than 512 TiB");
  if (line.type == "ZERO") {
    Append(NewZeroExtent(bytes));
    return Status::OK();
  }
  const bool flat = line.type == "FLAT" || line.type == "VMFS";
  const bool sparse = line.type == "SPARSE" || line.type == "VMFSSPARSE" || line.type == "SESPARSE";
  if (!flat && !sparse) return Unsupported("extent type " + line.type + " (\"" + line.file + "\")");
  if (!flat && line.offset) return Corrupt("a " + line.type + " extent with a start offset");
  const bool writable = opts.writable && main_->writable() && line.access == ExtentAccess::kRW;
  auto opened = opts.OpenNamed(main_->path(), line.file, writable);
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
    e = OpenHostedSparse(std::move(f), h.value(), line.type, path, CacheBytesPerExtent());
  } else if (line.type == "VMFSSPARSE") {
    e = OpenCowd(std::move(f), path, CacheBytesPerExtent());
  } else {
    e = OpenSeSparse(std::move(f), path, CacheBytesPerExtent());
  }
  if (!e.ok()) return e.status().message().rfind(path, 0) == 0 ? e.status() : e.status().Prefixed(path);
  // Bounds over all extents, not one at a time: a descriptor may list the
  // same huge sparse file thousands of times.
  dir_entries_ += e.value()->directory_entries();
  if (dir_entries_ > (uint64_t(1) << 26)) return Corrupt("the extents' grain directories are too large in total");
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
  {
    MutexLock l(cid_mu_);  // at open: for the analysis
    desc_text_ = text.substr(0, text.find('\0'));
  }
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
  img->opener_ = &opts.files();
  img->access_ = opts.access;
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
  std::string& why = img->read_only_reason_;
  if (why.empty() && !img->main_->writable()) why = "opened read-only";
  for (const auto& e : img->extents_)
    if (why.empty()) why = e->WhyReadOnly();
  for (const LayerFile& f : img->files_)
    if (why.empty() && !f.file->writable()) why = "opened read-only";
  if (img->read_only() && img->main_->writable()) img->DropWriteClaim();  // it never writes: a VM may
  img->opened_ = true;
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

Status VmdkImage::Write(uint64_t off, const void* buf, size_t len, const LayerReader* below) {
  if (read_only()) return ReadOnly(main_->path() + ": " + read_only_reason_);
  if (off + len > size_) return NoSpace(main_->path() + ": write past the end of the disk");
  IMGFS_RETURN_IF_ERROR(ChangeCidOnce());
  const auto* p = static_cast<const uint8_t*>(buf);
  while (len > 0) {
    const size_t i = ExtentAt(off);
    const uint64_t rel = off - starts_[i];
    const size_t n = std::min<uint64_t>(len, extents_[i]->bytes() - rel);
    IMGFS_RETURN_IF_ERROR(extents_[i]->Write(rel, p, n, below, starts_[i]));
    p += n;
    off += n;
    len -= n;
  }
  return Status::OK();
}

Result<bool> VmdkImage::BeginStreamWrite() {
  // A stream is one extent in its own file; the image is read-only for
  // that reason alone (not RDONLY, not opened read-only).
  if (!main_->writable() || extents_.size() != 1 || read_only_reason_ != extents_[0]->WhyReadOnly()) return false;
  IMGFS_ASSIGN_OR_RETURN(bool stream, extents_[0]->BeginStream());
  if (stream) read_only_reason_.clear();
  return stream;
}

Status VmdkImage::WriteZeroes(uint64_t off, uint64_t len, bool unmap, const LayerReader* below) {
  if (read_only()) return ReadOnly(main_->path() + ": " + read_only_reason_);
  if (off + len > size_) return NoSpace(main_->path() + ": write past the end of the disk");
  IMGFS_RETURN_IF_ERROR(ChangeCidOnce());
  while (len > 0) {
    const size_t i = ExtentAt(off);
    const uint64_t rel = off - starts_[i];
    const uint64_t n = std::min<uint64_t>(len, extents_[i]->bytes() - rel);
    IMGFS_RETURN_IF_ERROR(extents_[i]->WriteZeroes(rel, n, unmap, below, starts_[i]));
    off += n;
    len -= n;
  }
  return Status::OK();
}

Status VmdkImage::Flush() {
  if (read_only()) return Status::OK();
  for (const auto& e : extents_) IMGFS_RETURN_IF_ERROR(e->Flush());
  return main_->Sync();
}

// The descriptor text with its `key` line set to `value` (added after the
// version line if it has none), keeping the line ends it uses.
std::string WithKey(const std::string& text, const std::string& key, const std::string& value) {
  const std::string eol = text.find("\r\n") != std::string::npos ? "\r\n" : "\n";
  const std::string line = key + "=" + value;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    size_t k = pos;
    while (k < end && (text[k] == ' ' || text[k] == '\t')) ++k;
    const size_t after = k + key.size();
    if (text.compare(k, key.size(), key) == 0 && after < end && (text[after] == '=' || text[after] == ' ')) {
      const size_t stop = end > pos && text[end - 1] == '\r' ? end - 1 : end;
      return text.substr(0, pos) + line + text.substr(stop);
    }
    pos = end + 1;
  }
  const size_t v = text.find("version=");
  const size_t after = v == std::string::npos ? 0 : text.find('\n', v);
  if (after == std::string::npos) return text + eol + line + eol;
  const size_t at = v == std::string::npos ? 0 : after + 1;
  return text.substr(0, at) + line + eol + text.substr(at);
}

Status VmdkImage::WriteDescriptor(const std::string& text) {
  if (desc_room_) {
    // Embedded: its sectors, padded with NULs as the file had them.
    if (text.size() > desc_room_) return NoSpace(main_->path() + ": no room for the descriptor");
    std::string padded = text;
    padded.resize(std::max(desc_text_.size(), text.size()), '\0');
    IMGFS_RETURN_IF_ERROR(main_->PWrite(desc_at_, padded.data(), padded.size()));
  } else {
    // Padded with empty lines over the old text first: a crash before the
    // truncation leaves no tail of the old text for a reader to parse.
    std::string padded = text;
    if (padded.size() < main_->Size()) padded.resize(main_->Size(), '\n');
    IMGFS_RETURN_IF_ERROR(main_->PWrite(0, padded.data(), padded.size()));
    if (text.size() < main_->Size()) {
      IMGFS_RETURN_IF_ERROR(main_->Sync());
      IMGFS_RETURN_IF_ERROR(main_->Truncate(text.size()));
    }
  }
  return main_->Sync();
}

Status VmdkImage::ChangeCidOnce() {
  if (cid_changed_.load(std::memory_order_acquire)) return Status::OK();
  MutexLock lock(cid_mu_);
  if (cid_changed_.load(std::memory_order_relaxed)) return Status::OK();
  if (!descriptor_file_ && !desc_room_) {  // a sparse file without a descriptor has no CID to change
    cid_changed_.store(true, std::memory_order_release);
    return Status::OK();
  }
  uint32_t cid;
  do {
    cid = NewCid();
  } while (cid == desc_.cid || cid == kNoParent);
  const std::string text = WithKey(desc_text_, "CID", CidText(cid));
  IMGFS_RETURN_IF_ERROR(WriteDescriptor(text));
  desc_text_ = text;
  desc_.cid = cid;
  cid_changed_.store(true, std::memory_order_release);
  return Status::OK();
}

std::optional<BackingRef> VmdkImage::Backing() const {
  if (!desc_.parent_hint || desc_.parent_hint->empty()) return std::nullopt;
  return BackingRef{.name = PortableHint(*desc_.parent_hint), .format = "vmdk"};
}

Status VmdkImage::CheckParent(const Image& parent) const {
  const auto* p = dynamic_cast<const VmdkImage*>(&parent);
  if (!p) return Status::OK();
  const uint32_t cid = p->cid();
  if (desc_.parent_cid == cid) return Status::OK();
  return Corrupt(main_->path() + ": parentCID " + CidText(desc_.parent_cid) + " does not match CID " + CidText(cid) +
                 " of its parent " + p->main_->path() + " (the parent changed after this disk was made on it)");
}

Status VmdkImage::RelinkParent(const Image& parent) {
  const auto* p = dynamic_cast<const VmdkImage*>(&parent);
  if (!p || read_only()) return Status::OK();
  const uint32_t cid = p->cid();
  MutexLock lock(cid_mu_);
  if (desc_.parent_cid == cid || (!descriptor_file_ && !desc_room_)) return Status::OK();
  const std::string text = WithKey(desc_text_, "parentCID", CidText(cid));
  IMGFS_RETURN_IF_ERROR(WriteDescriptor(text));
  desc_text_ = text;
  desc_.parent_cid = cid;
  return Status::OK();
}

// The text without its `key` line.
static std::string WithoutKey(const std::string& text, const std::string& key) {
  std::string out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    end = end == std::string::npos ? text.size() : end + 1;
    size_t k = pos;
    while (k < end && (text[k] == ' ' || text[k] == '\t')) ++k;
    const size_t after = k + key.size();
    const bool match = text.compare(k, key.size(), key) == 0 && after < end && (text[after] == '=' || text[after] == ' ');
    if (!match) out.append(text, pos, end - pos);
    pos = end;
  }
  return out;
}

Status VmdkImage::SetBacking(const std::string& name, const std::string& format, const Image* parent) {
  if (read_only()) return ReadOnly(main_->path() + ": " + read_only_reason_);
  if (!descriptor_file_ && !desc_room_) return Unsupported(main_->path() + ": a sparse file without a descriptor has no parent to change");
  if (name.find_first_of("\"\r\n") != std::string::npos) return InvalidArgument("a parent name may not hold quotes or line ends");
  uint32_t parent_cid = kNoParent;
  if (!name.empty()) {
    if (format != "vmdk") return InvalidArgument("a vmdk image's parent is a vmdk image, not " + format);
    const auto* p = dynamic_cast<const VmdkImage*>(parent);
    if (!p) return InvalidArgument(name + " is not a VMDK image");
    parent_cid = p->cid();
  }
  MutexLock lock(cid_mu_);
  // Both keys in one write of the descriptor: a crash leaves the old
  // parent or the new one, never a mix.
  std::string text = WithKey(desc_text_, "parentCID", CidText(parent_cid));
  text = name.empty() ? WithoutKey(text, "parentFileNameHint") : WithKey(text, "parentFileNameHint", "\"" + name + "\"");
  IMGFS_RETURN_IF_ERROR(WriteDescriptor(text));
  desc_text_ = text;
  desc_.parent_cid = parent_cid;
  desc_.parent_hint = name.empty() ? std::nullopt : std::optional<std::string>(name);
  return Status::OK();
}

Status VmdkImage::MakeEmpty() {
  if (read_only()) return ReadOnly(main_->path() + ": " + read_only_reason_);
  IMGFS_RETURN_IF_ERROR(ChangeCidOnce());
  for (const auto& e : extents_) IMGFS_RETURN_IF_ERROR(e->MakeEmpty());
  return Flush();
}

Result<CheckResult> VmdkImage::Check(RepairMode mode, const ProgressFn& progress) {
  if (mode != RepairMode::kNone) return Unsupported("vmdk images cannot be repaired");
  CheckResult r;
  r.cluster_counts = false;  // qemu-img reports none for vmdk
  for (size_t i = 0; i < extents_.size(); ++i) {
    extents_[i]->Check(starts_[i] / 512, &r);
    if (progress) progress(i + 1 < starts_.size() ? starts_[i + 1] : size_, size_);  // bytes checked
  }
  return r;
}

uint32_t VmdkImage::cid() const {
  MutexLock lock(cid_mu_);
  return desc_.cid;
}

VmdkImage::~VmdkImage() {
  if (!opened_ || read_only()) return;  // an open that failed half way has written nothing
  Status st = Flush();
  if (!st.ok()) Log(LogLevel::kError, main_->path() + ": flush at close failed: " + st.ToString());
}

ImageInfo VmdkImage::Info() const {
  ImageInfo info;
  info.format = "vmdk";
  info.virtual_size = size_;
  uint64_t grain = extents_.empty() ? 0 : extents_[0]->grain_bytes();
  for (const auto& e : extents_)
    if (e->grain_bytes() != grain) grain = 0;
  info.cluster_size = grain;
  info.specific.push_back(InfoUint("cid", "cid", cid()));
  info.specific.push_back(InfoUint("parent-cid", "parent cid", desc_.parent_cid));
  info.specific.push_back(InfoString("create-type", "create type", desc_.create_type));
  ImageInfo::Field list = ImageInfo::Field::List("extents", "extents");
  for (const auto& e : extents_) list.list.push_back(e->Info());
  info.specific.push_back(std::move(list));
  return info;
}

}  // namespace imgfs::vmdk
