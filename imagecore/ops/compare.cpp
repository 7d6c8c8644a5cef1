// qemu-img compare on every format, block status first.
#include <algorithm>
#include <cstring>
#include <vector>

#include "imagecore/file.h"
#include "imagecore/format.h"
#include "imagecore/ops.h"

namespace imgfs::ops {
namespace {

constexpr uint64_t kBatch = 2 << 20;  // read and compared at a time, as qemu-img's buffer
constexpr uint64_t kStep = 64 << 20;  // at most between two progress updates

// The offset qemu-img names for the first difference: the start of the
// 512-byte sector holding it.
uint64_t SectorOf(uint64_t off) { return off & ~uint64_t{511}; }

// What qemu-img's strict mode compares of a run: allocation, zero and data
// flags, whether the host offset is known, and whether it reaches the end.
struct RunStatus {
  bool present, zero, data, offset, eof;
  bool operator==(const RunStatus& o) const {
    return present == o.present && zero == o.zero && data == o.data && offset == o.offset && eof == o.eof;
  }
};
// A run reaches the end as qemu sees it: where a layer the run passes
// answers one cluster at a time, only from within the last cluster.
bool ReachesEnd(const Chain& c, const Resolved& r, uint64_t off) {
  const uint64_t size = c.VirtualSize();
  if (off + r.length < size) return false;
  const size_t last = r.present ? r.depth : c.depth() - 1;
  for (size_t d = 0; d <= last && d < c.depth(); ++d) {
    const Image& layer = c.layer(d);
    const uint64_t unit = layer.Info().cluster_size;
    if (unit && layer.caps().status_by_grain && off < (size - 1) / unit * unit) return false;
  }
  return true;
}
RunStatus StatusOf(const Chain& c, const Resolved& r, uint64_t off) {
  return {r.present, r.kind == Resolved::kZero, r.kind != Resolved::kZero, r.file != nullptr, ReachesEnd(c, r, off)};
}

class Comparer {
 public:
  Comparer(const Chain& a, const Chain& b, const CompareRequest& req, CompareResult* out)
      : a_(a), b_(b), req_(req), out_(out), shared_(SharedBottomLayers(a, 0, b)) {
    buf_a_.resize(kBatch);
    buf_b_.resize(kBatch);
  }

  void Run() {
    const uint64_t sa = a_.VirtualSize(), sb = b_.VirtualSize();
    if (sa != sb && req_.strict) {
      Differ("Strict mode: Image size mismatch!");
      return;
    }
    const uint64_t common = std::min(sa, sb), total = std::max(sa, sb);
    if (req_.progress) req_.progress(0, total);
    for (uint64_t off = 0; off < common;) {
      uint64_t n;
      if (!Common(off, common - off, &n) || !out_->lines.empty()) return;
      off += n;
      if (req_.progress) req_.progress(off, total);
    }
    if (sa != sb) {
      out_->lines.push_back("Warning: Image size mismatch!");
      const Chain& longer = sa > sb ? a_ : b_;
      for (uint64_t off = common; off < total;) {
        Resolved r;
        if (!Resolve(longer, off, total - off, &r)) return;
        if (r.kind != Resolved::kZero && !MustBeZero(longer, off, r.length)) return;
        off += r.length;
        if (req_.progress) req_.progress(off, total);
      }
    }
    out_->equal = true;
    out_->lines.push_back("Images are identical.");
  }

 private:
  // One run of the common part from `off`; false on an error or a difference.
  bool Common(uint64_t off, uint64_t len, uint64_t* done) {
    Resolved ra, rb;
    // Whole runs first (strict mode compares whether they reach the end).
    if (!Resolve(a_, off, len, &ra) || !Resolve(b_, off, len, &rb)) return false;
    if (req_.strict && !(StatusOf(a_, ra, off) == StatusOf(b_, rb, off)))
      return Differ("Strict mode: Offset " + std::to_string(off) + " block status mismatch!");
    const bool za = ra.kind == Resolved::kZero, zb = rb.kind == Resolved::kZero;
    const uint64_t n = std::min({ra.length, rb.length, kStep});
    *done = n;
    if (za && zb) return true;
    if (Shared(ra, rb)) return true;  // the same layer's bytes on both sides
    if (za) return MustBeZero(b_, off, n);
    if (zb) return MustBeZero(a_, off, n);
    return Contents(off, n);
  }

