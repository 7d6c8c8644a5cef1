#include "test_util.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <random>
#include <cstring>
#include <map>

#include "base/endian.h"
#include "formats/qcow2/qcow2_driver.h"
#include "formats/qcow2/qcow2_format.h"

namespace imgfs::test {

Status SharedFile::PWrite(uint64_t off, const void* buf, size_t n) {
  if (log_) {
    Op op{Op::kWrite, off, {}};
    op.data.assign(static_cast<const uint8_t*>(buf), static_cast<const uint8_t*>(buf) + n);
    log_->push_back(std::move(op));
  }
  return inner_->PWrite(off, buf, n);
}

Status SharedFile::Truncate(uint64_t size) {
  if (log_) log_->push_back(Op{Op::kTruncate, size, {}});
  return inner_->Truncate(size);
}

void SharedFile::Discard(uint64_t off, uint64_t n) {
  if (log_) log_->push_back(Op{Op::kDiscard, off, {}, n});
  inner_->Discard(off, n);
}

Status SharedFile::Sync() {
  if (log_) log_->push_back(Op{Op::kSync, 0, {}});
  return inner_->Sync();
}

std::vector<uint8_t> Contents(const io::File& f) {
  std::vector<uint8_t> out(f.Size());
  if (!out.empty()) (void)f.PRead(0, out.data(), out.size());
  return out;
}

std::shared_ptr<io::File> FileWith(const std::vector<uint8_t>& bytes) {
  std::shared_ptr<io::File> f = io::NewMemFile();
  if (!bytes.empty()) (void)f->PWrite(0, bytes.data(), bytes.size());
  return f;
}

std::shared_ptr<io::File> MemFiles::Add(const std::string& path, std::shared_ptr<io::File> f) {
  if (!f) f = io::NewMemFile(path);
  std::lock_guard<std::mutex> l(mu_);
  files_[path] = f;
  return f;
}

std::shared_ptr<io::File> MemFiles::Get(const std::string& path) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = files_.find(path);
  return it == files_.end() ? nullptr : it->second;
}

Result<std::unique_ptr<io::File>> MemFiles::Open(const std::string& path, bool, const io::Access&) const {
  auto f = Get(path);
  if (!f) return NotFound(path + ": No such file or directory");
  return std::unique_ptr<io::File>(std::make_unique<SharedFile>(f, nullptr, path));
}

Result<std::unique_ptr<io::File>> MemFiles::Create(const std::string& path, const io::Access&, mode_t) const {
  if (Get(path)) return IoError(path, EEXIST);
  return std::unique_ptr<io::File>(std::make_unique<SharedFile>(const_cast<MemFiles*>(this)->Add(path), nullptr, path));
}

Status MemFiles::Rename(const std::string& from, const std::string& to) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = files_.find(from);
  if (it == files_.end()) return NotFound(from + ": No such file or directory");
  files_[to] = it->second;
  files_.erase(from);
  return Status::OK();
}

void MemFiles::Remove(const std::string& path) const {
  std::lock_guard<std::mutex> l(mu_);
  files_.erase(path);
}

std::vector<std::string> MemFiles::Paths() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<std::string> out;
  for (const auto& [p, f] : files_) out.push_back(p);
  return out;
}

Result<io::FileStat> MemFiles::Stat(const std::string& path) const {
  if (auto f = Get(path)) {
    IMGFS_ASSIGN_OR_RETURN(io::FileStat st, f->Stat());
    st.ino = std::hash<std::string>()(path);
    return st;
  }
  if (!List(path).empty()) {
    io::FileStat st;
    st.is_dir = true;
    st.mode = S_IFDIR | 0755;
    return st;
  }
  return NotFound(path + ": No such file or directory");
}

std::vector<std::string> MemFiles::List(const std::string& dir) const {
  const std::string prefix = dir + "/";
  std::vector<std::string> out;
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& [p, f] : files_)
    if (p.rfind(prefix, 0) == 0 && p.find('/', prefix.size()) == std::string::npos) out.push_back(p.substr(prefix.size()));
  return out;
}

