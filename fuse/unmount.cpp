// `imgfs umount`: unmount through fusermount3 (works for root and users),
// then wait until the daemon has flushed its images and exited.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <thread>

#include "imgfs_fuse.h"
#include "pidfile.h"

namespace imgfs::fs {

int Unmount(const std::string& mountpoint) {
  const pid_t daemon = ReadPidFile(mountpoint);
  pid_t child = fork();
  if (child < 0) {
    std::perror("imgfs: fork");
    return 1;
  }
  if (child == 0) {
    execlp("fusermount3", "fusermount3", "-u", mountpoint.c_str(), static_cast<char*>(nullptr));
    std::fprintf(stderr, "imgfs: cannot run fusermount3: %s\n", std::strerror(errno));
    _exit(127);
  }
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "imgfs: could not unmount %s\n", mountpoint.c_str());
    return 1;
  }
  if (daemon <= 0) return 0;
  // The daemon flushes after the kernel lets go; wait for it (bounded).
  for (int i = 0; i < 6000; ++i) {
    if (kill(daemon, 0) != 0 && errno == ESRCH) return 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::fprintf(stderr, "imgfs: %s unmounted, but daemon %d has not exited after 60 s\n", mountpoint.c_str(),
               static_cast<int>(daemon));
  return 1;
}

}  // namespace imgfs::fs
