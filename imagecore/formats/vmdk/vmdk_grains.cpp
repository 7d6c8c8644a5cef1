// GrainExtent: reading (see vmdk_grains.h for the locking rules).
#include <algorithm>
#include <cstring>

#include "base/compress.h"
#include "base/endian.h"
#include "formats/vmdk/vmdk_grains.h"
#include "imagecore/mutex.h"

namespace imgfs::vmdk {

const std::vector<uint8_t>* DecodedGrains::Find(uint64_t host) {
  auto it = map_.find(host);
  if (it == map_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second.pos);
  return &it->second.data;
}

void DecodedGrains::Put(uint64_t host, std::vector<uint8_t> data) {
  if (capacity_ == 0 || map_.count(host)) return;
  if (map_.size() >= capacity_) {
    map_.erase(lru_.back());
    lru_.pop_back();
  }
  lru_.push_front(host);
  map_.emplace(host, Entry{std::move(data), lru_.begin()});
}

GrainExtent::GrainExtent(std::unique_ptr<io::File> file, Layout l, std::vector<uint64_t> gd, std::vector<uint64_t> rgd)
    : DiskExtent(l.capacity_bytes),
      file_(std::move(file)),
      l_(std::move(l)),
      gd_(std::move(gd)),
      rgd_(std::move(rgd)),
      gd_at_(l_.gd_at),
      rgd_at_(l_.rgd_at),
      next_free_((file_->Size() + 511) / 512 * 512),
      gt_cache_(size_t(l_.gt_entries) * l_.entry_bytes,
                std::clamp<size_t>(l_.cache_bytes / (size_t(l_.gt_entries) * l_.entry_bytes), 1, 256)),
      decoded_(std::min<size_t>(64, l_.cache_bytes / l_.grain_bytes)) {
  if (l_.flavor != Flavor::kHosted) return;  // read-only kinds
  MutexLock lock(mu_);
  CollectMetaLocked();
  if (!damaged_.load() && !l_.compressed) ScanTablesLocked();
}

std::vector<ImageInfo::Field> GrainExtent::Info() const {
  std::vector<ImageInfo::Field> f;
  if (l_.compressed) f.push_back(InfoBool("compressed", "compressed", true));
  f.push_back(InfoUint("virtual-size", "virtual size", bytes_));
  f.push_back(ImageInfo::Field::FileName("filename", "filename", l_.name));
  f.push_back(InfoUint("cluster-size", "cluster size", l_.grain_bytes));
  f.push_back(InfoString("format", "format", l_.type));
  return f;
}

Result<const uint8_t*> GrainExtent::TableLocked(uint64_t g) {
  const uint64_t gdi = g / l_.gt_entries;
  if (gdi >= gd_.size()) return Corrupt(file_->path() + ": grain " + std::to_string(g) + " outside the grain directory");
  const uint64_t at = gd_[gdi];
  if (!at) return static_cast<const uint8_t*>(nullptr);
  const size_t bytes = gt_cache_.table_bytes();
  if (at + bytes > next_free_) return Corrupt(file_->path() + ": grain table " + std::to_string(gdi) + " lies past the end of the file");
  auto load = [this, bytes](uint64_t o, uint8_t* buf) { return file_->PRead(o, buf, bytes); };
  IMGFS_ASSIGN_OR_RETURN(uint8_t * t, gt_cache_.Get(at, load, [this] {
        mu_.AssertHeld();  // a cache callback, under it
        return FlushLocked();
      }));
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
  // A plain grain lies whole inside the file: one that ran past its end
  // would share host bytes with the next grain allocated there.
  if (r.host >= next_free_ || (r.kind == Grain::kData && l_.grain_bytes > next_free_ - r.host))
    return Corrupt(file_->path() + ": grain " + std::to_string(g) + " lies past the end of the file");
  return r;
}

Result<Grain> GrainExtent::LookupLocked(uint64_t g) {
  IMGFS_ASSIGN_OR_RETURN(const uint8_t* t, TableLocked(g));
  return Decode(g, t);
}

Result<Grain> GrainExtent::Lookup(uint64_t g) {
  MutexLock lock(mu_);
  return LookupLocked(g);
}

Status GrainExtent::Map(uint64_t off, uint64_t len, Extent* out) {
  len = std::min(len, bytes_ - off);
  const uint64_t gb = l_.grain_bytes;
  MutexLock lock(mu_);
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
    if (size > 2 * gb + 4096 || host + 12 + size > file_->Size())
      return Corrupt(file_->path() + ": compressed grain of " + std::to_string(size) + " bytes is out of bounds");
    in.resize(size);
    IMGFS_RETURN_IF_ERROR(file_->PRead(host + 12, in.data(), size));
  } else {
    in.resize(std::min<uint64_t>(2 * gb, file_->Size() - std::min(host, file_->Size())));
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
        MutexLock lock(mu_);
        if (const auto* d = decoded_.Find(gr.host)) {
          std::memcpy(p, d->data() + in, n);
          hit = true;
        }
      }
      if (!hit) {
        std::vector<uint8_t> grain(gb);
        IMGFS_RETURN_IF_ERROR(ReadCompressed(gr.host, grain.data()));
        std::memcpy(p, grain.data() + in, n);
        MutexLock lock(mu_);
        decoded_.Put(gr.host, std::move(grain));
      }
    }
    p += n;
    off += n;
    len -= n;
  }
  return Status::OK();
}

// As qemu-img check does for vmdk: every grain must lie inside the file.
// Also, where the extent keeps a redundant directory, its tables must say
// what the primary ones say (qemu does not look; a crash between the two
// table writes of a flush can leave them apart, which reads never see).
void GrainExtent::Check(uint64_t first_sector, CheckResult* r) {
  MutexLock lock(mu_);
  Status st = FlushLocked();
  if (!st.ok()) {
    r->check_errors++;
    r->messages.push_back("ERROR: " + st.message());
    return;
  }
  const uint64_t gb = l_.grain_bytes, size = file_->Size(), bytes = gt_cache_.table_bytes();
  const uint64_t grains = (bytes_ + gb - 1) / gb;
  std::vector<uint8_t> primary(bytes), redundant(bytes);
  for (uint64_t t = 0; t < gd_.size(); ++t) {
    if (!gd_[t]) continue;
    const uint64_t sector = first_sector + t * l_.gt_entries * gb / 512;
    if (gd_[t] + bytes > size || !file_->PRead(gd_[t], primary.data(), bytes).ok()) {
      r->messages.push_back("ERROR: could not get cluster_offset for sector " + std::to_string(sector));
      r->failed = "Invalid argument";
      return;
    }
    if (t < rgd_.size() && rgd_[t] && rgd_[t] + bytes <= size && file_->PRead(rgd_[t], redundant.data(), bytes).ok() &&
        primary != redundant)
      r->messages.push_back("Warning: the redundant grain table " + std::to_string(t) + " of " + file_->path() +
                            " differs from the primary one (reads use the primary)");
    for (uint64_t i = 0; i < l_.gt_entries && t * l_.gt_entries + i < grains; ++i) {
      if (Decode(t * l_.gt_entries + i, primary.data()).ok()) continue;
      r->messages.push_back("ERROR: cluster offset for sector " + std::to_string(sector + i * gb / 512) +
                            " points after EOF");
      r->failed = "Invalid argument";  // qemu-img stops here too
      return;
    }
  }
}

}  // namespace imgfs::vmdk
