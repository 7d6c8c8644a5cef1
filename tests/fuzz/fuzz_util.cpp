#include "fuzz_util.h"

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
