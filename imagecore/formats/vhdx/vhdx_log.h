// VHDX's log: metadata changes are written there first, as entries of
// 4 KiB sectors, and then applied in place. Entries a crash left unapplied
// are found by their sequence numbers and replayed on the next open.
#pragma once

#include <memory>
#include <optional>
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

// `base` as it reads once `replay` is applied, without changing it:
// read-only.
std::unique_ptr<io::File> ReplayedView(const io::File& base, Replay replay);

}  // namespace imgfs::vhdx
