// The format table, probing by magic, and opening a layer by name or probe.
#include <cstring>

#include "formats/qcow2/qcow2_driver.h"
#include "formats/raw/raw_driver.h"
#include "formats/vmdk/vmdk_image.h"
#include "imagecore/format.h"

namespace imgfs {
namespace {

const FormatDriver* const kDrivers[] = {&qcow2::kDriver, &vmdk::kDriver, &raw::kDriver};

}  // namespace

const FormatDriver* FindFormat(const std::string& name) {
  for (const FormatDriver* d : kDrivers)
    if (name == d->name) return d;
  return nullptr;
}

Result<Prealloc> ParsePrealloc(const std::string& v, const std::string& what) {
  if (v == "off") return Prealloc::kOff;
  if (v == "metadata") return Prealloc::kMetadata;
  if (v == "falloc") return Prealloc::kFalloc;
  if (v == "full") return Prealloc::kFull;
  return InvalidArgument(what + ": Parameter 'preallocation' does not accept value '" + v + "'");
}

Status PreallocateRange(io::File& file, uint64_t off, uint64_t n, Prealloc mode) {
  if (mode == Prealloc::kFalloc) return file.Allocate(off, n);
  if (mode == Prealloc::kFull) return file.WriteZeros(off, n);
  return Status::OK();
}

const Capabilities& CapabilitiesOf(const std::string& format) {
  static const Capabilities none;
  const FormatDriver* d = FindFormat(format);
  return d ? d->caps : none;
}

const FormatDriver* ProbeFormat(const io::File& file) {
  uint8_t head[512];
  if (!file.PRead(0, head, sizeof head).ok()) return nullptr;
  const FormatDriver* best = nullptr;
  int best_score = 0;
  for (const FormatDriver* d : kDrivers) {
    int s = d->probe(head, sizeof head);
    if (s > best_score) {
      best_score = s;
      best = d;
    }
  }
  return best;
}

std::vector<std::string> MemberPathsOf(const io::File& file) {
  const FormatDriver* drv = ProbeFormat(file);
  if (!drv || !drv->members) return {};
  auto names = drv->members(file);
  if (!names.ok()) return {};  // the open will say what is wrong
  std::vector<std::string> out;
  for (const std::string& n : names.value()) out.push_back(ResolveNamedPath(file.path(), n));
  return out;
}

std::string SniffForeignFormat(const io::File& file) {
  uint8_t head[512];
  if (!file.PRead(0, head, sizeof head).ok()) return "";
  if (!std::memcmp(head, "vhdxfile", 8)) return "vhdx";
  if (!std::memcmp(head, "conectix", 8)) return "vpc";
  uint64_t size = file.Size();
  if (size >= 512) {
    uint8_t tail[8];
    if (file.PRead(size - 512, tail, 8).ok() && !std::memcmp(tail, "conectix", 8)) return "vpc";
  }
  return "";
}

Result<std::unique_ptr<Image>> OpenImage(const std::string& path, const std::string& format,
                                         const OpenOptions& opts) {
  IMGFS_ASSIGN_OR_RETURN(auto file, opts.files().Open(path, opts.writable, opts.file_access));
  // Before anything is written (a dirty image is repaired at open).
  if (opts.writable && opts.claim) IMGFS_RETURN_IF_ERROR(file->ClaimForWriting());
  const FormatDriver* drv = nullptr;
  if (!format.empty()) {
    drv = FindFormat(format);
    if (!drv) return Unsupported(path + ": format '" + format + "' is not supported");
  } else {
    drv = ProbeFormat(*file);
    if (!drv) {
      std::string foreign = SniffForeignFormat(*file);
      if (!foreign.empty())
        return Unsupported(path + ": " + foreign + " images are not supported yet");
      drv = &raw::kDriver;
    }
  }
  auto img = drv->open(std::move(file), opts);
  if (!img.ok()) {
    const std::string& m = img.status().message();
    if (m.rfind(path, 0) == 0) return img.status();
    return img.status().Prefixed(path);
  }
  return img;
}

Result<std::unique_ptr<io::File>> OpenOptions::OpenNamed(const std::string& naming_path, const std::string& name,
                                                         bool writable) const {
  const std::string path = ResolveNamedPath(naming_path, name);
  auto file = files().Open(path, writable, access);
  if (!file.ok()) {
    if (file.status().message().rfind(path, 0) == 0) return file.status();
    return file.status().Prefixed(path);
  }
  if (writable && claim) IMGFS_RETURN_IF_ERROR(file.value()->ClaimForWriting());
  return file;
}

}  // namespace imgfs