std::shared_ptr<io::File> Recorded::Rebuild(size_t upto, const std::vector<bool>* keep) const {
  auto f = FileWith(initial);
  for (size_t i = 0; i < upto && i < ops.size(); ++i) {
    if (keep && !(*keep)[i]) continue;
    const auto& op = ops[i];
    if (op.kind == SharedFile::Op::kWrite) (void)f->PWrite(op.off, op.data.data(), op.data.size());
    if (op.kind == SharedFile::Op::kTruncate) (void)f->Truncate(op.off);
    if (op.kind == SharedFile::Op::kDiscard) f->Discard(op.off, op.len);
  }
  return f;
}

void Recorded::EachPrefix(const std::function<void(std::shared_ptr<io::File>, size_t, const char*)>& check) const {
  const size_t step = std::max<size_t>(1, ops.size() / 300);
  for (size_t k = 0; k <= ops.size(); k += step) check(Rebuild(k), k, "kill -9");
  check(Rebuild(ops.size()), ops.size(), "clean close");
}

void Recorded::EachPowerLoss(int trials,
                             const std::function<void(std::shared_ptr<io::File>, size_t, const char*)>& check) const {
  std::vector<size_t> syncs;
  for (size_t i = 0; i < ops.size(); ++i)
    if (ops[i].kind == SharedFile::Op::kSync) syncs.push_back(i);
  std::mt19937 rng(11);
  for (size_t s = 0; s < syncs.size(); ++s) {
    const size_t next = s + 1 < syncs.size() ? syncs[s + 1] : ops.size();
    for (int trial = 0; trial < trials; ++trial) {
      std::vector<bool> keep(ops.size(), true);
      for (size_t i = syncs[s] + 1; i < next; ++i) keep[i] = rng() % 2;
      check(Rebuild(next, &keep), syncs[s] + 1, "power loss");
    }
  }
}

