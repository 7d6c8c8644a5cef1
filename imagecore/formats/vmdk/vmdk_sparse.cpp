// Grain-mapped extents. Thread model: the grain directory is read at open
// and constant (read-only extents); `mu_` guards the grain-table cache and
// the cache of decoded compressed grains. Decoding runs outside the lock,
// so many threads decode grains at once.
#include "formats/vmdk/vmdk_sparse.h"

#include <cstdio>

#include <algorithm>
#include <cstring>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "base/compress.h"
#include "base/endian.h"
#include "base/table_cache.h"
#include "formats/vmdk/vmdk_descriptor.h"

namespace imgfs::vmdk {
namespace {

bool IsPow2(uint64_t x) { return x && !(x & (x - 1)); }

// How one flavour stores its tables.
enum class Flavor { kHosted, kCowd, kSeSparse };

struct Grain {
  enum Kind { kUnallocated, kZero, kData, kCompressed } kind = kUnallocated;
  uint64_t host = 0;  // byte offset in the file (kData, kCompressed)
};

struct Layout {
  Flavor flavor = Flavor::kHosted;
  uint64_t capacity_bytes = 0;
  uint64_t grain_bytes = 0;
  uint32_t gt_entries = 0;
  uint32_t entry_bytes = 4;
  bool zero_grain = false;  // hosted: entry 1 reads as zeros
  bool compressed = false;
  bool markers = false;
  // seSparse: where the grain tables and grains lie (sectors) and how many.
  uint64_t se_gt_base = 0, se_gt_count = 0, se_grain_base = 0, se_grain_count = 0;
  std::string type, name;
};

// A small LRU of decoded grains, keyed by their offset in the file.
class DecodedGrains {
 public:
  explicit DecodedGrains(size_t capacity) : capacity_(capacity) {}
  const std::vector<uint8_t>* Find(uint64_t host) {
    auto it = map_.find(host);
    if (it == map_.end()) return nullptr;
    lru_.splice(lru_.begin(), lru_, it->second.pos);
    return &it->second.data;
  }
  void Put(uint64_t host, std::vector<uint8_t> data) {
    if (map_.count(host)) return;
    if (map_.size() >= capacity_) {
      map_.erase(lru_.back());
      lru_.pop_back();
    }
    lru_.push_front(host);
    map_.emplace(host, Entry{std::move(data), lru_.begin()});
  }

 private:
  struct Entry {
    std::vector<uint8_t> data;
    std::list<uint64_t>::iterator pos;
  };
  const size_t capacity_;
  std::unordered_map<uint64_t, Entry> map_;
  std::list<uint64_t> lru_;
};

class GrainExtent final : public DiskExtent {
 public:
  GrainExtent(std::unique_ptr<io::File> file, Layout l, std::vector<uint64_t> gd)
      : DiskExtent(l.capacity_bytes),
        file_(std::move(file)),
        l_(std::move(l)),
        gd_(std::move(gd)),
        file_size_(file_->Size()),
        gt_cache_(size_t(l_.gt_entries) * l_.entry_bytes, 256),
        decoded_(std::max<size_t>(4, (8 << 20) / l_.grain_bytes)) {}

  Status Map(uint64_t off, uint64_t len, Extent* out) override;
  Status ReadOpaque(uint64_t off, void* buf, size_t len) override;
  io::File* file() const override { return file_.get(); }
  uint64_t grain_bytes() const override { return l_.grain_bytes; }
  std::vector<ImageInfo::Field> Info() const override {
    std::vector<ImageInfo::Field> f;
    if (l_.compressed) f.push_back(InfoBool("compressed", "compressed", true));
    f.push_back(InfoUint("virtual-size", "virtual size", bytes_));
    f.push_back(InfoString("filename", "filename", l_.name));
    f.push_back(InfoUint("cluster-size", "cluster size", l_.grain_bytes));
    f.push_back(InfoString("format", "format", l_.type));
    return f;
  }

 private:
  // The grain table covering grain `g`, or null where the directory has
  // none. REQUIRES: mu_.
  Result<const uint8_t*> TableLocked(uint64_t g);
  Result<Grain> Decode(uint64_t g, const uint8_t* table) const;
  Result<Grain> Lookup(uint64_t g);
  Status ReadCompressed(uint64_t host, uint8_t* out) const;

