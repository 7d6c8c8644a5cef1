// qcow2: opening an image, what it refuses, and what `info` shows.
#include <algorithm>
#include <cstring>

#include "base/endian.h"
#include "formats/qcow2/qcow2_driver.h"
#include "formats/qcow2/qcow2_image.h"
#include "imagecore/log.h"
#include "imagecore/mutex.h"

namespace imgfs::qcow2 {

namespace {
size_t TablesFor(size_t budget_bytes, uint64_t cluster_size) {
  size_t n = budget_bytes / cluster_size;
  return n < 4 ? 4 : n;
}
}  // namespace

Qcow2Image::Qcow2Image(std::unique_ptr<io::File> file, Header h)
    : file_(std::move(file)),
      header_(std::move(h)),
      cluster_bits_(header_.cluster_bits),
      cluster_size_(header_.cluster_size()),
      extended_l2_((header_.incompatible_features & kIncompatExtendedL2) != 0),
      entry_bytes_(extended_l2_ ? 16 : 8),
      l2_entries_(header_.cluster_size() / entry_bytes_),
      refblock_entries_(header_.cluster_size() * 8 / header_.refcount_bits()),
      // Bounded per image: 8 MiB of L2 tables maps 64 GiB at 64 KiB clusters.
      l2_cache_(header_.cluster_size(), TablesFor(8 << 20, header_.cluster_size())),
      refblock_cache_(header_.cluster_size(), TablesFor(2 << 20, header_.cluster_size())) {}

Qcow2Image::~Qcow2Image() {
  if (!file_->writable() || read_only()) return;
  Status st = Flush();
  if (!st.ok()) Log(LogLevel::kError, file_->path() + ": flush at close failed: " + st.ToString());
  MutexLock l(meta_mu_);
  if (st.ok() && !damaged_.load()) st = StoreTrackedBitmapsLocked();
  if (!st.ok()) Log(LogLevel::kError, file_->path() + ": dirty bitmaps left in use: " + st.ToString());
  if (st.ok() && !damaged_.load() && write_prepared_) st = TrimTailLocked();
  if (!st.ok()) Log(LogLevel::kWarning, file_->path() + ": free clusters at the end not trimmed: " + st.ToString());
}

// What in the header makes qemu misread or refuse the image, though imgfs
// can read it: such an image is never written.
std::string Qcow2Image::DamagedHeaderReason() const {
  // qemu never makes one; it reads the disk as the size rounded down (as
  // VirtualSize does) and cannot then read bitmaps written for it.
  if (header_.size % 512)
    return "its virtual size field (" + std::to_string(header_.size) + " bytes) is not a multiple of 512";
  if (std::string bad = BitmapsProblem(); !bad.empty()) return bad + " (qemu cannot open it)";
  if ((header_.autoclear_features & kAutoclearDataFileRaw) && !(header_.incompatible_features & kIncompatDataFile))
    return "data-file-raw requires a data file (qemu cannot open it; 'imgfs check -r all' clears the bit)";
  return "";
}

// An image left dirty (lazy refcounts, then a crash) gets its refcounts
// rebuilt before it is written, as qemu does at a read-write open.
void Qcow2Image::RepairIfLeftDirty() {
  uint64_t features;
  {
    MutexLock l(meta_mu_);
    features = header_.incompatible_features;
  }
  if (!file_->writable() || !(features & kIncompatDirty) || (features & kIncompatCorrupt)) return;
  auto fixed = Check(RepairMode::kAll);
  if (fixed.ok() && !fixed->corruptions && !fixed->leaks)
    Log(LogLevel::kWarning, file_->path() + ": was left dirty; refcounts repaired (" +
                                std::to_string(fixed->corruptions_fixed) + " errors, " +
                                std::to_string(fixed->leaks_fixed) + " leaks fixed)");
  else
    Log(LogLevel::kError, file_->path() + ": was left dirty and could not be repaired: " +
                              (fixed.ok() ? "errors remain" : fixed.status().message()));
}

// An image opened without the claim (OpenOptions::claim) was not
// repaired at open: it is now, before anything else writes it.
Status Qcow2Image::ClaimWriting() {
  IMGFS_RETURN_IF_ERROR(Image::ClaimWriting());
  RepairIfLeftDirty();
  return Status::OK();
}

Result<std::unique_ptr<Image>> Qcow2Image::Open(std::unique_ptr<io::File> file, const OpenOptions& opts) {
  IMGFS_ASSIGN_OR_RETURN(Header h, Header::Read(*file));
  uint64_t unknown = h.incompatible_features & ~kIncompatKnown;
  if (unknown) {
    char hex[32];
    std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(unknown));
    return Unsupported(std::string("unknown incompatible feature bits ") + hex);
  }
  if (h.compression_type > 1)
    return Unsupported("compression type " + std::to_string(h.compression_type));
  if (h.compression_type != 0 && !(h.incompatible_features & kIncompatCompression))
    return Corrupt("compression type set without its incompatible feature bit");

