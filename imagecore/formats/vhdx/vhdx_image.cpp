#include "formats/vhdx/vhdx_image.h"

#include <algorithm>
#include <cstring>

#include "base/endian.h"
#include "formats/vhdx/vhdx_log.h"

namespace imgfs::vhdx {
namespace {

constexpr uint64_t kMaxPayloadOffset = uint64_t(1) << 56;  // far past any real file; keeps sums from wrapping

constexpr uint8_t kOldUnmapped = 5;  // UNMAPPED in the v0.95 draft: qemu reads it so

// What a block in `state` reads as, other than its own data: from below
// (only NOT_PRESENT of a differencing disk, and every such state of a disk
// without a parent, which reads zeros there), or zeros that hide the parent.
ExtentKind KindOf(uint8_t state, bool has_parent) {
  if (state == kZero) return ExtentKind::kZero;
  return !has_parent || state == kNotPresent ? ExtentKind::kUnallocated : ExtentKind::kZero;
}
bool Unstored(uint8_t state) {
  return state == kNotPresent || state == kUndefined || state == kZero || state == kUnmapped || state == kOldUnmapped;
}

// "{83EE...}" as parent_linkage stores a GUID, against `g`.
bool SameGuidText(const std::string& text, const Guid& g) {
  std::string t = text;
  if (t.size() == 38 && t.front() == '{' && t.back() == '}') t = t.substr(1, 36);
  return Guid::FromText(t.c_str()) == g && !g.zero();
}

}  // namespace

const FormatDriver& VhdxImage::driver() const { return kDriver; }

Result<std::unique_ptr<Image>> VhdxImage::Open(std::unique_ptr<io::File> file, const OpenOptions& opts) {
  std::unique_ptr<VhdxImage> img(new VhdxImage());
  img->file_ = std::move(file);
  img->writable_ = opts.writable && img->file_->writable();
  const std::string path = img->file_->path();
  char ident[8];
  IMGFS_RETURN_IF_ERROR(img->file_->PRead(0, ident, sizeof ident));
  if (std::memcmp(ident, "vhdxfile", 8)) return Corrupt(path + ": no VHDX file type identifier");
  MutexLock l(img->meta_mu_);
  Status st = img->ReadHeaders();
  if (st.ok() && !img->header_.log.zero()) {
    // Entries not yet applied: in memory first; into the file below, or
    // once the write claim is taken.
    auto replay = ReadLog(*img->file_, img->header_);
    if (!replay.ok()) return replay.status().Prefixed(path);
    if (replay.value()) {
      if (img->writable_) img->pending_ = *replay.value();
      img->replayed_ = ReplayedView(*img->file_, std::move(*replay.value()));
    }
  }
  if (st.ok()) st = img->ReadRegions();
  if (!st.ok()) return st.Prefixed(path);
  img->known_end_ = img->view().Size();
  if (img->writable_) {
    if (img->header_.log_length < kMiB) {
      img->read_only_reason_ = "it has no log to write through";
    } else if (!img->StructuresApart()) {
      img->read_only_reason_ = "its log, BAT and metadata overlap each other or the header section";
    } else {
      img->log_ = std::make_unique<LogWriter>(img->header_.log_offset, img->header_.log_length);
      // New blocks go past the file and every structure it has.
      uint64_t end = img->view().Size();
      for (uint64_t e : {img->header_.log_offset + img->header_.log_length, img->bat_offset_ + img->bat_length_,
                         img->meta_offset_ + img->meta_length_})
        end = std::max(end, e);
      img->end_ = (end + kMiB - 1) / kMiB * kMiB;
      // Not for a check (it replays as its repair) or an unclaimed open
      // (ClaimWriting replays).
      if (img->replayed_ && opts.claim && !opts.no_repair) {
        Status r = img->ReplayIntoFile();
        if (!r.ok()) return r.Prefixed(path + ": log replay");
      }
    }
  }
  return std::unique_ptr<Image>(std::move(img));
}

bool VhdxImage::StructuresApart() const {
  const std::pair<uint64_t, uint64_t> r[] = {{0, kMiB},
                                             {header_.log_offset, header_.log_length},
                                             {bat_offset_, bat_length_},
                                             {meta_offset_, meta_length_}};
  for (size_t i = 0; i < 4; ++i)
    for (size_t j = i + 1; j < 4; ++j)
      if (r[i].first < r[j].first + r[j].second && r[j].first < r[i].first + r[i].second) return false;
  return true;
}

Status VhdxImage::ReadHeaders() {
  std::vector<uint8_t> buf(kHeaderBytes);
  Result<Header> h[2] = {Corrupt(""), Corrupt("")};
  for (int i = 0; i < 2; ++i) {
    IMGFS_RETURN_IF_ERROR(file_->PRead(kHeaderOffsets[i], buf.data(), buf.size()));
    h[i] = ParseHeader(buf.data());
  }
  if (!h[0].ok() && !h[1].ok()) return Corrupt("no valid header (" + h[0].status().message() + ")");
  if (h[0].ok() && h[1].ok() && h[0].value().sequence == h[1].value().sequence) {
    // No current header, says the specification; Disk2VHD writes two
    // alike, which qemu takes, as here.
    std::vector<uint8_t> other(kHeaderBytes);
    IMGFS_RETURN_IF_ERROR(file_->PRead(kHeaderOffsets[0], other.data(), other.size()));
    if (std::memcmp(buf.data(), other.data(), 80)) return Corrupt("both headers have sequence number " + std::to_string(h[0].value().sequence));
  }
  const int cur = !h[1].ok() ? 0 : !h[0].ok() ? 1 : h[1].value().sequence > h[0].value().sequence ? 1 : 0;
  header_ = h[cur].value();
  current_slot_ = cur;
  if (header_.log_version != 0) return Unsupported("log version " + std::to_string(header_.log_version));
  if (header_.log_offset % kMiB || header_.log_length % kMiB || (header_.log_length && header_.log_offset < kMiB) ||
      header_.log_offset > kMaxPayloadOffset)
    return Corrupt("log not placed on whole MiB inside the file's reach");
  return Status::OK();
}

Status VhdxImage::ReadRegions() {
  std::vector<uint8_t> buf(kRegionTableBytes);
  Result<std::vector<Region>> table = Corrupt("");
  for (uint64_t at : kRegionTableOffsets) {
    IMGFS_RETURN_IF_ERROR(view().PRead(at, buf.data(), buf.size()));
    table = ParseRegionTable(buf.data());
    if (table.ok()) break;
  }
  if (!table.ok()) return table.status();
  const Region* bat = nullptr;
  const Region* meta = nullptr;
  for (const Region& r : table.value()) {
    if (r.id == kBatRegion) bat = &r;
    else if (r.id == kMetadataRegion) meta = &r;
    else if (r.required) return Unsupported("unknown required region " + r.id.ToText());
  }
  if (!bat || !meta) return Corrupt(std::string("no ") + (bat ? "metadata" : "BAT") + " region");
  IMGFS_ASSIGN_OR_RETURN(params_, ReadMetadata(view(), *meta));
  geometry_ = std::make_unique<BatGeometry>(params_);
  if (geometry_->entries > bat->length / 8)
    return Corrupt("BAT region of " + std::to_string(bat->length) + " bytes holds fewer than the disk's " +
                   std::to_string(geometry_->entries) + " entries");
  bat_offset_ = bat->offset;
  bat_length_ = bat->length;
  meta_offset_ = meta->offset;
  meta_length_ = meta->length;
  return Status::OK();
}

Result<uint8_t*> VhdxImage::PageLocked(uint64_t file_offset) {
  // The page asked last is still there (only a Get evicts, and every Get
  // comes through here): walks over the BAT skip the cache's lookup.
  if (last_page_ && last_page_offset_ == file_offset) return last_page_;
  const io::File& f = view();
  // No flush from here: the writer keeps few pages dirty, so a clean one
  // can always go.
  last_page_ = nullptr;
  IMGFS_ASSIGN_OR_RETURN(uint8_t * p, pages_.Get(file_offset, [&f](uint64_t off, uint8_t* buf) {
    return f.PRead(off, buf, kPageBytes);
  }, [] { return Status::OK(); }));
  last_page_ = p;
  last_page_offset_ = file_offset;
  return p;
}

Result<uint64_t> VhdxImage::BatEntryLocked(uint64_t index) {
  const uint64_t at = bat_offset_ + index * 8;
  const uint64_t page = at / kPageBytes * kPageBytes;
  IMGFS_ASSIGN_OR_RETURN(uint8_t * p, PageLocked(page));
  return LoadLE64(p + (at - page));
}

Result<std::pair<bool, uint64_t>> VhdxImage::SectorRunLocked(uint64_t block, uint64_t sector, uint64_t max) {
  IMGFS_ASSIGN_OR_RETURN(const uint64_t e, BatEntryLocked(geometry_->BitmapEntry(block)));
  if (EntryState(e) != kBitmapPresent || EntryOffset(e) < kMiB || EntryOffset(e) > kMaxPayloadOffset)
    return Corrupt("block " + std::to_string(block) + " is partly present without a sector bitmap");
  const uint64_t per_block = params_.block_size / params_.logical_sector;
  uint64_t bit = block % geometry_->chunk_ratio * per_block + sector;
  bool first = false;
  uint64_t n = 0;
  while (n < max) {
    const uint64_t at = EntryOffset(e) + bit / 8;
    const uint64_t page = at / kPageBytes * kPageBytes;
    IMGFS_ASSIGN_OR_RETURN(uint8_t * p, PageLocked(page));
    const uint8_t byte = p[at - page];
    if (n > 0 && bit % 8 == 0 && max - n >= 8 && byte == (first ? 0xff : 0x00)) {  // a whole byte alike
      n += 8;
      bit += 8;
      continue;
    }
    const bool set = (byte >> (bit % 8)) & 1;
    if (n == 0) first = set;
    else if (set != first) break;
    ++n;
    ++bit;
  }
  return std::make_pair(first, n);
}

// A stored block lies past the header section and starts inside the file
// (as qemu refuses one that does not: the image was cut short).
Status VhdxImage::CheckBlockAt(uint64_t block, uint64_t host) const {
  if (host < kMiB || host > kMaxPayloadOffset)
    return Corrupt(file_->path() + ": block " + std::to_string(block) + " at offset " + std::to_string(host));
  if (host >= known_end_.load())
    return Corrupt(file_->path() + ": block " + std::to_string(block) + " at offset " + std::to_string(host) +
                   " starts past the end of the file (cut short?)");
  return Status::OK();
}

Status VhdxImage::BlockStatus(uint64_t off, uint64_t len, Extent* out) {
  const uint64_t bs = params_.block_size;
  MutexLock l(bat_mu_);
  uint64_t block = off / bs;
  IMGFS_ASSIGN_OR_RETURN(uint64_t e, BatEntryLocked(geometry_->PayloadEntry(block)));
  const uint8_t state = EntryState(e);
  const uint64_t within = off % bs;
  uint64_t n = std::min(len, bs - within);
  *out = Extent{};
  switch (state) {
    case kFullyPresent: {
      const uint64_t host = EntryOffset(e);
      IMGFS_RETURN_IF_ERROR(CheckBlockAt(block, host));
      // Blocks that follow it in the file too make one run.
      while (n < len && (block + 1) * bs < params_.disk_size) {
        IMGFS_ASSIGN_OR_RETURN(const uint64_t next, BatEntryLocked(geometry_->PayloadEntry(block + 1)));
        if (EntryState(next) != kFullyPresent || EntryOffset(next) != host + (block + 1 - off / bs) * bs) break;
        ++block;
        n = std::min(len, n + bs);
      }
      out->kind = replayed_ && !replay_applied_.load() ? ExtentKind::kOpaque : ExtentKind::kData;
      out->file = file_.get();
      out->host_offset = host + within;
      break;
    }
    case kPartiallyPresent: {
      if (!params_.has_parent) return Corrupt("block " + std::to_string(block) + " is partly present in a disk without a parent");
      const uint64_t host = EntryOffset(e);
      IMGFS_RETURN_IF_ERROR(CheckBlockAt(block, host));
      const uint64_t ss = params_.logical_sector;
      // Sector granular: `off` and `len` may cut sectors; whole ones are asked.
      const uint64_t first = within / ss, last = (within + n + ss - 1) / ss;
      IMGFS_ASSIGN_OR_RETURN(auto run, SectorRunLocked(block, first, last - first));
      n = std::min(n, (first + run.second) * ss - within);
      if (run.first) {
        out->kind = replayed_ && !replay_applied_.load() ? ExtentKind::kOpaque : ExtentKind::kData;
        out->file = file_.get();
        out->host_offset = host + within;
      } else {
        out->kind = ExtentKind::kUnallocated;
      }
      break;
    }
    case kZero:
    case kNotPresent:
    case kUndefined:
    case kUnmapped:
    case kOldUnmapped: {
      // Runs of blocks that read alike are one answer.
      const ExtentKind kind = KindOf(state, params_.has_parent);
      while (n < len && (block + 1) * bs < params_.disk_size) {
        IMGFS_ASSIGN_OR_RETURN(const uint64_t next, BatEntryLocked(geometry_->PayloadEntry(block + 1)));
        if (!Unstored(EntryState(next)) || KindOf(EntryState(next), params_.has_parent) != kind) break;
        ++block;
        n = std::min(len, n + bs);
      }
      out->kind = kind;
      break;
    }
    default:
      return Corrupt("block " + std::to_string(block) + " has the unknown state " + std::to_string(state));
  }
  out->length = n;
  return Status::OK();
}

Status VhdxImage::ReadOpaque(uint64_t off, void* buf, size_t len) {
  auto* p = static_cast<uint8_t*>(buf);
  while (len) {
    Extent e;
    IMGFS_RETURN_IF_ERROR(BlockStatus(off, len, &e));
    if (e.kind == ExtentKind::kData || e.kind == ExtentKind::kOpaque)
      IMGFS_RETURN_IF_ERROR(view().PRead(e.host_offset, p, e.length));
    else
      std::memset(p, 0, e.length);
    off += e.length;
    p += e.length;
    len -= e.length;
  }
  return Status::OK();
}

std::optional<BackingRef> VhdxImage::Backing() const {
  if (!params_.parent) return std::nullopt;
  BackingRef ref;
  ref.format = "vhdx";
  for (const char* key : {"relative_path", "volume_path", "absolute_win32_path"}) {
    const std::string* v = params_.parent->Find(key);
    if (!v) continue;
    if (ref.name.empty()) ref.name = *v;
    else ref.alternates.push_back(*v);
  }
  return ref;
}

Status VhdxImage::CheckParent(const Image& parent) const {
  if (!params_.parent) return Status::OK();
  if (&parent.driver() != &kDriver) return Corrupt("the parent of a VHDX differencing disk is no VHDX image");
  const Guid data = static_cast<const VhdxImage&>(parent).data_write_guid();
  const std::string* link = params_.parent->Find("parent_linkage");
  const std::string* link2 = params_.parent->Find("parent_linkage2");
  if ((link && SameGuidText(*link, data)) || (link2 && SameGuidText(*link2, data))) return Status::OK();
  return Corrupt(file_->path() + ": its parent_linkage " + (link ? *link : std::string("(none)")) +
                 " is not the data write GUID of " + parent.file().path() + " ({" + data.ToText() +
                 "}): the parent changed since this disk was made on it");
}

Guid VhdxImage::data_write_guid() const {
  MutexLock l(meta_mu_);
  return header_.data_write;
}

ImageInfo VhdxImage::Info() const {
  ImageInfo info;
  info.format = "vhdx";
  info.virtual_size = params_.disk_size;
  info.cluster_size = params_.block_size;
  return info;
}

}  // namespace imgfs::vhdx