  std::unique_ptr<io::File> file_;
  const Layout l_;
  const std::vector<uint64_t> gd_;  // byte offset of each grain table, 0 = none
  const uint64_t file_size_;
  std::mutex mu_;
  TableCache gt_cache_;    // GUARDED_BY(mu_)
  DecodedGrains decoded_;  // GUARDED_BY(mu_)
};

Result<const uint8_t*> GrainExtent::TableLocked(uint64_t g) {
  const uint64_t gdi = g / l_.gt_entries;
  if (gdi >= gd_.size()) return Corrupt(file_->path() + ": grain " + std::to_string(g) + " outside the grain directory");
  const uint64_t at = gd_[gdi];
  if (!at) return static_cast<const uint8_t*>(nullptr);
  const size_t bytes = gt_cache_.table_bytes();
  if (at + bytes > file_size_) return Corrupt(file_->path() + ": grain table " + std::to_string(gdi) + " lies past the end of the file");
  auto load = [this, bytes](uint64_t o, uint8_t* buf) { return file_->PRead(o, buf, bytes); };
  IMGFS_ASSIGN_OR_RETURN(uint8_t * t, gt_cache_.Get(at, load, [] { return Status::OK(); }));
  return static_cast<const uint8_t*>(t);
}

Result<Grain> GrainExtent::Decode(uint64_t g, const uint8_t* table) const {
  Grain r;
  if (!table) return r;
  const size_t i = g % l_.gt_entries;
  if (l_.flavor == Flavor::kSeSparse) {
    const uint64_t e = LoadLE64(table + i * 8);
    switch (e >> 60) {
      case 0:
        if (e) return Corrupt(file_->path() + ": invalid seSparse grain table entry");
        return r;
      case 1:  // unmapped by the guest: zeros, as qemu reads it
      case 2: r.kind = Grain::kZero; return r;
      case 3: {
        const uint64_t idx = ((e >> 48) & 0xfff) | ((e & 0xffffffffffffULL) << 12);
        if (idx >= l_.se_grain_count) return Corrupt(file_->path() + ": seSparse grain index out of range");
        r.kind = Grain::kData;
        r.host = (l_.se_grain_base + idx * (l_.grain_bytes / 512)) * 512;
        break;
      }
      default: return Corrupt(file_->path() + ": invalid seSparse grain table entry");
    }
  } else {
    const uint32_t e = LoadLE32(table + i * 4);
    if (e == 0) return r;
    if (e == 1 && l_.zero_grain) {
      r.kind = Grain::kZero;
      return r;
    }
    r.kind = l_.compressed ? Grain::kCompressed : Grain::kData;
    r.host = uint64_t(e) * 512;
  }
  if (r.host >= file_size_)
    return Corrupt(file_->path() + ": grain " + std::to_string(g) + " lies past the end of the file");
  return r;
}

Result<Grain> GrainExtent::Lookup(uint64_t g) {
  std::lock_guard<std::mutex> lock(mu_);
  IMGFS_ASSIGN_OR_RETURN(const uint8_t* t, TableLocked(g));
  return Decode(g, t);
}

Status GrainExtent::Map(uint64_t off, uint64_t len, Extent* out) {
  len = std::min(len, bytes_ - off);
  const uint64_t gb = l_.grain_bytes;
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t pos = off;
  Grain first;
  while (pos < off + len) {
    const uint64_t g = pos / gb;
    IMGFS_ASSIGN_OR_RETURN(const uint8_t* t, TableLocked(g));
    IMGFS_ASSIGN_OR_RETURN(Grain cur, Decode(g, t));
    const uint64_t in = pos % gb;
    if (pos == off) {
      first = cur;
      if (cur.kind == Grain::kData) first.host += in;
    } else {
      // Runs continue while the kind stays and data stays contiguous.
      if (cur.kind != first.kind || cur.kind == Grain::kCompressed) break;
      if (cur.kind == Grain::kData && cur.host != first.host + (pos - off)) break;
    }
    pos += gb - in;
    if (cur.kind == Grain::kCompressed) break;  // one grain per run: they decode in parallel
    if (!t && cur.kind == Grain::kUnallocated) {
      // No table: the whole range it would cover is unallocated.
      const uint64_t span = uint64_t(l_.gt_entries) * gb;
      pos = std::max(pos, (g / l_.gt_entries + 1) * span);
    }
  }
  out->length = std::min(pos, off + len) - off;
  switch (first.kind) {
    case Grain::kUnallocated: out->kind = ExtentKind::kUnallocated; break;
    case Grain::kZero: out->kind = ExtentKind::kZero; break;
    case Grain::kCompressed: out->kind = ExtentKind::kOpaque; break;
    case Grain::kData:
      out->kind = ExtentKind::kData;
      out->file = file_.get();
      out->host_offset = first.host;
      break;
  }
  return Status::OK();
}

Status GrainExtent::ReadCompressed(uint64_t host, uint8_t* out) const {
  const uint64_t gb = l_.grain_bytes;
  std::vector<uint8_t> in;
  if (l_.markers) {
    uint8_t m[12];
    IMGFS_RETURN_IF_ERROR(file_->PRead(host, m, sizeof m));
    const uint32_t size = LoadLE32(m + 8);
    if (size == 0) return Corrupt(file_->path() + ": a metadata marker where a grain was expected");
    if (size > 2 * gb + 4096 || host + 12 + size > file_size_)
      return Corrupt(file_->path() + ": compressed grain of " + std::to_string(size) + " bytes is out of bounds");
    in.resize(size);
    IMGFS_RETURN_IF_ERROR(file_->PRead(host + 12, in.data(), size));
  } else {
    in.resize(std::min<uint64_t>(2 * gb, file_size_ - host));
    IMGFS_RETURN_IF_ERROR(file_->PRead(host, in.data(), in.size()));
  }
  size_t produced = 0;
  Status st = InflateZlib(in.data(), in.size(), out, gb, &produced);
  if (!st.ok()) return st.Prefixed(file_->path());
  std::memset(out + produced, 0, gb - produced);  // a short last grain
  return Status::OK();
}

Status GrainExtent::ReadOpaque(uint64_t off, void* buf, size_t len) {
  auto* p = static_cast<uint8_t*>(buf);
  const uint64_t gb = l_.grain_bytes;
  while (len > 0) {
    const uint64_t g = off / gb, in = off % gb;
    const size_t n = std::min<uint64_t>(len, gb - in);
    IMGFS_ASSIGN_OR_RETURN(Grain gr, Lookup(g));
    if (gr.kind == Grain::kData) {
      IMGFS_RETURN_IF_ERROR(file_->PRead(gr.host + in, p, n));
    } else if (gr.kind != Grain::kCompressed) {
      std::memset(p, 0, n);
    } else if (n == gb) {
      IMGFS_RETURN_IF_ERROR(ReadCompressed(gr.host, p));  // a whole grain: no copy kept
    } else {
      bool hit = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (const auto* d = decoded_.Find(gr.host)) {
          std::memcpy(p, d->data() + in, n);
          hit = true;
        }
      }
      if (!hit) {
        std::vector<uint8_t> grain(gb);
        IMGFS_RETURN_IF_ERROR(ReadCompressed(gr.host, grain.data()));
        std::memcpy(p, grain.data() + in, n);
        std::lock_guard<std::mutex> lock(mu_);
        decoded_.Put(gr.host, std::move(grain));
      }
    }
    p += n;
    off += n;
    len -= n;
  }
  return Status::OK();
}

// Reads a directory of `n` entries of `entry_bytes` at byte `at`, bounded
// by the file, turning each into a byte offset with `decode`.
template <typename F>
Result<std::vector<uint64_t>> ReadDirectory(const io::File& f, uint64_t at, uint64_t n, uint32_t entry_bytes,
                                            F decode) {
  if (n > kMaxGdEntries) return Corrupt(f.path() + ": grain directory of " + std::to_string(n) + " entries is too large");
  if (at > f.Size() || n * entry_bytes > f.Size() - at)
    return Corrupt(f.path() + ": grain directory lies past the end of the file (truncated image?)");
  std::vector<uint8_t> raw(n * entry_bytes);
  IMGFS_RETURN_IF_ERROR(f.PRead(at, raw.data(), raw.size()));
  std::vector<uint64_t> gd(n);
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t e = entry_bytes == 4 ? LoadLE32(&raw[i * 4]) : LoadLE64(&raw[i * 8]);
    IMGFS_ASSIGN_OR_RETURN(gd[i], decode(e));
  }
  return gd;
}

