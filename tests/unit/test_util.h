// Helpers for imagecore unit tests: in-memory files that can be shared,
// recorded and replayed, and a small independent qcow2 consistency check.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "imagecore/file.h"
#include "imagecore/format.h"

namespace imgfs::test {

// Forwards to a file the test keeps (drivers take ownership of theirs).
// Records every write and sync when `record` is set.
class SharedFile : public io::File {
 public:
  struct Op {
    enum Kind { kWrite, kSync, kTruncate, kDiscard } kind;
    uint64_t off = 0;
    std::vector<uint8_t> data;
    uint64_t len = 0;  // kDiscard's
  };
  explicit SharedFile(std::shared_ptr<io::File> inner, std::shared_ptr<std::vector<Op>> log = nullptr,
                      const std::string& path = "")
      : File(path.empty() ? inner->path() : path), inner_(std::move(inner)), log_(std::move(log)) {}
  Status PRead(uint64_t off, void* buf, size_t n) const override { return inner_->PRead(off, buf, n); }
  Status PWrite(uint64_t off, const void* buf, size_t n) override;
  uint64_t Size() const override { return inner_->Size(); }
  Status Truncate(uint64_t size) override;
  Status Sync() override;
  void Discard(uint64_t off, uint64_t n) override;
  // The same bytes, unlogged (a snapshot view's descriptor).
  Result<std::unique_ptr<io::File>> OpenAgain() const override {
    return std::unique_ptr<io::File>(new SharedFile(inner_, nullptr, path()));
  }
  uint64_t AllocatedBytes() const override { return inner_->AllocatedBytes(); }
  uint64_t Seek(uint64_t off, bool want_data) const override { return inner_->Seek(off, want_data); }
  bool writable() const override { return true; }

 private:
  std::shared_ptr<io::File> inner_;
  std::shared_ptr<std::vector<Op>> log_;
};

// Files by path in memory, for drivers that open files by name (extents,
// data files). Open hands out SharedFile views of the same bytes.
class MemFiles final : public FileOpener {
 public:
  std::shared_ptr<io::File> Add(const std::string& path, std::shared_ptr<io::File> f = nullptr);
  std::shared_ptr<io::File> Get(const std::string& path) const;
  Result<std::unique_ptr<io::File>> Open(const std::string& path, bool writable, const io::Access&) const override;
  Result<std::unique_ptr<io::File>> Create(const std::string& path, const io::Access& as,
                                           mode_t mode) const override;
  bool Exists(const std::string& path) const override { return Get(path) != nullptr; }
  Status Rename(const std::string& from, const std::string& to) const override;
  void Remove(const std::string& path) const override;
  std::vector<std::string> Paths() const;
  // A path with files below it is a directory; a file's inode number is
  // fixed by its path.
  Result<io::FileStat> Stat(const std::string& path) const override;
  std::vector<std::string> List(const std::string& dir) const override;

 private:
  mutable std::mutex mu_;
  mutable std::map<std::string, std::shared_ptr<io::File>> files_;
};

std::vector<uint8_t> Contents(const io::File& f);

// A recorded workload, for crash replays: the file before it and every
// write, truncation and sync it made (SharedFile's log).
struct Recorded {
  std::vector<uint8_t> initial;
  std::vector<SharedFile::Op> ops;
  // The file as a crash leaves it: the first `upto` operations, those
  // `keep` marks where given.
  std::shared_ptr<io::File> Rebuild(size_t upto, const std::vector<bool>* keep = nullptr) const;
  // kill -9: check(file, upto, what) at every prefix (about 300 of them at
  // most) and the whole.
  void EachPrefix(const std::function<void(std::shared_ptr<io::File>, size_t, const char*)>& check) const;
  // Power loss: after each sync, `trials` random subsets of what followed
  // up to the next one (`upto` is the sync's index + 1).
  void EachPowerLoss(int trials, const std::function<void(std::shared_ptr<io::File>, size_t, const char*)>& check) const;
};
std::shared_ptr<io::File> FileWith(const std::vector<uint8_t>& bytes);

// Creates a qcow2 image of `size` bytes in a new memory file.
std::shared_ptr<io::File> NewQcow2(uint64_t size, const std::string& options = "");
// Opens an image from a shared memory file.
std::unique_ptr<Image> OpenShared(std::shared_ptr<io::File> f, bool writable,
                                  std::shared_ptr<std::vector<SharedFile::Op>> log = nullptr);

// The whole layer as its block status describes it (unallocated = zeros).
std::vector<uint8_t> ReadLayer(Image& img);

// An independent check of a qcow2 file: every cluster that the header,
// refcount table, snapshot table and every L1 walk (active and snapshots)
// reference has a refcount at least the number of references. Returns "" if consistent, else the first problem.
// `leaks` receives the number of clusters with refcount > references.
// With `copied`, also qemu-img check's rule for the active tables: an L1
// or L2 entry carries COPIED exactly when its cluster's refcount is 1.
std::string CheckQcow2(const io::File& f, uint64_t* leaks = nullptr, bool copied = false);

}  // namespace imgfs::test
