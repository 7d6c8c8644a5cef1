// The POSIX implementation of io::File: the one place imagecore reads errno.
#include <dirent.h>
#include <fcntl.h>
#include <climits>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "imagecore/file.h"
#include "qemu_lock.h"
#include "trusted_open.h"

namespace imgfs::io {
namespace {

FileStat FromStat(const struct stat& st) {
  FileStat fs;
  fs.is_dir = S_ISDIR(st.st_mode);
  fs.is_regular = S_ISREG(st.st_mode);
  fs.is_block = S_ISBLK(st.st_mode);
  fs.is_symlink = S_ISLNK(st.st_mode);
  fs.mode = st.st_mode;
  fs.uid = st.st_uid;
  fs.gid = st.st_gid;
  fs.size = static_cast<uint64_t>(st.st_size);
  fs.allocated = static_cast<uint64_t>(st.st_blocks) * 512;
  fs.atime = st.st_atim;
  fs.mtime = st.st_mtim;
  fs.ctime = st.st_ctim;
  fs.dev = st.st_dev;
  fs.ino = st.st_ino;
  return fs;
}

class PosixFile final : public File {
 public:
  PosixFile(std::string path, int fd, bool writable, uint64_t size)
      : File(std::move(path)), fd_(fd), writable_(writable), size_(size) {}
  ~PosixFile() override { ::close(fd_); }

  Status PRead(uint64_t off, void* buf, size_t n) const override {
    auto* p = static_cast<char*>(buf);
    while (n > 0) {
      ssize_t r = ::pread(fd_, p, n, static_cast<off_t>(off));
      if (r < 0) {
        if (errno == EINTR) continue;
        return IoError("read " + path() + " at " + std::to_string(off), errno);
      }
      if (r == 0) {  // past EOF: the rest reads as zeros
        std::memset(p, 0, n);
        return Status::OK();
      }
      p += r;
      off += static_cast<uint64_t>(r);
      n -= static_cast<size_t>(r);
    }
    return Status::OK();
  }

  Status PWrite(uint64_t off, const void* buf, size_t n) override {
    const auto* p = static_cast<const char*>(buf);
    const uint64_t end = off + n;
    while (n > 0) {
      ssize_t r = ::pwrite(fd_, p, n, static_cast<off_t>(off));
      if (r < 0) {
        if (errno == EINTR) continue;
        return IoError("write " + path() + " at " + std::to_string(off), errno);
      }
      p += r;
      off += static_cast<uint64_t>(r);
      n -= static_cast<size_t>(r);
    }
    uint64_t cur = size_.load(std::memory_order_relaxed);
    while (end > cur && !size_.compare_exchange_weak(cur, end)) {
    }
    return Status::OK();
  }

  Status PWriteV(uint64_t off, const Piece* pieces, size_t count) override {
    std::vector<struct iovec> iov;
    uint64_t total = 0;
    for (size_t i = 0; i < count; ++i) {
      if (!pieces[i].len) continue;
      iov.push_back({const_cast<void*>(pieces[i].data), pieces[i].len});
      total += pieces[i].len;
    }
    size_t first = 0;
    uint64_t pos = off;
    while (first < iov.size()) {
      ssize_t r = ::pwritev(fd_, &iov[first], static_cast<int>(std::min<size_t>(iov.size() - first, IOV_MAX)),
                            static_cast<off_t>(pos));
      if (r < 0) {
        if (errno == EINTR) continue;
        return IoError("write " + path() + " at " + std::to_string(pos), errno);
      }
      pos += static_cast<uint64_t>(r);
      size_t done = static_cast<size_t>(r);
      while (first < iov.size() && done >= iov[first].iov_len) done -= iov[first++].iov_len;
      if (first < iov.size()) {
        iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + done;
        iov[first].iov_len -= done;
      }
    }
    const uint64_t end = off + total;
    uint64_t cur = size_.load(std::memory_order_relaxed);
    while (end > cur && !size_.compare_exchange_weak(cur, end)) {
    }
    return Status::OK();
  }

  uint64_t Size() const override { return size_.load(std::memory_order_relaxed); }

