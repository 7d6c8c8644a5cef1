// The format table, probing by magic, and opening a layer by name or probe.
#include <algorithm>
#include <cstring>

#include "formats/luks/luks_driver.h"
#include "formats/qcow2/qcow2_driver.h"
#include "formats/raw/raw_driver.h"
#include "formats/vhdx/vhdx_driver.h"
#include "formats/vmdk/vmdk_image.h"
#include "formats/vpc/vpc_driver.h"
#include "imagecore/format.h"

namespace imgfs {
namespace {

const FormatDriver* const kDrivers[] = {&qcow2::kDriver, &vmdk::kDriver, &vhdx::kDriver, &vpc::kDriver,
                                        &luks::kDriver, &raw::kDriver};

}  // namespace

std::vector<const FormatDriver*> Formats() { return {std::begin(kDrivers), std::end(kDrivers)}; }

const FormatDriver* FindFormat(const std::string& name) {
  for (const FormatDriver* d : kDrivers)
    if (name == d->name) return d;
  return nullptr;
}

bool ParseOnOff(const std::string& v, bool* out) {
  if (v == "on" || v == "true" || v == "yes") *out = true;
  else if (v == "off" || v == "false" || v == "no") *out = false;
  else return false;
  return true;
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

const Capabilities& CapabilitiesOf(const std::string& name) {
  static const Capabilities none;
  const FormatDriver* d = FindFormat(name);
  return d ? d->caps : none;
}

const FormatDriver* ProbeFormat(const io::File& file) {
  uint8_t head[512] = {};
  const size_t len = static_cast<size_t>(std::min<uint64_t>(sizeof head, file.Size()));
  if (!file.PRead(0, head, len).ok()) return nullptr;
  const FormatDriver* best = nullptr;
  int best_score = 0;
  for (const FormatDriver* d : kDrivers) {
    int s = d->probe ? d->probe(file, head, len) : 0;
    if (s > best_score) {
      best_score = s;
      best = d;
    }
  }
  return best;
}

const FormatDriver& PlainFormat() { return raw::kDriver; }

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
    if (!drv) drv = &PlainFormat();
  }
  if (!drv->open) return Unsupported(path + ": " + drv->name + " images are not supported yet");
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
