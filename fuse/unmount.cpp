// `imgfs umount`: unmount through fusermount3 (works for root and users),
// then wait until the daemon has flushed its images and exited.
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <thread>

#include "imgfs_fuse.h"
#include "pidfile.h"

namespace imgfs::fs {
namespace {

// Whether `pid` has exited: gone, or a zombie its parent has not reaped
// (kill(pid, 0) still succeeds on one).
bool Exited(pid_t pid) {
  if (kill(pid, 0) != 0 && errno == ESRCH) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const size_t paren = line.rfind(')');  // the name may hold spaces and parentheses
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
}

// Waits up to `ms` for `pid` to exit. A pidfd (taken before the unmount,
// so the number cannot be reused meanwhile) wakes at the exit itself.
bool WaitExit(pid_t pid, int pidfd, int ms) {
  if (pidfd >= 0) {
    pollfd p{pidfd, POLLIN, 0};
    int r;
    while ((r = poll(&p, 1, ms)) < 0 && errno == EINTR) {
    }
    return r > 0;
  }
  for (int i = 0; i < ms / 10; ++i) {
    if (Exited(pid)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return Exited(pid);
}

}  // namespace

int Unmount(const std::string& mountpoint) {
  const pid_t daemon = ReadPidFile(mountpoint);
  const int pidfd = daemon > 0 ? static_cast<int>(syscall(SYS_pidfd_open, daemon, 0)) : -1;
  pid_t child = fork();
  if (child < 0) {
    std::perror("imgfs: fork");
    if (pidfd >= 0) close(pidfd);
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
    if (pidfd >= 0) close(pidfd);
    return 1;
  }
  if (daemon <= 0) return 0;
  // The daemon flushes after the kernel lets go; wait for it (bounded).
  const bool exited = WaitExit(daemon, pidfd, 60000);
  if (pidfd >= 0) close(pidfd);
  if (exited) return 0;
  std::fprintf(stderr, "imgfs: %s unmounted, but daemon %d has not exited after 60 s\n", mountpoint.c_str(),
               static_cast<int>(daemon));
  return 1;
}

}  // namespace imgfs::fs
