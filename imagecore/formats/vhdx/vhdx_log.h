// VHDX's log: metadata changes are written there first, as entries of
// 4 KiB sectors, and then applied in place. Entries a crash left unapplied
// are found by their sequence numbers and replayed on the next open.
#pragma once

#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "formats/vhdx/vhdx_format.h"
#include "imagecore/file.h"

namespace imgfs::vhdx {

// What the active sequence of the log writes, in order.
struct Replay {
  struct Write {
    uint64_t offset = 0;
    uint64_t length = 0;        // a multiple of 4 KiB
    std::vector<uint8_t> data;  // empty: zeros
  };
  std::vector<Write> writes;
  uint64_t last_file_offset = 0;  // the file is at least this long afterwards
};

// The log's active sequence in `f`, as `h` names it; nullopt when there is
// nothing to replay. An error when the log is damaged or the file shorter
// than the log says it was when the entries were written.
Result<std::optional<Replay>> ReadLog(const io::File& f, const Header& h);

// Writes `replay` into `f` in order and grows it to last_file_offset; the
// caller syncs.
Status ApplyReplay(io::File& f, const Replay& replay);

// Appends entries to the log ring. Each entry is the newest of its log GUID
// and the only one a replay needs: the writer syncs the file before it
// writes one, so every earlier entry is applied and durable by then.
class LogWriter {
 public:
  LogWriter(uint64_t log_offset, uint64_t log_length) : offset_(log_offset), length_(log_length) {}
  // The longest entry it writes (half the ring: the newest entry is never
  // overwritten by the next).
  uint64_t max_entry_bytes() const { return length_ / 2 / 4096 * 4096; }
  // How many 4 KiB sectors fit in one entry.
  size_t max_sectors() const;
  // Whether the next entry of `sectors` sectors must start over at the
  // ring's front, where the newest entry may lie: the caller renews the
  // log GUID first, so that no older entry can be replayed.
  bool NeedsNewGuid(size_t sectors) const;
  // The log GUID changed: every older entry is void.
  void Restart(const Guid& guid);
  // Writes one entry holding `sectors` (file offset -> 4 KiB), for a file
  // of `file_size` bytes, durably.
  Status Write(io::File& f, const std::vector<std::pair<uint64_t, const uint8_t*>>& sectors, uint64_t file_size);

 private:
  uint64_t EntryBytes(size_t sectors) const;
  const uint64_t offset_, length_;
  Guid guid_;
  uint64_t head_ = 0;       // where the next entry goes
  uint64_t sequence_ = 0;   // of the last entry written
  uint64_t last_start_ = 0, last_end_ = 0;  // the newest entry's place ([0,0): none)
};

// `base` as it reads once `replay` is applied, without changing it:
// read-only.
std::unique_ptr<io::File> ReplayedView(const io::File& base, Replay replay);

}  // namespace imgfs::vhdx
