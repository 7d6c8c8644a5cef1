// The imgfs filesystem: what `imgfs mount` and `imgfs umount` call.
#pragma once

#include <string>
#include <vector>

namespace imgfs::fs {

struct MountConfig {
  std::string source;      // a directory of images, or one image file
  std::string mountpoint;
  bool read_only = false;
  bool foreground = false;
  std::string fuse_options;  // extra -o options, comma separated
  std::string log_file;      // "" = stderr in the foreground, syslog otherwise
  unsigned threads = 0;      // FUSE worker threads; 0 = default
  std::vector<std::string> keys;  // --key IMAGE=FILE: the secret of an encrypted image
};

// Mounts and serves until unmounted or signalled. Without `foreground` it
// returns in the parent once the mount is in place. Returns an exit code;
// errors are printed as one line naming the cause.
int RunMount(const MountConfig& cfg);

// Unmounts, and waits for the daemon serving the mount to flush and exit.
int Unmount(const std::string& mountpoint);

}  // namespace imgfs::fs