SparseHeader ParseKdmv(const uint8_t* b) {
  SparseHeader h;
  h.version = LoadLE32(b + 4);
  h.flags = LoadLE32(b + 8);
  h.capacity = LoadLE64(b + 12);
  h.grain_sectors = LoadLE64(b + 20);
  h.desc_offset = LoadLE64(b + 28);
  h.desc_sectors = LoadLE64(b + 36);
  h.gtes_per_gt = LoadLE32(b + 44);
  h.rgd_offset = LoadLE64(b + 48);
  h.gd_offset = LoadLE64(b + 56);
  h.overhead = LoadLE64(b + 64);
  h.unclean = b[72];
  h.compress = LoadLE16(b + 77);
  return h;
}

}  // namespace

bool IsKdmv(const uint8_t* head, size_t len) { return len >= 4 && !std::memcmp(head, "KDMV", 4); }
bool IsCowd(const uint8_t* head, size_t len) { return len >= 4 && !std::memcmp(head, "COWD", 4); }
bool IsSeSparse(const uint8_t* head, size_t len) {
  return len >= 8 && LoadLE64(head) == 0xcafebabeULL;
}

Result<SparseHeader> ReadSparseHeader(const io::File& file) {
  uint8_t b[512];
  IMGFS_RETURN_IF_ERROR(file.PRead(0, b, sizeof b));
  if (!IsKdmv(b, sizeof b)) return Corrupt("not a VMDK sparse extent");
  SparseHeader h = ParseKdmv(b);
  if (h.gd_offset == kGdAtEnd) {
    // A stream: the footer, two sectors before the end, holds the real header.
    const uint64_t size = file.Size();
    uint8_t tail[1536];
    if (size < 512 + sizeof tail) return Corrupt("streamOptimized image without its footer (truncated?)");
    IMGFS_RETURN_IF_ERROR(file.PRead(size - sizeof tail, tail, sizeof tail));
    const uint8_t* marker = tail;
    const uint8_t* footer = tail + 512;
    const uint8_t* eos = tail + 1024;
    static const uint8_t zeros[512] = {};
    if (LoadLE32(marker + 8) != 0 || LoadLE32(marker + 12) != 3 || !IsKdmv(footer, 512) ||
        std::memcmp(eos, zeros, 512) != 0)
      return Corrupt("streamOptimized image without its footer (truncated?)");
    h = ParseKdmv(footer);
    if (h.gd_offset == kGdAtEnd) return Corrupt("the footer does not locate the grain directory");
  }
  if (h.version < 1 || h.version > 3) return Unsupported("VMDK sparse extent version " + std::to_string(h.version));
  const uint32_t incompatible = h.flags & 0xffff0000u & ~(kFlagCompressed | kFlagMarkers);
  if (incompatible) return Unsupported("VMDK sparse extent with unknown incompatible flags 0x" + [&] {
    char s[16];
    std::snprintf(s, sizeof s, "%x", incompatible);
    return std::string(s);
  }());
  if (h.compress > 1) return Unsupported("VMDK compression algorithm " + std::to_string(h.compress));
  if (!IsPow2(h.grain_sectors) || h.grain_sectors > kMaxGrainSectors)
    return Corrupt("invalid grain size of " + std::to_string(h.grain_sectors) + " sectors");
  if (h.gtes_per_gt == 0 || h.gtes_per_gt > 65536)
    return Corrupt("invalid number of grain table entries (" + std::to_string(h.gtes_per_gt) + ")");
  if (h.capacity > kMaxCapacitySectors) return Corrupt("capacity of " + std::to_string(h.capacity) + " sectors is too large");
  if (h.desc_sectors > kMaxDescriptorBytes / 512) return Corrupt("embedded descriptor is too large");
  return h;
}

