// io::File: the only door from imagecore to the operating system's files.
// Drivers read and write image files through it, so tests can swap in a
// MemFile and every errno is turned into a Status in exactly one place.
//
// Thread safety: PRead/PWrite/Size/Sync may be called from many threads at
// once (they map to pread/pwrite, which the kernel orders per byte range).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>
#include <ctime>
#include <sys/types.h>

#include "imagecore/access.h"
#include "imagecore/status.h"

namespace imgfs::io {

// What the filesystem shows of a host file.
struct FileStat {
  bool is_dir = false;
  bool is_regular = false;
  bool is_block = false;
  bool is_symlink = false;  // only from LinkStatPath
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  uint64_t size = 0;
  uint64_t allocated = 0;  // st_blocks * 512
  struct timespec atime {}, mtime {}, ctime {};
  dev_t dev = 0;
  ino_t ino = 0;
};

class File {
 public:
  virtual ~File() = default;

  // Reads exactly n bytes at off. Bytes past the end of the file read as
  // zeros, as for a disk whose tail was never written.
  virtual Status PRead(uint64_t off, void* buf, size_t n) const = 0;
  // Writes exactly n bytes at off, growing the file if needed.
  virtual Status PWrite(uint64_t off, const void* buf, size_t n) = 0;
  // Writes the pieces one after another from `off` (one pwritev where the
  // host allows), so callers need not copy them into one buffer.
  struct Piece {
    const void* data;
    size_t len;
  };
  virtual Status PWriteV(uint64_t off, const Piece* pieces, size_t count);
  virtual uint64_t Size() const = 0;
  virtual Status Truncate(uint64_t size) = 0;
  // Makes [off, off+n) read as zeros and frees its space where the host
  // can (a punched hole); the size stays. Writes zeros where it cannot.
  virtual Status Deallocate(uint64_t off, uint64_t n);
  // Gives the host space of [off, off+n) back, where the host can; its
  // bytes are garbage nobody reads again (a freed cluster). A hint: may do
  // nothing, and the bytes may read as anything after.
  virtual void Discard(uint64_t off, uint64_t n) {}
  // Reserves host space for [off, off+n), growing the file to cover it;
  // bytes keep what they read (zeros where new). preallocation=falloc.
  virtual Status Allocate(uint64_t off, uint64_t n);
  // Writes zeros over [off, off+n), growing the file: preallocation=full.
  Status WriteZeros(uint64_t off, uint64_t n);
  // Asks the host to start writing [off, off+n) back now, without waiting,
  // so that a later Sync has less left to do. A hint: may do nothing.
  virtual void StartWriteback(uint64_t off, uint64_t n) {}
  // Tells the host [off, off+n) will be read soon, so it can start now. A hint.
  virtual void WillNeed(uint64_t off, uint64_t n) const {}
  // Makes every completed PWrite durable (fdatasync).
  virtual Status Sync() = 0;
  // Bytes the host really stores for this file (st_blocks * 512).
  virtual uint64_t AllocatedBytes() const = 0;
  // Finds the next byte >= off that is data (want_data) or a hole. Returns
  // Size() if there is none. Files that cannot tell say all is data.
  virtual uint64_t Seek(uint64_t off, bool want_data) const = 0;
  // Claims the file for writing with QEMU's locks (see io/qemu_lock.h):
  // Busy, naming the holder, when a QEMU process or another imgfs uses it.
  virtual Status ClaimForWriting() { return Status::OK(); }
  // Whether the claim would be granted now, without taking it.
  virtual Status CheckClaim() const { return Status::OK(); }
  // Gives the claim up while the file stays open.
  virtual void DropClaim() {}
  // What the filesystem shows of the open file (owner, mode...).
  virtual Result<FileStat> Stat() const;
  // A descriptor the kernel can splice from, or -1.
  virtual int fd() const { return -1; }
  // Another descriptor of this very file (the same inode, whatever its
  // path names now), read-only, closed on its own.
  virtual Result<std::unique_ptr<File>> OpenAgain() const;
  virtual bool writable() const = 0;
  const std::string& path() const { return path_; }

 protected:
  explicit File(std::string path) : path_(std::move(path)) {}

 private:
  std::string path_;
};

// Raises this process's open-file limit as far as it may go: to the hard
// limit, or for root to the kernel's (fs.nr_open). A backing chain holds
// one descriptor per file, and a mount one per writable image.
void RaiseFileLimit();

// Opens a host file (a regular file or a block device; anything else is
// refused without blocking) with the rights `as`. O_CLOEXEC always;
// writable opens use O_RDWR.
Result<std::unique_ptr<File>> OpenPosixFile(const std::string& path, bool writable, const Access& as = Access());
// Creates (O_EXCL) a new host file for writing.
Result<std::unique_ptr<File>> CreatePosixFile(const std::string& path, mode_t mode = 0644, const Access& as = {});
// A new host file with no name yet (O_TMPFILE) in the directory of
// `beside`, for writing: nothing of it outlives a crash. Unsupported where
// the file system cannot make one.
Result<std::unique_ptr<File>> CreateUnnamedPosixFile(const std::string& beside, mode_t mode, const Access& as = {});
// Opens a file made by CreateUnnamedPosixFile again (its path is the one
// it was made beside).
Result<std::unique_ptr<File>> ReopenPosixFile(const File& file, bool writable);
// Gives a file made by CreateUnnamedPosixFile the name `path` (which must
// not exist).
Status LinkUnnamed(const File& file, const std::string& path);
// Renames a file (same file system); removes a file. For create's
// write-then-rename.
Status RenameFile(const std::string& from, const std::string& to);
void RemoveFile(const std::string& path);
Result<FileStat> StatPath(const std::string& path);
// As StatPath, but a symbolic link is described, not followed.
Result<FileStat> LinkStatPath(const std::string& path);
// Names in a directory (no "." or ".."), sorted.
Result<std::vector<std::string>> ListDir(const std::string& path);
// Capacity of the file system holding `path`, in bytes.
struct FsSpace {
  uint64_t total = 0;
  uint64_t free = 0;       // for unprivileged users
  uint64_t files = 0;
  uint64_t files_free = 0;
};
Result<FsSpace> StatFs(const std::string& path);
// The canonical absolute path, or the input if it cannot be resolved.
std::string RealPath(const std::string& path);
// A file kept in memory, for unit tests.
std::unique_ptr<File> NewMemFile(const std::string& name = "mem");

}  // namespace imgfs::io