  const uint64_t cs = h.cluster_size();
  const uint64_t file_size = file->Size();
  const bool lenient = opts.check_only && !opts.writable;
  if (lenient) {
    // Read as zeros (io::File::PRead), reported by the check.
  } else if (h.refcount_table_offset == 0) {
    return Corrupt("refcount table offset is invalid");
  } else if (h.l1_size && h.l1_table_offset + uint64_t(h.l1_size) * 8 > file_size)
    return Corrupt("L1 table lies past the end of the file (truncated image?)");
  else if (h.refcount_table_offset + (uint64_t(h.refcount_table_clusters) << h.cluster_bits) > file_size + cs)
    return Corrupt("refcount table lies past the end of the file (truncated image?)");

  IMGFS_ASSIGN_OR_RETURN(auto img, Load(std::move(file), h));
  IMGFS_RETURN_IF_ERROR(img->SetUpCrypto());
  IMGFS_RETURN_IF_ERROR(img->ReadSnapshotTable(lenient));
  if (h.incompatible_features & kIncompatDataFile) {
    if (h.data_file.empty()) return Unsupported("external data file without a file name in the image");
    if (h.nb_snapshots) return Corrupt("internal snapshots with an external data file");
    // The name resolves like a backing file's: against the image's directory.
    auto df = opts.OpenNamed(img->file_->path(), h.data_file, opts.writable && img->file_->writable());
    if (!df.ok()) return df.status().Prefixed("external data file");
    img->data_file_ = std::move(df).value();
  }
  if (opts.writable && !opts.no_repair) img->RepairIfLeftDirty();
  // Opened without the claim, a dirty image is repaired when it is claimed
  // (ClaimWriting), before its first write: not read-only for that.
  if (opts.writable && !opts.claim && img->file_->writable() && (h.incompatible_features & kIncompatDirty) &&
      !(h.incompatible_features & kIncompatCorrupt))
    img->read_only_reason_ = img->DamagedHeaderReason();
  if (opts.writable && !opts.no_repair && img->read_only())
    Log(LogLevel::kWarning, img->file_->path() + ": served read-only: " + img->read_only_reason_);
  return std::unique_ptr<Image>(std::move(img));
}

Result<std::unique_ptr<Qcow2Image>> Qcow2Image::Load(std::unique_ptr<io::File> file, Header h) {
  std::unique_ptr<Qcow2Image> img(new Qcow2Image(std::move(file), h));
  MutexLock l(img->meta_mu_);  // not shared yet: for the analysis
  img->l1_.resize(h.l1_size);
  if (h.l1_size) {
    std::vector<uint8_t> raw(uint64_t(h.l1_size) * 8);
    IMGFS_RETURN_IF_ERROR(img->file_->PRead(h.l1_table_offset, raw.data(), raw.size()));
    for (uint32_t i = 0; i < h.l1_size; ++i) img->l1_[i] = LoadBE64(&raw[i * 8]);
  }
  std::string& why = img->read_only_reason_;
  if (!img->file_->writable()) why = "opened read-only";
  else if (h.incompatible_features & kIncompatCorrupt) why = "the image is marked corrupt";
  else if (h.incompatible_features & kIncompatDirty)
    why = "the dirty bit is set (refcounts may be stale after a crash; repair with 'qemu-img check -r all')";
  else
    why = img->DamagedHeaderReason();
  return img;
}

std::optional<BackingRef> Qcow2Image::Backing() const {
  if (header_.backing_file.empty()) return std::nullopt;
  return BackingRef{.name = header_.backing_file, .format = header_.backing_format};
}

