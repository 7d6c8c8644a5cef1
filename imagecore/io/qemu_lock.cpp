// QEMU locks one byte per permission with OFD read locks (file-posix's
// lock bytes): byte 100+i while it holds permission i, byte 200+i while it
// refuses to share permission i. A claim is checked against the other
// side's bytes first (F_OFD_GETLK), then taken; QEMU does the same, so
// either side that comes second sees the first.
#include "qemu_lock.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>

namespace imgfs::io {

namespace {

constexpr off_t kPermBase = 100, kSharedBase = 200;
// Permission bits as QEMU numbers them.
constexpr int kConsistentRead = 0, kWrite = 1, kResize = 3;

const char* PermName(int bit) {
  switch (bit) {
    case kConsistentRead: return "consistent read";
    case kWrite: return "write";
    case kResize: return "resize";
  }
  return "?";
}

bool LockedByOthers(int fd, off_t byte) {
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  if (fcntl(fd, F_OFD_GETLK, &fl) != 0) return false;  // cannot tell: claim anyway
  return fl.l_type != F_UNLCK;
}

// "qemu-storage-d (pid 123)" for the process whose descriptor of the same
// file holds a lock on `byte`, found in /proc/*/fdinfo (/proc/locks shows
// OFD locks without their owner).
std::string Holder(int fd, off_t byte) {
  struct stat st;
  if (fstat(fd, &st) != 0) return "another process";
  char key[64];
  std::snprintf(key, sizeof key, " %02x:%02x:%llu ", major(st.st_dev), minor(st.st_dev),
                static_cast<unsigned long long>(st.st_ino));
  DIR* proc = opendir("/proc");
  if (!proc) return "another process";
  std::string found;
  while (dirent* p = readdir(proc)) {
    if (!std::isdigit(static_cast<unsigned char>(p->d_name[0]))) continue;
    const std::string dir = std::string("/proc/") + p->d_name + "/fdinfo";
    DIR* fds = opendir(dir.c_str());
    if (!fds) continue;
    while (dirent* f = readdir(fds)) {
      if (f->d_name[0] == '.') continue;
      std::ifstream in(dir + "/" + f->d_name);
      for (std::string line; std::getline(in, line);) {
        if (line.rfind("lock:", 0) != 0) continue;
        const auto k = line.find(key);
        if (k == std::string::npos) continue;
        long long from = -1, to = -1;
        if (std::sscanf(line.c_str() + k + std::strlen(key), "%lld %lld", &from, &to) != 2) continue;
        if (byte < from || byte > to) continue;
        // argv[0]'s base name: comm is cut at 15 characters.
        std::ifstream cmdline(std::string("/proc/") + p->d_name + "/cmdline");
        std::string name;
        std::getline(cmdline, name, '\0');
        name = name.substr(name.find_last_of('/') + 1);
        if (name.empty()) {
          std::ifstream comm(std::string("/proc/") + p->d_name + "/comm");
          std::getline(comm, name);
        }
        found = (name.empty() ? std::string("process") : name) + " (pid " + p->d_name + ")";
        break;
      }
      if (!found.empty()) break;
    }
    closedir(fds);
    if (!found.empty()) break;
  }
  closedir(proc);
  return found.empty() ? "another process" : found;
}

Status Refused(const std::string& path, const std::string& holder, const std::string& what) {
  std::string m = path + ": in use by " + holder + ", which " + what;
  if (holder.rfind("imgfs ", 0) == 0) m += "; it is mounted read-write: change it through the ctl file of that mount";
  return Busy(m);
}

}  // namespace

constexpr int kHeld[] = {kConsistentRead, kWrite, kResize};
constexpr int kUnshared[] = {kWrite, kResize};

Status CheckClaim(int fd, const std::string& path) {
  for (int bit : kHeld) {
    if (LockedByOthers(fd, kSharedBase + bit))
      return Refused(path, Holder(fd, kSharedBase + bit), std::string("does not share its ") + PermName(bit) + " permission");
  }
  for (int bit : kUnshared) {
    if (LockedByOthers(fd, kPermBase + bit))
      return Refused(path, Holder(fd, kPermBase + bit), std::string("holds its ") + PermName(bit) + " permission");
  }
  return Status::OK();
}

Status ClaimForWriting(int fd, const std::string& path) {
  IMGFS_RETURN_IF_ERROR(CheckClaim(fd, path));
  auto take = [&](off_t byte) {
    struct flock fl {};
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = byte;
    fl.l_len = 1;
    return fcntl(fd, F_OFD_SETLK, &fl) == 0 || errno == EINVAL || errno == ENOLCK;  // no locks here: go on
  };
  for (int bit : kHeld)
    if (!take(kPermBase + bit)) return Busy(path + ": cannot take QEMU's " + PermName(bit) + " lock");
  for (int bit : kUnshared)
    if (!take(kSharedBase + bit)) return Busy(path + ": cannot take QEMU's " + PermName(bit) + " lock");
  return Status::OK();
}

void DropClaim(int fd) {
  for (off_t base : {kPermBase, kSharedBase}) {
    struct flock fl {};
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = base;
    fl.l_len = 4;  // permission bits 0-3
    fcntl(fd, F_OFD_SETLK, &fl);
  }
}

}  // namespace imgfs::io
