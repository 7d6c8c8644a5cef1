// The capabilities a root daemon keeps.
#pragma once

namespace imgfs::fs {

// Gives up, for this process and what it starts, every capability but
// those serving images needs: the file-system overrides (its users' files,
// opened with their rights by setfsuid), changing those rights, mounting
// and unmounting, and naming the process that holds a lock (/proc of
// other users). CAP_SYS_RESOURCE goes with the rest, so that quotas and
// the blocks reserved for root apply to what it writes for users. Call
// before any thread starts: capabilities are per thread. Logs a failure.
void DropUnneededCapabilities();

}  // namespace imgfs::fs