Result<std::unique_ptr<DiskExtent>> OpenHostedSparse(std::unique_ptr<io::File> file, const SparseHeader& h,
                                                     const std::string& type, const std::string& name) {
  Layout l;
  l.flavor = Flavor::kHosted;
  l.capacity_bytes = h.capacity * 512;
  l.grain_bytes = h.grain_sectors * 512;
  l.gt_entries = h.gtes_per_gt;
  l.entry_bytes = 4;
  l.zero_grain = h.version >= 2 && (h.flags & kFlagZeroGrain);
  l.compressed = h.compressed();
  l.markers = h.markers();
  l.type = type;
  l.name = name;
  const uint64_t span = uint64_t(h.gtes_per_gt) * h.grain_sectors;
  const uint64_t n = (h.capacity + span - 1) / span;
  if (h.gd_offset > file->Size() / 512) return Corrupt("grain directory lies past the end of the file (truncated image?)");
  IMGFS_ASSIGN_OR_RETURN(auto gd, ReadDirectory(*file, h.gd_offset * 512, n, 4,
                                                [](uint64_t e) -> Result<uint64_t> { return e * 512; }));
  return std::unique_ptr<DiskExtent>(new GrainExtent(std::move(file), std::move(l), std::move(gd)));
}

Result<std::unique_ptr<DiskExtent>> OpenCowd(std::unique_ptr<io::File> file, const std::string& name) {
  uint8_t b[2048];
  IMGFS_RETURN_IF_ERROR(file->PRead(0, b, sizeof b));
  if (!IsCowd(b, sizeof b)) return Corrupt("not a COWD extent");
  const uint32_t sectors = LoadLE32(b + 12), grain = LoadLE32(b + 16), gd_off = LoadLE32(b + 20), n = LoadLE32(b + 24);
  if (!IsPow2(grain) || grain > kMaxGrainSectors) return Corrupt("invalid grain size of " + std::to_string(grain) + " sectors");
  const uint64_t span = uint64_t(4096) * grain;
  if (uint64_t(n) * span < sectors) return Corrupt("COWD grain directory does not cover the capacity");
  Layout l;
  l.flavor = Flavor::kCowd;
  l.capacity_bytes = uint64_t(sectors) * 512;
  l.grain_bytes = uint64_t(grain) * 512;
  l.gt_entries = 4096;
  l.entry_bytes = 4;
  l.type = "VMFSSPARSE";
  l.name = name;
  IMGFS_ASSIGN_OR_RETURN(auto gd, ReadDirectory(*file, uint64_t(gd_off) * 512, n, 4,
                                                [](uint64_t e) -> Result<uint64_t> { return e * 512; }));
  return std::unique_ptr<DiskExtent>(new GrainExtent(std::move(file), std::move(l), std::move(gd)));
}

