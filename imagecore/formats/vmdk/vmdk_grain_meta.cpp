// GrainExtent: where the metadata lies, so that no grain write lands on
// it. A grain-table entry may point anywhere in the file; one that points
// at the header, the descriptor, a directory or a table would make an
// ordinary write change other guest data, or the mapping itself.
#include <algorithm>
#include <iterator>
#include <vector>

#include "base/endian.h"
#include "formats/vmdk/vmdk_grains.h"
#include "imagecore/log.h"
#include "imagecore/mutex.h"

namespace imgfs::vmdk {

namespace {
// Tables read at open to look for grains over metadata: 1 MiB of them
// (16 GiB of disk with qemu's defaults). Larger extents are checked at
// each write, before it is issued.
constexpr uint64_t kScanTableBytes = 1 << 20;
}  // namespace

void MetaRanges::Add(uint64_t at, uint64_t len) {
  if (!len) return;
  uint64_t start = at, end = len > UINT64_MAX - at ? UINT64_MAX : at + len;
  auto it = ends_.upper_bound(start);
  if (it != ends_.begin() && std::prev(it)->second >= start) --it;
  while (it != ends_.end() && it->first <= end) {
    start = std::min(start, it->first);
    end = std::max(end, it->second);
    it = ends_.erase(it);
  }
  ends_[start] = end;
}

bool MetaRanges::Hits(uint64_t at, uint64_t len) const {
  if (!len) return false;
  auto it = ends_.upper_bound(at);
  if (it != ends_.begin() && std::prev(it)->second > at) return true;
  return it != ends_.end() && it->first - at < len;
}

Status GrainExtent::DamagedLocked(const std::string& why) {
  if (!damaged_.load()) {
    damage_ = why;
    damaged_.store(true);
    Log(LogLevel::kError, file_->path() + ": " + why + "; it takes no more writes");
    if (note_) note_->Note(file_->path() + ": " + why);
  }
  return Corrupt(file_->path() + ": " + why);
}

void GrainExtent::ReportDamageTo(std::shared_ptr<DamageNote> note) {
  MutexLock lock(mu_);
  note_ = std::move(note);
  if (damaged_.load()) note_->Note(file_->path() + ": " + damage_);
}

void GrainExtent::CollectMetaLocked() {
  const uint64_t size = file_->Size();
  const uint64_t table = uint64_t(l_.gt_entries) * l_.entry_bytes;
  const uint64_t dir_bytes = (gd_.size() * 4 + 511) / 512 * 512;
  meta_.Add(0, 512);
  meta_.Add(l_.desc_at, l_.desc_bytes);
  meta_.Add(gd_at_, dir_bytes);
  if (rgd_at_) meta_.Add(rgd_at_, dir_bytes);
  for (const std::vector<uint64_t>* dir : {&gd_, &rgd_})
    for (size_t i = 0; i < dir->size(); ++i) {
      const uint64_t at = (*dir)[i];
      if (!at) continue;
      if (at + table > size || meta_.Hits(at, table)) {
        (void)DamagedLocked("grain table " + std::to_string(i) +
                            " lies outside the file or over the header, the descriptor, a grain directory or another grain table");
        return;
      }
      meta_.Add(at, table);
    }
  if (l_.overhead_bytes <= size) meta_.Add(0, l_.overhead_bytes);
}

void GrainExtent::ScanTablesLocked() {
  const uint64_t table = uint64_t(l_.gt_entries) * l_.entry_bytes;
  uint64_t tables = 0;
  for (uint64_t at : gd_) tables += at != 0;
  if (tables * table > kScanTableBytes) return;
  std::vector<uint8_t> t(table);
  for (uint64_t gdi = 0; gdi < gd_.size(); ++gdi) {
    if (!gd_[gdi] || !file_->PRead(gd_[gdi], t.data(), t.size()).ok()) continue;
    for (uint64_t i = 0; i < l_.gt_entries; ++i) {
      const uint32_t e = LoadLE32(&t[i * 4]);
      if (e == 0 || (e == 1 && l_.zero_grain)) continue;
      if (!CheckGrainLocked(gdi * l_.gt_entries + i, uint64_t(e) * 512).ok()) return;
    }
  }
}

Status GrainExtent::CheckGrainLocked(uint64_t g, uint64_t host) {
  if (!meta_.Hits(host, l_.grain_bytes)) return Status::OK();
  return DamagedLocked("grain " + std::to_string(g) + " (at byte " + std::to_string(host) +
                       ") lies over the header, the descriptor, a grain directory or a grain table");
}

}  // namespace imgfs::vmdk
