// Where `imgfs umount` finds the daemon of a mount, to wait for its final
// flush: a small file named after the mountpoint, holding pid and path.
#pragma once

#include <string>
#include <sys/types.h>

namespace imgfs::fs {

// `real_mountpoint` is canonical (see mountinfo.h for why it must be
// resolved before mounting).
std::string PidFilePath(const std::string& real_mountpoint);
// The daemon's pid for `mountpoint`, or -1.
pid_t ReadPidFile(const std::string& mountpoint);

class PidFile {
 public:
  explicit PidFile(const std::string& real_mountpoint);
  ~PidFile();

 private:
  std::string path_;
};

}  // namespace imgfs::fs
