// Walks a path one component at a time from descriptors, so that what is
// judged (a symlink's owner) is what is followed: nothing can be swapped
// in between, as it could between a check of the path and an open of it.
#include "trusted_open.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <deque>
#include <vector>

namespace imgfs::io {

namespace {
constexpr int kMaxLinks = 40;  // as the kernel's

void PushFront(std::deque<std::string>& parts, const std::string& path) {
  std::vector<std::string> split;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    if (slash > start) split.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  parts.insert(parts.begin(), split.begin(), split.end());
}

// Replaces *dir by `next` (a descriptor or -1), closing the old one.
bool Step(int* dir, int next) {
  ::close(*dir);
  *dir = next;
  return next >= 0;
}
}  // namespace

int OpenThroughTrustedLinks(const std::string& path, int flags, uid_t owner, std::string* refused) {
  int dir = ::open(!path.empty() && path[0] == '/' ? "/" : ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return -1;
  std::deque<std::string> parts;
  PushFront(parts, path);
  int links = 0;
  while (!parts.empty()) {
    const std::string name = parts.front();
    parts.pop_front();
    if (name == ".") continue;
    struct stat st;
    if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) break;
    if (S_ISLNK(st.st_mode)) {
      if (st.st_uid != 0 && st.st_uid != owner) {
        *refused = path + ": the symlink " + name + " on the way belongs to uid " + std::to_string(st.st_uid) +
                   ", who may not choose what an image of uid " + std::to_string(owner) + " reads";
        ::close(dir);
        errno = EACCES;
        return -1;
      }
      std::vector<char> target(size_t(st.st_size) + 2);
      const ssize_t n = ::readlinkat(dir, name.c_str(), target.data(), target.size());
      if (n < 0 || size_t(n) >= target.size() || ++links > kMaxLinks) {
        if (n >= 0) errno = ELOOP;
        break;
      }
      const std::string to(target.data(), size_t(n));
      if (!to.empty() && to[0] == '/' && !Step(&dir, ::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC))) return -1;
      PushFront(parts, to);
      continue;
    }
    if (parts.empty()) {  // the file itself
      const int fd = ::openat(dir, name.c_str(), flags | O_NOFOLLOW);
      const int e = errno;
      ::close(dir);
      errno = e;
      return fd;
    }
    if (!Step(&dir, ::openat(dir, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC))) return -1;
  }
  const int e = errno;
  ::close(dir);
  errno = e;
  return -1;
}

}  // namespace imgfs::io
