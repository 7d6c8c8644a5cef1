#include "imagecore/chain.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <set>

#include "imagecore/format.h"

namespace imgfs {

namespace {
constexpr size_t kMaxChainDepth = 64;
}

std::string ResolveBackingPath(const std::string& image_path, const std::string& backing_name) {
  if (backing_name.empty() || backing_name[0] == '/') return backing_name;
  if (backing_name.find("://") != std::string::npos || backing_name.rfind("json:", 0) == 0) return backing_name;
  auto slash = image_path.rfind('/');
  if (slash == std::string::npos) return backing_name;
  return image_path.substr(0, slash + 1) + backing_name;
}

// Reads "from depth d down" for the driver of depth d-1 (copy-on-write).
class Chain::Below final : public LayerReader {
 public:
  Below(const Chain* chain, size_t d) : chain_(chain), d_(d) {}
  uint64_t VirtualSize() const override { return d_ < chain_->depth() ? chain_->VirtualSize(d_) : 0; }
  Status Read(uint64_t off, void* buf, size_t len) const override { return chain_->Read(d_, off, buf, len); }

 private:
  const Chain* chain_;
  size_t d_;
};

Chain::~Chain() = default;

Result<std::unique_ptr<Chain>> Chain::Open(const std::string& path, const std::string& format, bool writable) {
  return OpenImpl(path, format, writable, "");
}

Result<std::unique_ptr<Chain>> Chain::OpenSnapshot(const std::string& path, const std::string& format,
                                                   const std::string& snapshot_id) {
  return OpenImpl(path, format, false, snapshot_id);
}

Result<std::unique_ptr<Chain>> Chain::OpenImpl(const std::string& path, const std::string& format, bool writable,
                                               const std::string& snapshot_id) {
  std::unique_ptr<Chain> chain(new Chain());
  std::set<std::string> seen;
  std::string cur = path, fmt = format;
  for (size_t d = 0;; ++d) {
    if (d >= kMaxChainDepth) return Unsupported(path + ": backing chain deeper than " + std::to_string(kMaxChainDepth));
    char real[PATH_MAX];
    std::string key = ::realpath(cur.c_str(), real) ? std::string(real) : cur;
    if (!seen.insert(key).second) return Corrupt(path + ": backing chain loops back to " + cur);
    OpenOptions opts;
    opts.writable = writable && d == 0;
    auto img = OpenImage(cur, fmt, opts);
    if (!img.ok()) {
      if (d == 0) return img.status();
      return img.status().Prefixed(path + ": cannot open backing file");
    }
    if (d == 0 && !snapshot_id.empty()) {
      auto snap = img.value()->OpenSnapshot(snapshot_id);
      if (!snap.ok()) return snap.status();
      img = std::move(snap).value();
    }
    std::optional<BackingRef> backing = img.value()->Backing();
    chain->layers_.push_back(std::move(img).value());
    chain->paths_.push_back(cur);
    if (!backing) break;
    cur = ResolveBackingPath(cur, backing->name);
    fmt = backing->format;
  }
  for (size_t d = 0; d < chain->layers_.size(); ++d)
    chain->below_.push_back(std::make_unique<Below>(chain.get(), d + 1));
  return chain;
}

Status Chain::Resolve(size_t d, uint64_t off, uint64_t len, Resolved* out) const {
  for (; d < layers_.size(); ++d) {
    const uint64_t size = layers_[d]->VirtualSize();
    if (off >= size) break;  // past a smaller backing file: zeros
    Extent e;
    IMGFS_RETURN_IF_ERROR(layers_[d]->BlockStatus(off, std::min(len, size - off), &e));
    if (e.kind == ExtentKind::kUnallocated) {
      len = e.length;
      continue;
    }
    out->length = e.length;
    out->depth = d;
    out->file = e.file;
    out->host_offset = e.host_offset;
    out->kind = e.kind == ExtentKind::kData ? Resolved::kData
                : e.kind == ExtentKind::kZero ? Resolved::kZero
                                              : Resolved::kOpaque;
    return Status::OK();
  }
  *out = Resolved{Resolved::kZero, len, nullptr, 0, d};
  return Status::OK();
}

Status Chain::ReadResolved(const Resolved& r, uint64_t off, void* buf) const {
  switch (r.kind) {
    case Resolved::kData: return r.file->PRead(r.host_offset, buf, r.length);
    case Resolved::kZero: std::memset(buf, 0, r.length); return Status::OK();
    case Resolved::kOpaque: return layers_[r.depth]->ReadOpaque(off, buf, r.length);
  }
  return Status::OK();
}

Status Chain::Read(size_t d, uint64_t off, void* buf, size_t len) const {
  auto* p = static_cast<uint8_t*>(buf);
  const uint64_t size = d < layers_.size() ? layers_[d]->VirtualSize() : 0;
  while (len > 0) {
    if (off >= size) {
      std::memset(p, 0, len);
      return Status::OK();
    }
    Resolved r;
    IMGFS_RETURN_IF_ERROR(Resolve(d, off, std::min<uint64_t>(len, size - off), &r));
    IMGFS_RETURN_IF_ERROR(ReadResolved(r, off, p));
    p += r.length;
    off += r.length;
    len -= r.length;
  }
  return Status::OK();
}

Status Chain::Write(uint64_t off, const void* buf, size_t len) {
  return layers_[0]->Write(off, buf, len, layers_.size() > 1 ? below_[0].get() : nullptr);
}

Status Chain::Flush() { return layers_[0]->Flush(); }

}  // namespace imgfs
