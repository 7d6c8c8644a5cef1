#include "imagecore/chain.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <set>

#include "imagecore/format.h"
#include "imagecore/read_epoch.h"

namespace imgfs {

// Reads "from depth d down" for the driver of depth d-1 (copy-on-write).
class Chain::Below final : public LayerReader {
 public:
  Below(const Chain* chain, size_t d) : chain_(chain), d_(d) {}
  uint64_t VirtualSize() const override { return d_ < chain_->depth() ? chain_->VirtualSizeUnlocked(d_) : 0; }
  // Called by a layer's Write or by Commit, under io_mu_ already.
  Status Read(uint64_t off, void* buf, size_t len) const override {
    return chain_->ReadUnlocked(d_, off, buf, len);
  }

 private:
  const Chain* chain_;
  size_t d_;
};

Chain::~Chain() = default;

const LayerReader* Chain::below(size_t d) const {
  return d + 1 < layers_.size() ? below_[d].get() : nullptr;
}

Result<std::unique_ptr<Chain>> Chain::Open(const std::string& path, const std::string& format, bool writable,
                                           const io::ImageAccess& access, const FileOpener* files) {
  return OpenImpl(path, format, writable, "", access, files);
}

Result<std::unique_ptr<Chain>> Chain::OpenSnapshot(const std::string& path, const std::string& format,
                                                   const std::string& snapshot_id, const io::ImageAccess& access,
                                                   const FileOpener* files) {
  return OpenImpl(path, format, false, snapshot_id, access, files);
}

Result<std::unique_ptr<Chain>> Chain::OpenUnclaimed(const std::string& path, const std::string& format,
                                                    const io::ImageAccess& access, const FileOpener* files) {
  return OpenImpl(path, format, true, "", access, files, false);
}

Result<std::unique_ptr<Chain>> Chain::OpenThrough(const std::string& path, const std::string& format,
                                                  bool writable, const FileOpener& files) {
  return OpenImpl(path, format, writable, "", io::ImageAccess(), &files);
}

Result<std::unique_ptr<Chain>> Chain::OpenImpl(const std::string& path, const std::string& format, bool writable,
                                               const std::string& snapshot_id, const io::ImageAccess& access,
                                               const FileOpener* files, bool claim) {
  std::unique_ptr<Chain> chain(new Chain());
  chain->access_ = access;
  auto open = [&](const LayerRef& ref) -> Result<std::unique_ptr<Image>> {
    OpenOptions opts = LayerOptions(access, ref.depth == 0, writable && ref.depth == 0);
    opts.opener = files;
    opts.claim = claim;
    opts.no_repair = !claim;
    IMGFS_ASSIGN_OR_RETURN(auto img, OpenImage(ref.path, ref.format, opts));
    if (ref.depth == 0 && !snapshot_id.empty()) return img->OpenSnapshot(snapshot_id);
    return img;
  };
  auto keep = [&](const LayerRef& ref, std::unique_ptr<Image> img, const Status& link) -> Result<bool> {
    if (!link.ok() && chain->parent_mismatch_.empty()) {
      chain->parent_mismatch_ = link.message();
      chain->layers_[0]->MarkReadOnly(link.message());  // writes would land on a disk that is not this one
    }
    chain->layers_.push_back(std::move(img));
    chain->paths_.push_back(ref.path);
    return true;
  };
  IMGFS_RETURN_IF_ERROR(WalkChain(path, format, files, open, keep));
  for (size_t d = 0; d < chain->layers_.size(); ++d)
    chain->below_.push_back(std::make_unique<Below>(chain.get(), d + 1));
  return chain;
}

namespace {
}  // namespace

std::vector<io::FileStat> Chain::StatFiles(size_t d) const {
  SharedLock l(io_mu_);
  std::vector<io::FileStat> out;
  for (; d < layers_.size(); ++d)
    for (const Image::LayerFile& f : layers_[d]->files()) {
      auto st = f.file->Stat();
      out.push_back(st.ok() ? st.value() : io::FileStat{});  // unknown: mode 0 grants nothing
    }
  return out;
}

Status Chain::Resolve(size_t d, uint64_t off, uint64_t len, Resolved* out) const {
  SharedLock l(io_mu_);
  return ResolveUnlocked(d, off, len, out);
}

Status Chain::ResolveUnlocked(size_t d, uint64_t off, uint64_t len, Resolved* out) const {
  bool decided;
  return ResolveAbove(d, layers_.size(), off, len, out, &decided);
}

Status Chain::ResolveAbove(size_t d, size_t stop, uint64_t off, uint64_t len, Resolved* out, bool* decided) const {
  Extent last;  // the last layer's answer when none holds the run
  for (; d < stop; ++d) {
    const uint64_t size = layers_[d]->VirtualSize();
    if (off >= size) {  // past a smaller backing file: zeros
      *out = Resolved{Resolved::kZero, len, nullptr, 0, d, false};
      *decided = true;
      return Status::OK();
    }
    Extent e;
    IMGFS_RETURN_IF_ERROR(layers_[d]->BlockStatus(off, std::min(len, size - off), &e));
    if (e.kind == ExtentKind::kUnallocated) {
      len = e.length;
      last = e;
      continue;
    }
    out->length = e.length;
    out->depth = d;
    out->file = e.file;
    out->host_offset = e.host_offset;
    out->present = true;
    out->mapped_hole = e.mapped_hole;
    out->kind = e.kind == ExtentKind::kData ? Resolved::kData
                : e.kind == ExtentKind::kZero ? Resolved::kZero
                                              : Resolved::kOpaque;
    *decided = true;
    return Status::OK();
  }
  // Below every layer: zeros (where the last layer keeps host bytes for
  // them, a qcow2 subcluster not yet written, they are named).
  *out = Resolved{Resolved::kZero, len, last.file, last.host_offset, d, false};
  *decided = false;
  return Status::OK();
}

uint64_t Chain::VirtualSize(size_t d) const {
  SharedLock l(io_mu_);
  return layers_[d]->VirtualSize();
}

Status Chain::ReadResolved(const Resolved& r, uint64_t off, void* buf) const {
  SharedLock l(io_mu_);
  return ReadResolvedUnlocked(r, off, buf);
}

Status Chain::ReadResolvedUnlocked(const Resolved& r, uint64_t off, void* buf) const {
  switch (r.kind) {
    case Resolved::kData: return r.file->PRead(r.host_offset, buf, r.length);
    case Resolved::kZero: std::memset(buf, 0, r.length); return Status::OK();
    case Resolved::kOpaque: return layers_[r.depth]->ReadOpaque(off, buf, r.length);
  }
  return Status::OK();
}

Status Chain::Read(size_t d, uint64_t off, void* buf, size_t len) const {
  ReadScope reading;  // a write beside this read may free clusters: none is reused under it
  SharedLock l(io_mu_);
  return ReadUnlocked(d, off, buf, len);
}

Status Chain::ReadUnlocked(size_t d, uint64_t off, void* buf, size_t len) const {
  auto* p = static_cast<uint8_t*>(buf);
  const uint64_t size = d < layers_.size() ? layers_[d]->VirtualSize() : 0;
  while (len > 0) {
    if (off >= size) {
      std::memset(p, 0, len);
      return Status::OK();
    }
    Resolved r;
    IMGFS_RETURN_IF_ERROR(ResolveUnlocked(d, off, std::min<uint64_t>(len, size - off), &r));
    IMGFS_RETURN_IF_ERROR(ReadResolvedUnlocked(r, off, p));
    p += r.length;
    off += r.length;
    len -= r.length;
  }
  return Status::OK();
}

std::string Chain::KeyMissing(size_t d) const {
  for (size_t i = d; i < layers_.size(); ++i) {
    const std::string why = layers_[i]->KeyMissing();  // names the file
    if (!why.empty()) return why;
  }
  return "";
}

Status Chain::Write(uint64_t off, const void* buf, size_t len) {
  SharedLock w(write_mu_);
  SharedLock l(io_mu_);
  return layers_[0]->Write(off, buf, len, below(0));
}

Status Chain::WriteZeroes(uint64_t off, uint64_t len, bool unmap) {
  SharedLock w(write_mu_);
  SharedLock l(io_mu_);
  return layers_[0]->WriteZeroes(off, len, unmap, below(0));
}

Status Chain::WriteZeroesOver(uint64_t off, uint64_t len, const LayerReader& next) {
  SharedLock w(write_mu_);
  SharedLock l(io_mu_);
  return layers_[0]->WriteZeroes(off, len, false, &next);
}

Result<bool> Chain::WriteCompressed(uint64_t off, const uint8_t* data, size_t len) {
  SharedLock w(write_mu_);
  SharedLock l(io_mu_);
  return layers_[0]->WriteCompressed(off, data, len);
}

Status Chain::Flush() {
  SharedLock l(io_mu_);
  return layers_[0]->Flush();
}

void Chain::DropCaches() {
  SharedLock l(io_mu_);
  for (const auto& layer : layers_) layer->DropCaches();
}

Status Chain::Resize(uint64_t new_size) {
  SharedLock w(write_mu_);  // not between a commit's copy and its emptying of the top
  ExclusiveLock l(io_mu_);
  return layers_[0]->Resize(new_size, below(0));
}

Status Chain::CreateSnapshot(const std::string& name) {
  SharedLock w(write_mu_);  // not between a commit's copy and its emptying of the top
  ExclusiveLock l(io_mu_);
  return layers_[0]->CreateSnapshot(name);
}

Status Chain::DeleteSnapshot(const std::string& which) {
  SharedLock w(write_mu_);  // not between a commit's copy and its emptying of the top
  ExclusiveLock l(io_mu_);
  return layers_[0]->DeleteSnapshot(which);
}

Status Chain::ApplySnapshot(const std::string& which) {
  SharedLock w(write_mu_);  // not between a commit's copy and its emptying of the top
  ExclusiveLock l(io_mu_);
  return layers_[0]->ApplySnapshot(which);
}

Result<CheckResult> Chain::Check(RepairMode mode, const ProgressFn& progress) {
  SharedLock w(write_mu_);  // not between a commit's copy and its emptying of the top
  ExclusiveLock l(io_mu_);
  return layers_[0]->Check(mode, progress);
}

Status Chain::ReopenLayer(size_t d, bool writable) {
  const OpenOptions opts = LayerOptions(access_, d == 0, writable);
  auto img = OpenImage(paths_[d], layers_[d]->format_name(), opts);
  if (!img.ok()) return img.status();
  if (writable && img.value()->read_only())
    return ReadOnly(paths_[d] + ": " + img.value()->read_only_reason());
  // It was written through and flushed; readers may still hold runs it
  // resolved, so it stays open, but not claimed.
  layers_[d]->DropWriteClaim();
  retired_.push_back(std::move(layers_[d]));
  layers_[d] = std::move(img).value();
  return Status::OK();
}

Status Chain::Commit(size_t base, bool empty_top, const Progress& progress) {
  // Writes wait for the whole commit: one landing in the top after its
  // range was copied would be lost when the top is emptied. Reads go on
  // while the data is copied: the base only gains bytes that the layers
  // above it hide.
  ExclusiveLock w(write_mu_);
  Status st;
  {
    ExclusiveLock l(io_mu_);
    if (base == 0 || base >= layers_.size())
      return InvalidArgument(paths_[0] + ": no backing layer at depth " + std::to_string(base) + " to commit into");
    if (layers_[0]->read_only()) return ReadOnly(paths_[0] + ": " + layers_[0]->read_only_reason());
    IMGFS_RETURN_IF_ERROR(ReopenLayer(base, true));
    layers_[base]->KeepIdentity();
    // A base smaller than the top grows first (as qemu-img commit does).
    const uint64_t size = layers_[0]->VirtualSize();
    if (layers_[base]->VirtualSize() < size) st = layers_[base]->Resize(size, below(base));
  }
  if (st.ok()) {
    SharedLock l(io_mu_);
    st = CopyUp(base, progress);
  }
  ExclusiveLock l(io_mu_);
  if (st.ok() && empty_top) {
    st = layers_[0]->MakeEmpty();
    if (st.ok()) st = layers_[0]->Flush();
  }
  // Back to read-only whatever happened: a backing file is never left open
  // for writing. What was written is on disk before the new instance reads.
  Status flushed = layers_[base]->Flush();
  if (st.ok()) st = flushed;
  // The base changed: the layer that names it records it as it is now
  // (VMDK's parentCID), so the chain opens without a mismatch next time.
  if (st.ok()) st = RelinkAbove(base);
  Status back = ReopenLayer(base, false);
  return st.ok() ? back : st;
}

Status Chain::RelinkAbove(size_t base) {
  const size_t child = base - 1;
  if (child > 0) IMGFS_RETURN_IF_ERROR(ReopenLayer(child, true));
  Status st = layers_[child]->RelinkParent(*layers_[base]);
  if (st.ok()) st = layers_[child]->Flush();
  if (child > 0) {
    Status back = ReopenLayer(child, false);
    if (st.ok()) st = back;
  }
  return st;
}

Status Chain::CopyUp(size_t base, const Progress& progress) {
  Image& target = *layers_[base];
  const uint64_t size = layers_[0]->VirtualSize();
  // The runs layers [0, base) decide: everything not left to `base` down.
  auto next_run = [&](uint64_t off, Resolved* r, bool* above) {
    return ResolveAbove(0, base, off, size - off, r, above);
  };
  uint64_t total = 0;
  for (uint64_t off = 0; off < size;) {
    Resolved r;
    bool above = false;
    IMGFS_RETURN_IF_ERROR(next_run(off, &r, &above));
    if (above) total += r.length;
    off += r.length;
  }
  uint64_t done = 0;
  if (progress) progress(0, total);
  constexpr uint64_t kChunk = 1 << 20;
  std::unique_ptr<uint8_t[]> buf(new uint8_t[kChunk]);
  for (uint64_t off = 0; off < size;) {
    Resolved r;
    bool above = false;
    IMGFS_RETURN_IF_ERROR(next_run(off, &r, &above));
    r.length = std::min<uint64_t>(r.length, kChunk);
    if (above) {
      if (r.kind == Resolved::kZero) {
        IMGFS_RETURN_IF_ERROR(target.WriteZeroes(off, r.length, false, below(base)));
      } else {
        IMGFS_RETURN_IF_ERROR(ReadResolvedUnlocked(r, off, buf.get()));
        IMGFS_RETURN_IF_ERROR(target.Write(off, buf.get(), r.length, below(base)));
      }
      done += r.length;
      if (progress) progress(done, total);
    }
    off += r.length;
  }
  // The base holds everything before the top lets go of it.
  return target.Flush();
}

size_t SharedBottomLayers(const Chain& a, size_t top_a, const Chain& b) {
  size_t k = 0;
  while (top_a + k < a.depth() && k < b.depth()) {
    const size_t da = a.depth() - 1 - k, db = b.depth() - 1 - k;
    if (io::RealPath(a.layer_path(da)) != io::RealPath(b.layer_path(db)) ||
        std::strcmp(a.layer(da).format_name(), b.layer(db).format_name()) != 0)
      break;
    ++k;
  }
  return k;
}

}  // namespace imgfs