  bool Contents(uint64_t off, uint64_t len) {
    for (uint64_t at = off; at < off + len;) {
      const uint64_t n = std::min(kBatch, off + len - at);
      if (!Read(a_, at, n, buf_a_.data()) || !Read(b_, at, n, buf_b_.data())) return false;
      for (uint64_t i = 0; i < n; i += 512) {
        const size_t k = std::min<uint64_t>(512, n - i);
        if (std::memcmp(&buf_a_[i], &buf_b_[i], k) != 0) return Differ(Mismatch(at + i));
      }
      at += n;
    }
    return true;
  }

  bool Shared(const Resolved& ra, const Resolved& rb) const {
    if (!shared_ || !ra.present || !rb.present) return false;
    const size_t from_bottom_a = a_.depth() - ra.depth, from_bottom_b = b_.depth() - rb.depth;
    return from_bottom_a == from_bottom_b && from_bottom_a <= shared_;
  }

  // [off, off+len) of `c` must read as zeros.
  bool MustBeZero(const Chain& c, uint64_t off, uint64_t len) {
    for (uint64_t at = off; at < off + len;) {
      const uint64_t n = std::min(kBatch, off + len - at);
      if (!Read(c, at, n, buf_a_.data())) return false;
      for (uint64_t i = 0; i < n; i += 512) {
        const size_t k = std::min<uint64_t>(512, n - i);
        if (buf_a_[i] != 0 || std::memcmp(&buf_a_[i], &buf_a_[i + 1], k - 1) != 0) return Differ(Mismatch(at + i));
      }
      at += n;
    }
    return true;
  }

  static std::string Mismatch(uint64_t off) { return "Content mismatch at offset " + std::to_string(SectorOf(off)) + "!"; }

  bool Resolve(const Chain& c, uint64_t off, uint64_t len, Resolved* r) {
    Status st = c.Resolve(0, off, len, r);
    if (st.ok() && r->length == 0) st = Corrupt(c.layer_path(0) + ": block status of an empty run");
    return Failed(st, CompareResult::kStatus);
  }
  bool Read(const Chain& c, uint64_t off, uint64_t len, uint8_t* buf) {
    return Failed(c.Read(0, off, buf, len), CompareResult::kRead);
  }
  bool Failed(const Status& st, CompareResult::Stage stage) {
    if (st.ok()) return true;
    out_->stage = stage;
    out_->status = st;
    return false;
  }
  bool Differ(const std::string& line) {
    out_->lines.push_back(line);
    return false;
  }

  const Chain& a_;
  const Chain& b_;
  const CompareRequest& req_;
  CompareResult* out_;
  const size_t shared_;
  std::vector<uint8_t> buf_a_, buf_b_;
};
}  // namespace

CompareResult Compare(const CompareRequest& req) {
  CompareResult out;
  auto a = Chain::Open(req.path1, req.format1, false);
  if (!a.ok()) {
    out.stage = CompareResult::kOpen;
    out.status = a.status().Prefixed("Could not open '" + req.path1 + "'");
    return out;
  }
  auto b = Chain::Open(req.path2, req.format2, false);
  if (!b.ok()) {
    out.stage = CompareResult::kOpen;
    out.status = b.status().Prefixed("Could not open '" + req.path2 + "'");
    return out;
  }
  Comparer(*a.value(), *b.value(), req, &out).Run();
  return out;
}

}  // namespace imgfs::ops
