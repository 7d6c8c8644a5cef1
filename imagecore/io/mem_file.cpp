// An in-memory io::File for unit tests. Holes are not tracked: all is data.
#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "imagecore/file.h"
#include "imagecore/mutex.h"

namespace imgfs::io {

namespace {

class MemFile final : public File {
 public:
  explicit MemFile(std::string name) : File(std::move(name)) {}

  Status PRead(uint64_t off, void* buf, size_t n) const override {
    if (n == 0) return Status::OK();  // buf may be null (an empty vector's data())
    MutexLock l(mu_);
    auto* p = static_cast<char*>(buf);
    std::memset(p, 0, n);
    if (off < data_.size()) {
      size_t have = std::min<uint64_t>(n, data_.size() - off);
      std::memcpy(p, data_.data() + off, have);
    }
    return Status::OK();
  }
  Status PWrite(uint64_t off, const void* buf, size_t n) override {
    if (n == 0) return Status::OK();  // as pwrite: no growth, buf may be null
    MutexLock l(mu_);
    if (data_.size() < off + n) data_.resize(off + n);
    std::memcpy(data_.data() + off, buf, n);
    return Status::OK();
  }
  uint64_t Size() const override {
    MutexLock l(mu_);
    return data_.size();
  }
  Status Truncate(uint64_t size) override {
    MutexLock l(mu_);
    data_.resize(size);
    return Status::OK();
  }
  // Discarded bytes read as zeros, as a punched hole does: a test sees
  // any discard of bytes still in use.
  void Discard(uint64_t off, uint64_t n) override {
    MutexLock l(mu_);
    if (off < data_.size()) std::fill_n(data_.begin() + off, std::min<uint64_t>(n, data_.size() - off), 0);
  }
  Status Sync() override {
    ++syncs;
    return Status::OK();
  }
  uint64_t AllocatedBytes() const override { return Size(); }
  uint64_t Seek(uint64_t off, bool want_data) const override {
    uint64_t size = Size();
    if (off >= size) return size;
    return want_data ? off : size;
  }
  bool writable() const override { return true; }

  int syncs = 0;

 private:
  mutable Mutex mu_;
  std::vector<char> data_ GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<File> NewMemFile(const std::string& name) {
  return std::make_unique<MemFile>(name);
}

}  // namespace imgfs::io