  Status Truncate(uint64_t size) override {
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0)
      return IoError("truncate " + path(), errno);
    size_.store(size);
    return Status::OK();
  }

  Status Deallocate(uint64_t off, uint64_t n) override {
    if (n == 0) return Status::OK();
    if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                    static_cast<off_t>(n)) == 0)
      return Status::OK();
    if (errno != EOPNOTSUPP && errno != ENOSYS) return IoError("punch hole in " + path(), errno);
    return File::Deallocate(off, n);  // the host cannot: write zeros
  }

  void Discard(uint64_t off, uint64_t n) override {
    if (n) (void)::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                             static_cast<off_t>(n));
  }

  Status Allocate(uint64_t off, uint64_t n) override {
    if (n == 0) return Status::OK();
    if (::fallocate(fd_, 0, static_cast<off_t>(off), static_cast<off_t>(n)) == 0) return Status::OK();
    return IoError("Could not preallocate data for " + path(), errno);
  }

  Status ClaimForWriting() override { return io::ClaimForWriting(fd_, path()); }
  Status CheckClaim() const override { return io::CheckClaim(fd_, path()); }
  void DropClaim() override { io::DropClaim(fd_); }

  void WillNeed(uint64_t off, uint64_t n) const override {
    ::posix_fadvise(fd_, static_cast<off_t>(off), static_cast<off_t>(n), POSIX_FADV_WILLNEED);
  }

  void StartWriteback(uint64_t off, uint64_t n) override {
    ::sync_file_range(fd_, static_cast<off_t>(off), static_cast<off_t>(n), SYNC_FILE_RANGE_WRITE);
  }

  Status Sync() override {
    if (::fdatasync(fd_) != 0) return IoError("fdatasync " + path(), errno);
    return Status::OK();
  }

  uint64_t AllocatedBytes() const override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return 0;
    return static_cast<uint64_t>(st.st_blocks) * 512;
  }

  uint64_t Seek(uint64_t off, bool want_data) const override {
    const uint64_t size = Size();
    if (off >= size) return size;
    off_t r = ::lseek(fd_, static_cast<off_t>(off), want_data ? SEEK_DATA : SEEK_HOLE);
    if (r < 0) {
      // ENXIO: no more data after off. Anything else: the file system
      // cannot tell, so everything is data.
      if (errno == ENXIO) return size;
      return want_data ? off : size;
    }
    return std::min<uint64_t>(static_cast<uint64_t>(r), size);
  }

  Result<FileStat> Stat() const override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return IoError("stat " + path(), errno);
    return FromStat(st);
  }

  int fd() const override { return fd_; }
  bool writable() const override { return writable_; }

 private:
  const int fd_;
  const bool writable_;
  std::atomic<uint64_t> size_;  // tracked so callers need no fstat per read
};

Result<std::unique_ptr<File>> Wrap(const std::string& path, int fd, bool writable) {
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return IoError("stat " + path, e);
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return InvalidArgument(path + ": is a directory");
  }
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    ::close(fd);
    return InvalidArgument(path + ": not a regular file or block device");
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (S_ISBLK(st.st_mode)) {
    off_t end = ::lseek(fd, 0, SEEK_END);
    size = end > 0 ? static_cast<uint64_t>(end) : 0;
  }
  return std::unique_ptr<File>(new PosixFile(path, fd, writable, size));
}

}  // namespace

Result<std::unique_ptr<File>> OpenPosixFile(const std::string& path, bool writable, const Access& as) {
  // O_NONBLOCK: a FIFO or a device named as an image must not hang the
  // open; such files are refused in Wrap, and the flag is cleared there
  // for what is kept.
  int fd;
  {
    ScopedAccess scope(as);
    if (!scope.ok()) return IoError("open " + path + " as " + as.who(), EPERM);
    const int flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
    if (as.trusted_links_only && !as.pinned) {
      std::string refused;
      fd = OpenThroughTrustedLinks(path, flags, as.link_owner, &refused);
      if (!refused.empty()) return Status(Code::kIoError, refused, EACCES);
    } else {
      fd = ::open(path.c_str(), flags | (as.pinned ? O_NOFOLLOW : 0));
    }
  }
  if (as.pinned && (fd >= 0 || errno == ELOOP)) {
    // Judge the file opened, not the one looked at before.
    struct stat st;
    if (fd < 0 || ::fstat(fd, &st) != 0 || st.st_dev != as.dev || st.st_ino != as.ino) {
      if (fd >= 0) ::close(fd);
      return Status(Code::kIoError, path + ": replaced while it was being opened", ESTALE);
    }
  }
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT) return Status(Code::kNotFound, path + ": No such file or directory", e);
    if (as.as_user && (e == EACCES || e == EPERM))
      return Status(Code::kIoError, "open " + path + ": " + std::strerror(e) + " (as its owner, " + as.who() + ")", e);
    return IoError("open " + path, e);
  }
  auto file = Wrap(path, fd, writable);
  if (file.ok()) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return file;
}

