// qemu-img rebase on every format that can change its backing file.
#include <algorithm>
#include <cstring>
#include <vector>

#include "imagecore/file.h"
#include "imagecore/format.h"
#include "imagecore/ops.h"

namespace imgfs::ops {
namespace {

constexpr uint64_t kBatch = 1 << 20;  // compared and copied at a time

class Differences {
 public:
  Differences(Chain& chain, const Chain* target, const Chain::Progress& progress, bool compress)
      : chain_(chain), target_(target), progress_(progress), shared_(target ? SharedBottomLayers(chain, 1, *target) : 0),
        compress_(compress) {
    const uint64_t cs = chain.layer(0).Info().cluster_size;
    unit_ = cs ? cs : 65536;
    old_.resize(kBatch);
    new_.resize(kBatch);
    if (compress_) cluster_.resize(2 * unit_);
  }

  // Walks what the image itself does not hold; copies where the chains differ.
  Status Run() {
    const uint64_t size = chain_.VirtualSize();
    if (progress_) progress_(0, size);
    for (uint64_t off = 0; off < size;) {
      Extent e;
      IMGFS_RETURN_IF_ERROR(chain_.layer(0).BlockStatus(off, size - off, &e));
      if (e.kind == ExtentKind::kUnallocated) {
        for (uint64_t pos = off; pos < off + e.length;) {
          uint64_t n;
          IMGFS_RETURN_IF_ERROR(Step(pos, off + e.length - pos, &n));
          pos += n;
        }
      }
      off += e.length;
      if (progress_) progress_(off, size);
    }
    return Status::OK();
  }

 private:
  // One run of at most kBatch bytes from `pos`: skipped when block status
  // shows both sides equal, else read, compared unit by unit, and the
  // differing units copied. *done: how far it got.
  Status Step(uint64_t pos, uint64_t len, uint64_t* done) {
    len = std::min(len, kBatch);
    Resolved o{}, n{};
    bool old_shared = true, new_shared = true;
    if (chain_.depth() > 1 && pos < chain_.VirtualSize(1)) {
      IMGFS_RETURN_IF_ERROR(chain_.Resolve(1, pos, std::min(len, chain_.VirtualSize(1) - pos), &o));
      len = std::min(len, o.length);
      old_shared = shared_ && o.depth >= chain_.depth() - shared_;
    } else {
      o.kind = Resolved::kZero;
    }
    if (target_ && pos < target_->VirtualSize()) {
      IMGFS_RETURN_IF_ERROR(target_->Resolve(0, pos, std::min(len, target_->VirtualSize() - pos), &n));
      len = std::min(len, n.length);
      new_shared = shared_ && n.depth >= target_->depth() - shared_;
    } else {
      n.kind = Resolved::kZero;
    }
    *done = len;
    const bool both_zero = o.kind == Resolved::kZero && n.kind == Resolved::kZero;
    if (both_zero || (shared_ && old_shared && new_shared)) return Status::OK();
    if (chain_.depth() > 1) {
      IMGFS_RETURN_IF_ERROR(chain_.Read(1, pos, old_.data(), len));
    } else {
      std::memset(old_.data(), 0, len);
    }
    if (target_) {
      IMGFS_RETURN_IF_ERROR(target_->Read(0, pos, new_.data(), len));
    } else {
      std::memset(new_.data(), 0, len);
    }
    // Unit by unit, aligned to the image's clusters: only what differs.
    for (uint64_t at = pos; at < pos + len;) {
      const uint64_t end = std::min(pos + len, (at / unit_ + 1) * unit_);
      const size_t i = at - pos, k = end - at;
      if (std::memcmp(&old_[i], &new_[i], k) != 0) IMGFS_RETURN_IF_ERROR(Copy(at, &old_[i], k));
      at = end;
    }
    return Status::OK();
  }

  // Zeros are written as zeros (a zero cluster where the format has them),
  // hiding the new backing chain; the rest as data.
  // With -c, a whole cluster (or the disk's last) goes compressed where it
  // shrinks and the image does not hold it yet.
  Status Copy(uint64_t at, const uint8_t* p, size_t k) {
    const bool zero = p[0] == 0 && std::memcmp(p, p + 1, k - 1) == 0;
    if (zero) return target_ ? chain_.WriteZeroesOver(at, k, next_) : chain_.WriteZeroes(at, k, false);
    if (compress_ && at % unit_ == 0 && (k == unit_ || at + k == chain_.VirtualSize())) {
      uint8_t* in = cluster_.data();
      std::memcpy(in, p, k);
      std::memset(in + k, 0, unit_ - k);  // the disk's last cluster, padded
      IMGFS_ASSIGN_OR_RETURN(size_t clen, chain_.layer(0).Compress(in, unit_, in + unit_, unit_ - 1));
      if (clen) {
        IMGFS_ASSIGN_OR_RETURN(bool stored, chain_.WriteCompressed(at, in + unit_, clen));
        if (stored) return Status::OK();
      }
    }
    return chain_.Write(at, p, k);
  }

