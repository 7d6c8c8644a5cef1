// qcow2 internal snapshots: the snapshot table, and a snapshot opened as a
// read-only layer (its own L1 table and disk size, the same backing file).
#include <cstring>

#include "base/endian.h"
#include "formats/qcow2/qcow2_image.h"

namespace imgfs::qcow2 {

namespace {
constexpr uint32_t kSnapshotEntryFixed = 40;
constexpr uint32_t kMaxSnapshots = 65536;              // as qemu: more is damage
constexpr uint64_t kMaxSnapshotTableBytes = 64 << 20;  // as qemu (QCOW_MAX_SNAPSHOTS_SIZE)

// Reads a table front to back in 64 KiB pieces: a system call per piece,
// not two per entry (each snapshot view opens the image and reads it all).
class TableReader {
 public:
  explicit TableReader(io::File& file) : file_(file), file_size_(file.Size()) {}
  // The `len` bytes at `off`, valid until the next call.
  Result<const uint8_t*> At(uint64_t off, size_t len) {
    if (off >= start_ && off - start_ + len <= buf_.size()) return buf_.data() + (off - start_);
    uint64_t n = len;  // past the end of the file: fails as a plain read would
    if (off < file_size_) n = std::max<uint64_t>(len, std::min<uint64_t>(kPiece, file_size_ - off));
    buf_.resize(size_t(n));
    start_ = off;
    IMGFS_RETURN_IF_ERROR(file_.PRead(off, buf_.data(), buf_.size()));
    return buf_.data();
  }

 private:
  static constexpr uint64_t kPiece = 64 << 10;
  io::File& file_;
  const uint64_t file_size_;
  uint64_t start_ = 0;
  std::vector<uint8_t> buf_;
};
}  // namespace

Status Qcow2Image::ReadSnapshotTable(bool check_only) {
  if (header_.nb_snapshots == 0) return Status::OK();
  if (header_.nb_snapshots > kMaxSnapshots) return Corrupt("too many snapshots");
  MutexLock l(meta_mu_);  // at open: not shared yet
  // Lenient, the bound is the largest table qemu reads, not the file.
  const uint64_t file_size = check_only ? UINT64_MAX / 2 : file_->Size();
  uint64_t off = header_.snapshots_offset;
  TableReader table(*file_);
  for (uint32_t i = 0; i < header_.nb_snapshots; ++i) {
    uint8_t fixed[kSnapshotEntryFixed];
    if (off + sizeof fixed > file_size) return Corrupt("snapshot table lies past the end of the file");
    IMGFS_ASSIGN_OR_RETURN(const uint8_t* head, table.At(off, sizeof fixed));
    std::memcpy(fixed, head, sizeof fixed);
    SnapshotEntry e;
    e.l1_table_offset = LoadBE64(fixed);
    e.l1_size = LoadBE32(fixed + 8);
    const uint16_t id_len = LoadBE16(fixed + 12), name_len = LoadBE16(fixed + 14);
    e.info.date_sec = LoadBE32(fixed + 16);
    e.info.date_nsec = LoadBE32(fixed + 20);
    e.info.vm_clock_nsec = LoadBE64(fixed + 24);
    e.info.vm_state_size = LoadBE32(fixed + 32);
    const uint32_t extra_len = LoadBE32(fixed + 36);
    e.extra_len = extra_len;
    const uint64_t var_len = uint64_t(extra_len) + id_len + name_len;
    if (extra_len > 1024 || off + sizeof fixed + var_len > file_size)
      return Corrupt("snapshot table entry " + std::to_string(i) + " is damaged");
    if (off + sizeof fixed + var_len - header_.snapshots_offset > kMaxSnapshotTableBytes)
      return Corrupt("snapshot table is larger than 64 MiB");
    IMGFS_ASSIGN_OR_RETURN(const uint8_t* tail, table.At(off + sizeof fixed, size_t(var_len)));
    const std::vector<uint8_t> var(tail, tail + var_len);
    // Extra data: 64-bit VM state size, disk size, icount (each optional).
    e.info.virtual_size = header_.size;
    if (extra_len >= 8) e.info.vm_state_size = LoadBE64(&var[0]);
    if (extra_len >= 16) e.info.virtual_size = LoadBE64(&var[8]);
    if (extra_len >= 24) e.info.icount = LoadBE64(&var[16]);
    // Through data(): ids and names may be empty, and var[] with them.
    const char* strings = reinterpret_cast<const char*>(var.data()) + extra_len;
    e.info.id.assign(strings, id_len);
    e.info.name.assign(strings + id_len, name_len);
    // For a check alone (check_only), a misaligned or oversized table is kept
    // for the check to report, as qemu-img check does; nothing reads it.
    if (e.l1_table_offset % cluster_size_ && !check_only)
      return Corrupt("snapshot '" + e.info.name + "': L1 table is misaligned");
    if (uint64_t(e.l1_size) * 8 > kMaxL1Bytes && !check_only)
      return Corrupt("snapshot '" + e.info.name + "': L1 table is too large");
    if (e.l1_table_offset > file_size || uint64_t(e.l1_size) * 8 > file_size - e.l1_table_offset)
      return Corrupt("snapshot '" + e.info.name + "': L1 table is out of bounds");
    // Applying it sizes the active L1 for this disk size: bound it as the
    // header's (the largest disk a kMaxL1Bytes table maps).
    if (e.info.virtual_size > (kMaxL1Bytes / 8) << (2 * cluster_bits_ - 3))
      return Corrupt("snapshot '" + e.info.name + "': disk size is too large");
    snapshots_.push_back(std::move(e));
    off += (sizeof fixed + var_len + 7) & ~uint64_t(7);
  }
  snapshot_table_bytes_ = off - header_.snapshots_offset;
  return Status::OK();
}

std::vector<SnapshotInfo> Qcow2Image::Snapshots() const {
  MutexLock l(meta_mu_);  // snapshot -c/-d change the table while views list it
  std::vector<SnapshotInfo> out;
  for (const auto& s : snapshots_) out.push_back(s.info);
  return out;
}

Result<std::unique_ptr<Image>> Qcow2Image::OpenSnapshot(const std::string& id) const {
  MutexLock l(meta_mu_);
  for (const auto& s : snapshots_) {
    if (s.info.id != id) continue;
    // A separate descriptor: the snapshot view has its own caches and is
    // closed on its own; the file is only read.
    // The very file the image was opened from (its path may name another
    // by now).
    IMGFS_ASSIGN_OR_RETURN(auto file, file_->OpenAgain());
    Header h = header_;
    h.size = s.info.virtual_size;
    h.l1_table_offset = s.l1_table_offset;
    h.l1_size = s.l1_size;
    IMGFS_ASSIGN_OR_RETURN(auto img, Load(std::move(file), h));
    img->read_only_reason_ = "internal snapshot '" + s.info.name + "'";
    img->keyed_ = keyed_;  // the snapshot's clusters use the image's key
    img->luks_ = luks_;
    return std::unique_ptr<Image>(std::move(img));
  }
  return NotFound(file_->path() + ": no snapshot with ID " + id);
}

}  // namespace imgfs::qcow2