Result<std::unique_ptr<DiskExtent>> OpenSeSparse(std::unique_ptr<io::File> file, const std::string& name) {
  uint8_t b[512];
  IMGFS_RETURN_IF_ERROR(file->PRead(0, b, sizeof b));
  if (!IsSeSparse(b, sizeof b)) return Corrupt("not a seSparse extent");
  auto u = [&](size_t off) { return LoadLE64(b + off); };
  if (u(8) != 0x200000001ULL) return Unsupported("seSparse version 0x" + std::to_string(u(8)));
  if (u(24) != 8 || u(32) != 64) return Unsupported("seSparse with grains other than 4 KiB or tables other than 4096 entries");
  if (u(40) != 0) return Unsupported("seSparse flags " + std::to_string(u(40)));
  const uint64_t capacity = u(16);
  if (capacity > kMaxCapacitySectors) return Corrupt("capacity of " + std::to_string(capacity) + " sectors is too large");
  uint8_t v[512];
  IMGFS_RETURN_IF_ERROR(file->PRead(u(80) * 512, v, sizeof v));
  if (LoadLE64(v) != 0xcafecafeULL) return Corrupt("seSparse volatile header has a wrong magic");
  if (LoadLE64(v + 24) != 0) return Unsupported("seSparse image with a journal to replay (it was not closed cleanly)");
  Layout l;
  l.flavor = Flavor::kSeSparse;
  l.capacity_bytes = capacity * 512;
  l.grain_bytes = 4096;
  l.gt_entries = 4096;
  l.entry_bytes = 8;
  l.se_gt_base = u(144);
  l.se_gt_count = u(152) / 64;
  l.se_grain_base = u(192);
  l.se_grain_count = u(200) / 8;
  l.type = "SESPARSE";
  l.name = name;
  const uint64_t span = 4096ULL * 8;
  const uint64_t n = (capacity + span - 1) / span;
  if (u(136) * 512 / 8 < n) return Corrupt("seSparse grain directory does not cover the capacity");
  const uint64_t gt_base = l.se_gt_base, gt_count = l.se_gt_count;
  IMGFS_ASSIGN_OR_RETURN(auto gd, ReadDirectory(*file, u(128) * 512, n, 8, [=](uint64_t e) -> Result<uint64_t> {
                           if (e == 0) return uint64_t(0);
                           if ((e >> 32) != 0x10000000ULL) return Corrupt("invalid seSparse grain directory entry");
                           const uint64_t idx = e & 0xffffffffULL;
                           if (idx >= gt_count) return Corrupt("seSparse grain table index out of range");
                           return (gt_base + idx * 64) * 512;
                         }));
  return std::unique_ptr<DiskExtent>(new GrainExtent(std::move(file), std::move(l), std::move(gd)));
}

}  // namespace imgfs::vmdk
