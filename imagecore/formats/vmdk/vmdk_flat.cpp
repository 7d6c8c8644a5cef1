// FLAT, VMFS and ZERO extents. No state beyond the file: fully parallel.
#include <algorithm>

#include "formats/vmdk/vmdk_extent.h"

namespace imgfs::vmdk {

ImageInfo::Field InfoString(const char* key, const char* human, const std::string& v) {
  return ImageInfo::Field::Str(key, human, v);
}
ImageInfo::Field InfoUint(const char* key, const char* human, uint64_t v) {
  return ImageInfo::Field::Uint(key, human, v);
}
ImageInfo::Field InfoBool(const char* key, const char* human, bool v) {
  return ImageInfo::Field::Bool(key, human, v);
}

namespace {

class FlatExtent final : public DiskExtent {
 public:
  FlatExtent(std::unique_ptr<io::File> file, uint64_t start, uint64_t bytes, std::string type, std::string name)
      : DiskExtent(bytes), file_(std::move(file)), start_(start), type_(std::move(type)), name_(std::move(name)) {}

  Status Map(uint64_t off, uint64_t len, Extent* out) override {
    const uint64_t host = start_ + off;
    const uint64_t size = file_->Size();
    len = std::min(len, bytes_ - off);
    out->file = file_.get();  // mapped throughout, holes too
    out->host_offset = host;
    if (host >= size) {  // a file shorter than its extent line: the rest reads as zeros
      out->kind = ExtentKind::kZero;
      out->length = len;
      out->mapped_hole = true;
      return Status::OK();
    }
    const uint64_t end = std::min(host + len, size);
    const uint64_t next_hole = file_->Seek(host, /*want_data=*/false);
    if (next_hole > host) {
      out->kind = ExtentKind::kData;
      out->length = std::min(next_hole, end) - host;
      return Status::OK();
    }
    const uint64_t next_data = file_->Seek(host, /*want_data=*/true);
    out->kind = ExtentKind::kZero;
    out->length = std::min(std::max(next_data, host + 1), end) - host;
    out->mapped_hole = true;
    return Status::OK();
  }
  Status ReadOpaque(uint64_t off, void* buf, size_t len) override { return file_->PRead(start_ + off, buf, len); }
  // In place; the lock-free parallelism of a raw file.
  Status Write(uint64_t off, const void* buf, size_t len, const LayerReader*, uint64_t) override {
    return file_->PWrite(start_ + off, buf, len);
  }
  Status WriteZeroes(uint64_t off, uint64_t len, bool, const LayerReader*, uint64_t) override {
    return file_->Deallocate(start_ + off, len);  // a punched hole reads as zeros
  }
  Status Flush() override { return file_->writable() ? file_->Sync() : Status::OK(); }
  const char* kind_name() const override { return "flat"; }
  Status Grow(uint64_t new_bytes) override {
    if (!file_->writable()) return ReadOnly(file_->path() + ": opened read-only");
    if (file_->Size() < start_ + new_bytes) IMGFS_RETURN_IF_ERROR(file_->Truncate(start_ + new_bytes));
    IMGFS_RETURN_IF_ERROR(file_->Sync());
    bytes_ = new_bytes;
    return Status::OK();
  }
  Status Shrink(uint64_t new_bytes) override {
    if (!file_->writable()) return ReadOnly(file_->path() + ": opened read-only");
    // The file is cut only where this extent is its end (a custom
    // descriptor may keep other extents in the same file).
    if (file_->Size() <= start_ + bytes_) IMGFS_RETURN_IF_ERROR(file_->Truncate(start_ + new_bytes));
    IMGFS_RETURN_IF_ERROR(file_->Sync());
    bytes_ = new_bytes;
    return Status::OK();
  }
  io::File* file() const override { return file_.get(); }
  std::vector<ImageInfo::Field> Info() const override {
    return {InfoUint("virtual-size", "virtual size", bytes_), ImageInfo::Field::FileName("filename", "filename", name_),
            InfoString("format", "format", type_)};
  }

 private:
  std::unique_ptr<io::File> file_;
  const uint64_t start_;
  const std::string type_, name_;
};

class ZeroExtent final : public DiskExtent {
 public:
  explicit ZeroExtent(uint64_t bytes) : DiskExtent(bytes) {}
  Status Map(uint64_t off, uint64_t len, Extent* out) override {
    out->kind = ExtentKind::kZero;
    out->length = std::min(len, bytes_ - off);
    return Status::OK();
  }
  Status ReadOpaque(uint64_t, void* buf, size_t len) override {
    std::fill_n(static_cast<uint8_t*>(buf), len, 0);
    return Status::OK();
  }
  io::File* file() const override { return nullptr; }
  std::string WhyReadOnly() const override { return "a ZERO extent stores nothing"; }
  Status Write(uint64_t, const void*, size_t, const LayerReader*, uint64_t) override {
    return ReadOnly("a ZERO extent stores nothing");
  }
  Status WriteZeroes(uint64_t, uint64_t, bool, const LayerReader*, uint64_t) override { return Status::OK(); }
  Status MakeEmpty() override { return Status::OK(); }
  Status Grow(uint64_t new_bytes) override {
    bytes_ = new_bytes;
    return Status::OK();
  }
  Status Shrink(uint64_t new_bytes) override {
    bytes_ = new_bytes;
    return Status::OK();
  }
  const char* kind_name() const override { return "ZERO"; }
  std::vector<ImageInfo::Field> Info() const override {
    return {InfoUint("virtual-size", "virtual size", bytes_), ImageInfo::Field::FileName("filename", "filename", ""),
            InfoString("format", "format", "ZERO")};
  }
};

}  // namespace

std::unique_ptr<DiskExtent> NewFlatExtent(std::unique_ptr<io::File> file, uint64_t start, uint64_t bytes,
                                          const std::string& type, const std::string& name) {
  return std::make_unique<FlatExtent>(std::move(file), start, bytes, type, name);
}

std::unique_ptr<DiskExtent> NewZeroExtent(uint64_t bytes) { return std::make_unique<ZeroExtent>(bytes); }

}  // namespace imgfs::vmdk