ImageInfo Qcow2Image::Info() const {
  ImageInfo info;
  info.format = "qcow2";
  info.virtual_size = VirtualSize();
  info.cluster_size = cluster_size_;
  info.dirty = (header_.incompatible_features & kIncompatDirty) != 0;
  info.corrupt = (header_.incompatible_features & kIncompatCorrupt) != 0;
  info.encrypted = encrypted();
  using F = ImageInfo::Field;
  auto str = [&](const char* k, const char* h, std::string v) { info.specific.push_back(F::Str(k, h, std::move(v))); };
  auto boolean = [&](const char* k, const char* h, bool v) { info.specific.push_back(F::Bool(k, h, v)); };
  auto integer = [&](const char* k, const char* h, int64_t v) { info.specific.push_back(F::Int(k, h, v)); };
  const bool v3 = header_.version >= 3;
  // Bitmaps count only while the extension is marked consistent.
  auto dir = ReadBitmapDirectory();
  if (dir.ok()) {
    for (const BitmapDirEntry& e : ParseBitmapDirectory(dir.value(), header_.nb_bitmaps)) {
      ImageInfo::Bitmap b;
      b.name = e.name;
      b.granularity = 1ull << std::min<uint32_t>(e.granularity_bits, 63);
      if (e.flags & kBitmapInUse) b.flags.push_back("in-use");
      if (e.flags & kBitmapAuto) b.flags.push_back("auto");
      info.bitmaps.push_back(std::move(b));
    }
  }
  str("compat", "compat", v3 ? "1.1" : "0.10");
  str("compression-type", "compression type", header_.compression_type == 1 ? "zstd" : "zlib");
  if (v3) {
    boolean("lazy-refcounts", "lazy refcounts", header_.compatible_features & kCompatLazyRefcounts);
    info.specific.push_back(F::BitmapsHere());  // where qemu-img shows them
  }
  integer("refcount-bits", "refcount bits", header_.refcount_bits());
  if (encrypted()) info.specific.push_back(CryptoInfo());
  if (!header_.data_file.empty()) {
    str("data-file", "data file", header_.data_file);
    boolean("data-file-raw", "data file raw", header_.autoclear_features & kAutoclearDataFileRaw);
  }
  if (v3) {
    boolean("corrupt", "corrupt", header_.incompatible_features & kIncompatCorrupt);
    boolean("extended-l2", "extended l2", header_.incompatible_features & kIncompatExtendedL2);
  }
  return info;
}

Status Qcow2Image::Flush() {
  if (!file_->writable() || read_only()) return Status::OK();
  {
    MutexLock l(meta_mu_);
    if (!write_prepared_) return Status::OK();  // never written: nothing to sync
    IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(/*apply_releases=*/true));
    ReleaseQuarantineLocked();  // freed space goes back to the host
  }
  if (data_file_) IMGFS_RETURN_IF_ERROR(data_file_->Sync());
  return file_->Sync();
}

namespace {
int Probe(const io::File&, const uint8_t* head, size_t len) {
  return len >= 4 && LoadBE32(head) == kMagic ? 100 : 0;
}
Result<std::vector<NamedFile>> Members(const io::File& file) {
  IMGFS_ASSIGN_OR_RETURN(Header h, Header::Read(file));
  if (!(h.incompatible_features & kIncompatDataFile) || h.data_file.empty()) return std::vector<NamedFile>{};
  return std::vector<NamedFile>{{h.data_file, FileRole::kDataFile}};
}
constexpr const char* kCreateOptions =
    "  cluster_size=<size>    - 512 to 2M, a power of two (default 64k)\n"
    "  compat=<str>           - 0.10 or 1.1 (default 1.1)\n"
    "  lazy_refcounts=<bool>  - postpone refcount updates (compat=1.1)\n"
    "  refcount_bits=<num>    - 1 to 64, a power of two (default 16)\n"
    "  preallocation=<str>    - off (default), metadata, falloc or full\n"
    "  compression_type=<str> - zlib (default) or zstd: for compressed clusters (compat=1.1)\n"
    "  extended_l2=<bool>     - 32 subclusters per cluster (compat=1.1, clusters of 16k or more)\n"
    "  data_file=<str>        - keep the guest data in this file, beside the image (compat=1.1)\n"
    "  data_file_raw=<bool>   - keep that file a raw image of the disk at all times\n";
constexpr const char* kAmendOptions =
    "  compat=<str>           - compatibility level (v2 [0.10] or v3 [1.1]); a downgrade expands zero\n"
    "                           clusters and removes bitmaps\n"
    "  data_file=<str>        - the name of the external data file (of an image that has one)\n"
    "  data_file_raw=<bool>   - shown for completeness: it cannot change on an existing image\n"
    "  lazy_refcounts=<bool>  - postpone refcount updates (on, off; needs compat=1.1)\n"
    "  refcount_bits=<num>    - width of a refcount entry (1 to 64, a power of two; not 16 needs compat=1.1)\n";
}  // namespace

const FormatDriver kDriver = {
    .name = "qcow2",
    .probe = Probe,
    .open = Qcow2Image::Open,
    .create = CreateImage,
    .create_files = CreateFiles,
    .members = Members,
    .measure = Measure,
    .create_options = kCreateOptions,
    .amend_options = kAmendOptions,
    .caps = {.backing = true,
             .internal_snapshots = true,
             .bitmaps = true,
             .change_backing = true,
             .resize = true,
             .compressed_writes = true,
             .several_files = true},  // an external data file
};

const FormatDriver& Qcow2Image::driver() const { return kDriver; }

}  // namespace imgfs::qcow2