std::shared_ptr<io::File> NewQcow2(uint64_t size, const std::string& options) {
  std::shared_ptr<io::File> f = io::NewMemFile();
  CreateOptions opts;
  opts.size = size;
  size_t pos = 0;
  while (pos < options.size()) {
    size_t comma = options.find(',', pos);
    std::string kv = options.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t eq = kv.find('=');
    opts.options[kv.substr(0, eq)] = kv.substr(eq + 1);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  SharedFile sf(f);
  Status st = qcow2::CreateImage(sf, opts);
  if (!st.ok()) return nullptr;
  return f;
}

std::unique_ptr<Image> OpenShared(std::shared_ptr<io::File> f, bool writable,
                                  std::shared_ptr<std::vector<SharedFile::Op>> log) {
  const FormatDriver* drv = ProbeFormat(*f);
  if (!drv) drv = FindFormat("raw");
  auto img = drv->open(std::make_unique<SharedFile>(f, log), OpenOptions{writable});
  if (!img.ok()) return nullptr;
  return std::move(img).value();
}

std::vector<uint8_t> ReadLayer(Image& img) {
  std::vector<uint8_t> out(img.VirtualSize());
  uint64_t off = 0;
  while (off < out.size()) {
    Extent e;
    if (!img.BlockStatus(off, out.size() - off, &e).ok()) return {};
    Status st;
    if (e.kind == ExtentKind::kData) st = e.file->PRead(e.host_offset, &out[off], e.length);
    else if (e.kind == ExtentKind::kOpaque) st = img.ReadOpaque(off, &out[off], e.length);
    else std::memset(&out[off], 0, e.length);
    if (!st.ok()) return {};
    off += e.length;
  }
  return out;
}

std::string CheckQcow2(const io::File& f, uint64_t* leaks, bool copied) {
  using namespace qcow2;
  auto h = Header::Read(f);
  if (!h.ok()) return "header: " + h.status().ToString();
  const uint64_t cs = h->cluster_size();
  const uint32_t order = h->refcount_order;
  std::map<uint64_t, uint64_t> refs;  // cluster index -> references
  auto ref = [&](uint64_t off, uint64_t len) {
    for (uint64_t c = off / cs; c <= (off + len - 1) / cs; ++c) ++refs[c];
  };
  ref(0, cs);
  ref(h->refcount_table_offset, uint64_t(h->refcount_table_clusters) * cs);
  if (h->l1_size) ref(h->l1_table_offset, uint64_t(h->l1_size) * 8);
  std::vector<uint8_t> rt(uint64_t(h->refcount_table_clusters) * cs);
  (void)f.PRead(h->refcount_table_offset, rt.data(), rt.size());
  for (size_t i = 0; i < rt.size() / 8; ++i) {
    uint64_t b = LoadBE64(&rt[i * 8]);
    if (b) ref(b, cs);
  }
  // One walk per L1 table: the active one and each snapshot's.
  std::vector<std::pair<uint64_t, uint32_t>> l1s = {{h->l1_table_offset, h->l1_size}};
  uint64_t so = h->snapshots_offset;
  for (uint32_t s = 0; s < h->nb_snapshots; ++s) {
    uint8_t e[40];
    (void)f.PRead(so, e, sizeof e);
    const uint64_t l1off = LoadBE64(e);
    const uint32_t l1n = LoadBE32(e + 8);
    l1s.emplace_back(l1off, l1n);
    if (l1n) ref(l1off, uint64_t(l1n) * 8);
    so += (40 + LoadBE32(e + 36) + LoadBE16(e + 12) + LoadBE16(e + 14) + 7) & ~uint64_t(7);
  }
  if (h->nb_snapshots) ref(h->snapshots_offset, so - h->snapshots_offset);
  std::vector<uint8_t> l2(cs);
  std::vector<std::pair<uint64_t, bool>> active;  // cluster, COPIED: the active tables' entries
  for (auto [l1off, l1n] : l1s) {
    const bool is_active = active.empty() && l1off == h->l1_table_offset;
    for (uint32_t i = 0; i < l1n; ++i) {
      uint8_t e[8];
      (void)f.PRead(l1off + i * 8, e, 8);
      uint64_t l2off = LoadBE64(e) & kOffsetMask;
      if (!l2off) continue;
      if (l2off % cs) return "misaligned L2 table";
      ref(l2off, cs);
      if (is_active) active.emplace_back(l2off / cs, (LoadBE64(e) & kOflagCopied) != 0);
      (void)f.PRead(l2off, l2.data(), cs);
      for (uint64_t j = 0; j < cs / 8; ++j) {
        uint64_t d = LoadBE64(&l2[j * 8]);
        if (d & kOflagCompressed) {
          const uint32_t x = 62 - (h->cluster_bits - 8);
          uint64_t host = d & ((1ull << x) - 1);
          uint64_t sectors = ((d & ((1ull << 62) - 1)) >> x) + 1;
          ref(host, sectors * 512 - (host & 511));
        } else if (d & kOffsetMask) {
          if ((d & kOffsetMask) % cs) return "misaligned data cluster";
          ref(d & kOffsetMask, cs);
          if (is_active) active.emplace_back((d & kOffsetMask) / cs, (d & kOflagCopied) != 0);
        }
      }
    }
  }
  // Refcount of cluster c.
  const uint64_t per_block = cs * 8 / (1u << order);
  std::vector<uint8_t> blk(cs);
  auto refcount = [&](uint64_t c) -> uint64_t {
    uint64_t ti = c / per_block;
    if (ti >= rt.size() / 8) return 0;
    uint64_t b = LoadBE64(&rt[ti * 8]);
    if (!b) return 0;
    (void)f.PRead(b, blk.data(), cs);
    uint64_t i = c % per_block;
    switch (order) {
      case 3: return blk[i];
      case 4: return LoadBE16(&blk[2 * i]);
      case 5: return LoadBE32(&blk[4 * i]);
      case 6: return LoadBE64(&blk[8 * i]);
      default: {
        uint32_t bits = 1u << order, per = 8 / bits;
        return (blk[i / per] >> ((i % per) * bits)) & ((1u << bits) - 1);
      }
    }
  };
  uint64_t leaked = 0;
  for (auto [c, n] : refs) {
    uint64_t rc = refcount(c);
    if (rc < n) return "cluster " + std::to_string(c) + " has refcount " + std::to_string(rc) + " but " +
                       std::to_string(n) + " references";
  }
  if (copied)
    for (auto [c, flag] : active)
      if ((refcount(c) == 1) != flag)
        return "OFLAG_COPIED: cluster " + std::to_string(c) + " has refcount " + std::to_string(refcount(c)) +
               (flag ? " but COPIED set" : " but COPIED clear");
  const uint64_t clusters = (f.Size() + cs - 1) / cs;
  for (uint64_t c = 0; c < clusters; ++c) {
    auto it = refs.find(c);
    if (refcount(c) > (it == refs.end() ? 0 : it->second)) ++leaked;
  }
  if (leaks) *leaks = leaked;
  return "";
}

}  // namespace imgfs::test
