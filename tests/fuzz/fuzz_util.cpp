#include "fuzz_util.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <vector>

#include "imagecore/log.h"

namespace imgfs::fuzz {

void QuietLogs() {
  static const bool once = [] {
    SetLogSink([](LogLevel, const std::string&) {});
    return true;
  }();
  (void)once;
}

namespace {
// A memory file that cannot grow past kMaxFileBytes, as a full disk. A host
// file would take a write 1 GiB past its end as a sparse hole (the driver
// allows refcounts to run that far ahead after a crash); memory would have
// to hold all of it.
class CappedFile final : public io::File {
 public:
  explicit CappedFile(std::unique_ptr<io::File> inner) : File(inner->path()), inner_(std::move(inner)) {}
  Status PRead(uint64_t off, void* buf, size_t n) const override { return inner_->PRead(off, buf, n); }
  Status PWrite(uint64_t off, const void* buf, size_t n) override {
    if (off > kMaxFileBytes || n > kMaxFileBytes - off) return NoSpace(path() + ": fuzz file full");
    return inner_->PWrite(off, buf, n);
  }
  uint64_t Size() const override { return inner_->Size(); }
  Status Truncate(uint64_t size) override {
    if (size > kMaxFileBytes) return NoSpace(path() + ": fuzz file full");
    return inner_->Truncate(size);
  }
  Status Sync() override { return Status::OK(); }
  uint64_t AllocatedBytes() const override { return inner_->AllocatedBytes(); }
  uint64_t Seek(uint64_t off, bool want_data) const override { return inner_->Seek(off, want_data); }
  bool writable() const override { return true; }

 private:
  std::unique_ptr<io::File> inner_;
};
}  // namespace

std::unique_ptr<io::File> MemFileWith(const uint8_t* data, size_t size) {
  auto f = io::NewMemFile("/nonexistent-imgfs-fuzz/image.qcow2");
  if (size) (void)f->PWrite(0, data, size);  // a memory file cannot fail
  return std::make_unique<CappedFile>(std::move(f));
}

namespace {
// Pages of 4 KiB by index; the rest reads as zeros. Capped as CappedFile.
class SparseFile final : public io::File {
 public:
  SparseFile() : File("/nonexistent-imgfs-fuzz/image") {}
  Status PRead(uint64_t off, void* buf, size_t n) const override {
    if (n == 0) return Status::OK();  // buf may be null (an empty vector's data())
    auto* p = static_cast<uint8_t*>(buf);
    std::memset(p, 0, n);
    for (auto it = pages_.lower_bound(off / kPage); it != pages_.end() && it->first * kPage < off + n; ++it) {
      const uint64_t s = std::max(off, it->first * kPage), e = std::min(off + n, (it->first + 1) * kPage);
      std::memcpy(p + (s - off), it->second.data() + (s - it->first * kPage), e - s);
    }
    return Status::OK();
  }
  Status PWrite(uint64_t off, const void* buf, size_t n) override {
    if (n == 0) return Status::OK();  // as pwrite: no growth, buf may be null
    if (off > kMaxFileBytes || n > kMaxFileBytes - off) return NoSpace(path() + ": fuzz file full");
    const auto* p = static_cast<const uint8_t*>(buf);
    for (uint64_t at = off; at < off + n;) {
      auto& page = pages_[at / kPage];
      if (page.empty()) page.resize(kPage, 0);
      const uint64_t take = std::min(off + n, (at / kPage + 1) * kPage) - at;
      std::memcpy(page.data() + at % kPage, p + (at - off), take);
      at += take;
    }
    size_ = std::max(size_, off + n);
    return Status::OK();
  }
  uint64_t Size() const override { return size_; }
  Status Truncate(uint64_t size) override {
    if (size > kMaxFileBytes) return NoSpace(path() + ": fuzz file full");
    pages_.erase(pages_.lower_bound((size + kPage - 1) / kPage), pages_.end());
    if (size % kPage && pages_.count(size / kPage)) {
      auto& page = pages_[size / kPage];
      std::memset(page.data() + size % kPage, 0, kPage - size % kPage);
    }
    size_ = size;
    return Status::OK();
  }
  Status Sync() override { return Status::OK(); }
  uint64_t AllocatedBytes() const override { return pages_.size() * kPage; }
  uint64_t Seek(uint64_t off, bool want_data) const override { return want_data ? off : size_; }
  bool writable() const override { return true; }

 private:
  static constexpr uint64_t kPage = 4096;
  std::map<uint64_t, std::vector<uint8_t>> pages_;
  uint64_t size_ = 0;
};
}  // namespace

std::unique_ptr<io::File> SparseFileFrom(const uint8_t* data, size_t size) {
  auto f = std::make_unique<SparseFile>();
  while (size >= 6) {
    const uint64_t off = uint64_t(data[0]) | uint64_t(data[1]) << 8 | uint64_t(data[2]) << 16 | uint64_t(data[3]) << 24;
    const size_t len = std::min<size_t>(size - 6, size_t(data[4]) | size_t(data[5]) << 8);
    (void)f->PWrite(off, data + 6, len);  // past the cap: dropped
    data += 6 + len;
    size -= 6 + len;
  }
  return f;
}

uint64_t Fields::Take(size_t bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < bytes; ++i) {
    v <<= 8;
    if (left_) {
      v |= *p_++;
      --left_;
    }
  }
  return v;
}

}  // namespace imgfs::fuzz
