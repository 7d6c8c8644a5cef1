// What the kernel says is mounted where (/proc/self/mountinfo), and the
// readahead of our own mount.
#pragma once

#include <string>

namespace imgfs::fs {

struct MountEntry {
  std::string dev;     // "major:minor"
  std::string fstype;  // "fuse.imgfs", "ext4", ...
};

// The last mount on `real_path` (canonical: no symlinks, absolute), if any.
// Reading mountinfo sends no request to a FUSE server; a stat or realpath
// of a fresh mountpoint would wait for the server's loop.
bool FindMount(const std::string& real_path, MountEntry* out);

// The kernel caps FUSE readahead at the bdi default (128 KiB), so a
// sequential reader sees 128 KiB requests however large max_read is. Raises
// the readahead of the imgfs mount on `mountpoint` to `bytes` where we may
// (root); silently does nothing otherwise.
void RaiseReadahead(const std::string& real_path, unsigned bytes);

}  // namespace imgfs::fs