  // The new backing chain as the image will see it.
  class Next : public LayerReader {
   public:
    explicit Next(const Chain* c) : c_(c) {}
    uint64_t VirtualSize() const override { return c_ ? c_->VirtualSize() : 0; }
    Status Read(uint64_t off, void* buf, size_t len) const override {
      const uint64_t size = VirtualSize(), n = off < size ? std::min<uint64_t>(len, size - off) : 0;
      std::memset(static_cast<uint8_t*>(buf) + n, 0, len - n);
      return n ? c_->Read(0, off, buf, n) : Status::OK();
    }

   private:
    const Chain* c_;
  };

  Chain& chain_;
  const Chain* target_;
  const Next next_{target_};
  const Chain::Progress& progress_;
  const size_t shared_;
  const bool compress_;
  uint64_t unit_;
  std::vector<uint8_t> old_, new_;
  std::vector<uint8_t> cluster_;  // -c: a padded cluster, then its compressed form
};

// Opens the new backing chain (null for none). Its format must be given,
// as qemu-img asks. With -u a backing file that does not open is named all
// the same.
Status OpenTarget(const RebaseRequest& req, std::unique_ptr<Chain>* target, std::string* format) {
  *format = req.backing_format;
  if (req.backing.empty()) return Status::OK();
  const std::string where = "Could not change the backing file to '" + req.backing + "': ";
  if (format->empty()) return InvalidArgument(where + "backing format must be specified");
  auto opened = Chain::Open(ResolveBacking(req.path, BackingRef{.name = req.backing}), *format, false);
  if (!opened.ok()) {
    if (req.unsafe && !format->empty()) return Status::OK();
    return opened.status().Prefixed("Could not open new backing file '" + req.backing + "'");
  }
  *target = std::move(opened).value();
  const std::string self = io::RealPath(req.path);
  for (size_t d = 0; d < (*target)->depth(); ++d)
    if (io::RealPath((*target)->layer_path(d)) == self) return InvalidArgument(where + "its backing chain holds the image itself");
  return Status::OK();
}

Status CanChange(const RebaseRequest& req, const Image& top) {
  if (top.read_only()) return ReadOnly(req.path + ": " + top.read_only_reason());
  if (!top.caps().change_backing)
    return Unsupported("Could not change the backing file to '" + req.backing + "': " + top.format_name() +
                       " images have no backing file");
  return Status::OK();
}

// -u: the image alone is opened (its old backing file may be gone, or be
// the wrong one: this is how a broken link is mended).
Status RebaseUnsafe(const RebaseRequest& req) {
  IMGFS_ASSIGN_OR_RETURN(auto top, OpenImage(req.path, req.format, OpenOptions(true)));
  IMGFS_RETURN_IF_ERROR(CanChange(req, *top));
  std::unique_ptr<Chain> target;
  std::string format;
  IMGFS_RETURN_IF_ERROR(OpenTarget(req, &target, &format));
  IMGFS_RETURN_IF_ERROR(top->SetBacking(req.backing, format, target ? &target->layer(0) : nullptr));
  return top->Flush();
}
}  // namespace

Status Rebase(const RebaseRequest& req) {
  if (req.unsafe) return RebaseUnsafe(req);
  IMGFS_ASSIGN_OR_RETURN(auto chain, Chain::Open(req.path, req.format, true));
  Image& top = chain->layer(0);
  IMGFS_RETURN_IF_ERROR(CanChange(req, top));
  std::unique_ptr<Chain> target;
  std::string format;
  IMGFS_RETURN_IF_ERROR(OpenTarget(req, &target, &format));
  if (req.compress && !top.caps().compressed_writes)
    return Unsupported("Compression not supported for this file format");
  Differences diff(*chain, target.get(), req.progress, req.compress);
  IMGFS_RETURN_IF_ERROR(diff.Run());
  // What was copied is durable before the reference changes.
  IMGFS_RETURN_IF_ERROR(chain->Flush());
  IMGFS_RETURN_IF_ERROR(top.SetBacking(req.backing, format, target ? &target->layer(0) : nullptr));
  return chain->Flush();
}

}  // namespace imgfs::ops