Result<std::unique_ptr<File>> CreatePosixFile(const std::string& path, mode_t mode, const Access& as) {
  int fd;
  {
    ScopedAccess scope(as);
    if (!scope.ok()) return IoError("create " + path + " as " + as.who(), EPERM);
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  }
  if (fd < 0) return IoError("create " + path + (as.as_user ? " as " + as.who() : std::string()), errno);
  return Wrap(path, fd, true);
}

namespace {
std::string DirOf(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}
}  // namespace

Result<std::unique_ptr<File>> CreateUnnamedPosixFile(const std::string& beside, mode_t mode, const Access& as) {
  const std::string dir = DirOf(beside);
  int fd;
  {
    ScopedAccess scope(as);
    if (!scope.ok()) return IoError("create in " + dir + " as " + as.who(), EPERM);
    fd = ::open(dir.c_str(), O_RDWR | O_TMPFILE | O_CLOEXEC, mode);
  }
  if (fd < 0) {
    const int e = errno;
    if (e == EOPNOTSUPP || e == EISDIR || e == EINVAL) return Unsupported(dir + ": no unnamed files here");
    return IoError("create in " + dir, e);
  }
  return Wrap(beside, fd, true);
}

Result<std::unique_ptr<File>> ReopenPosixFile(const File& file, bool writable) {
  const std::string self = "/proc/self/fd/" + std::to_string(file.fd());
  const int fd = ::open(self.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return IoError("open " + file.path() + " again", errno);
  return Wrap(file.path(), fd, writable);
}

Status LinkUnnamed(const File& file, const std::string& path) {
  // Through /proc: linkat(AT_EMPTY_PATH) would need CAP_DAC_READ_SEARCH.
  const std::string self = "/proc/self/fd/" + std::to_string(file.fd());
  if (::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW) != 0)
    return IoError("link " + path, errno);
  return Status::OK();
}

Status RenameFile(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) return IoError("rename " + from + " to " + to, errno);
  // The new name itself is durable once its directory is synced.
  const std::string dir = DirOf(to);
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  return Status::OK();
}

void RemoveFile(const std::string& path) { ::unlink(path.c_str()); }

Result<FileStat> StatPath(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    int e = errno;
    if (e == ENOENT) return Status(Code::kNotFound, path + ": No such file or directory", e);
    return IoError("stat " + path, e);
  }
  return FromStat(st);
}

Result<FileStat> LinkStatPath(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    int e = errno;
    if (e == ENOENT) return Status(Code::kNotFound, path + ": No such file or directory", e);
    return IoError("stat " + path, e);
  }
  return FromStat(st);
}

Result<std::vector<std::string>> ListDir(const std::string& path) {
  DIR* d = ::opendir(path.c_str());
  if (!d) return IoError("open directory " + path, errno);
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    if (!std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..")) continue;
    names.emplace_back(e->d_name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

Result<FsSpace> StatFs(const std::string& path) {
  struct statvfs sv;
  if (::statvfs(path.c_str(), &sv) != 0) return IoError("statvfs " + path, errno);
  FsSpace fs;
  fs.total = uint64_t(sv.f_blocks) * sv.f_frsize;
  fs.free = uint64_t(sv.f_bavail) * sv.f_frsize;
  fs.files = sv.f_files;
  fs.files_free = sv.f_ffree;
  return fs;
}

std::string RealPath(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf)) return buf;
  return path;
}

}  // namespace imgfs::io
