// raw: the disk is the file. Holes in the host file are holes in the disk.
// Thread model: fully parallel; no state beyond the file.
#include <algorithm>

#include "formats/raw/raw_driver.h"

namespace imgfs::raw {
namespace {

class RawImage final : public Image {
 public:
  RawImage(std::unique_ptr<io::File> file) : file_(std::move(file)) {
    if (!file_->writable()) read_only_reason_ = "opened read-only";
  }

  const FormatDriver& driver() const override { return kDriver; }
  uint64_t VirtualSize() const override { return file_->Size(); }

  Status BlockStatus(uint64_t off, uint64_t len, Extent* out) override {
    const uint64_t end = std::min(off + len, file_->Size());
    if (off >= end) return InvalidArgument("block status past the end of " + file_->path());
    uint64_t next_hole = file_->Seek(off, /*want_data=*/false);
    if (next_hole > off) {
      out->kind = ExtentKind::kData;
      out->length = std::min(next_hole, end) - off;
      out->file = file_.get();
      out->host_offset = off;
      return Status::OK();
    }
    uint64_t next_data = file_->Seek(off, /*want_data=*/true);
    out->kind = ExtentKind::kZero;
    out->length = std::min(std::max(next_data, off + 1), end) - off;
    out->file = file_.get();  // a hole of the file itself: qemu-img map shows its offset, not data
    out->host_offset = off;
    return Status::OK();
  }

  Status ReadOpaque(uint64_t off, void* buf, size_t len) override {
    return file_->PRead(off, buf, len);
  }

  Status Write(uint64_t off, const void* buf, size_t len, const LayerReader*) override {
    if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
    if (off + len > file_->Size()) return NoSpace(file_->path() + ": write past the end of the disk");
    return file_->PWrite(off, buf, len);
  }

  Status WriteZeroes(uint64_t off, uint64_t len, bool, const LayerReader*) override {
    if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
    if (off + len > file_->Size()) return NoSpace(file_->path() + ": write past the end of the disk");
    return file_->Deallocate(off, len);  // a hole reads as zeros
  }

  Status Preallocate(uint64_t off, uint64_t len, Prealloc mode) override {
    if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
    if (mode == Prealloc::kMetadata) return InvalidArgument("Unsupported preallocation mode: metadata");
    return PreallocateRange(*file_, off, len, mode);
  }
  Status Resize(uint64_t new_size, const LayerReader*) override {
    if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
    return file_->Truncate(new_size);  // grows with a hole: zeros
  }

  Status Flush() override {
    if (!file_->writable()) return Status::OK();
    return file_->Sync();
  }

  ImageInfo Info() const override {
    ImageInfo info;
    info.format = "raw";
    info.virtual_size = file_->Size();
    return info;
  }

  const io::File& file() const override { return *file_; }
  std::vector<LayerFile> files() const override { return {{file_.get(), FileRole::kImage}}; }

 private:
  std::unique_ptr<io::File> file_;
};


Result<std::unique_ptr<Image>> Open(std::unique_ptr<io::File> file, const OpenOptions&) {
  return std::unique_ptr<Image>(new RawImage(std::move(file)));
}

Status Create(io::File& file, const CreateOptions& opts) {
  if (!opts.backing_file.empty()) return Unsupported("raw images cannot have a backing file");
  Prealloc mode = Prealloc::kOff;
  for (const auto& [k, v] : opts.options) {
    if (k != "preallocation") return InvalidArgument("raw does not support option '" + k + "'");
    if (v == "metadata") return InvalidArgument(file.path() + ": Unsupported preallocation mode: metadata");
    if (v != "off" && v != "falloc" && v != "full") return InvalidArgument(file.path() + ": invalid parameter value: " + v);
    IMGFS_ASSIGN_OR_RETURN(mode, ParsePrealloc(v, file.path()));
  }
  IMGFS_RETURN_IF_ERROR(file.Truncate(opts.size));
  return PreallocateRange(file, 0, opts.size, mode);
}

}  // namespace

// As qemu: a raw image needs its whole size, holes or not.
static Result<MeasureResult> Measure(const CreateOptions& opts, const MeasureInput& in) {
  if (!opts.options.empty()) return Unsupported("raw images take no -o option '" + opts.options.begin()->first + "'");
  MeasureResult r;
  r.required = r.fully_allocated = (in.size + 511) / 512 * 512;
  return r;
}

const FormatDriver kDriver = {
    .name = "raw",
    .open = Open,  // no probe: raw is never recognised by content
    .create = Create,
    .measure = Measure,
    .create_options = "  preallocation=<str>    - off (default), falloc or full\n",
    .caps = {.resize = true, .plain_disk = true},
};

}  // namespace imgfs::raw
