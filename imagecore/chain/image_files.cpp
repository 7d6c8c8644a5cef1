#include "imagecore/image_files.h"

#include <algorithm>

#include "imagecore/format.h"

namespace imgfs {

ImageFiles ImageFiles::FromHeader(const std::string& path, const FileOpener& files, const io::Access& as) {
  ImageFiles out;
  out.path_ = files.RealPath(path);
  auto file = files.Open(path, false, as);
  auto owner = files.Stat(path);
  if (!file.ok() || !owner.ok()) return out;
  const FormatDriver* drv = ProbeFormat(*file.value());
  if (!drv || !drv->members) return out;
  auto named = drv->members(*file.value());
  if (!named.ok()) return out;  // the open will say what is wrong
  for (const NamedFile& n : named.value()) {
    const std::string p = ResolveNamedPath(path, n.name);
    auto st = files.Stat(p);
    if (st.ok() && (owner.value().uid == 0 || st.value().uid == owner.value().uid))
      out.members_.push_back({files.RealPath(p), n.role});
  }
  return out;
}

ImageFiles ImageFiles::FromImage(const Image& img, const std::string& path, const FileOpener& files) {
  ImageFiles out;
  out.path_ = files.RealPath(path);
  for (const Image::LayerFile& f : img.files()) {
    if (f.role == FileRole::kImage || f.file->path() == path) continue;
    out.members_.push_back({files.RealPath(f.file->path()), f.role});
  }
  return out;
}

bool ImageFiles::HasMember(const std::string& real_path) const {
  return std::any_of(members_.begin(), members_.end(), [&](const Member& m) { return m.path == real_path; });
}

std::string ImageFiles::Stamp(const FileOpener& files) const {
  std::string out;
  auto add = [&](const std::string& path) {
    auto st = files.Stat(path);
    if (!st.ok()) {
      out += "?;";
      return;
    }
    out += std::to_string(st.value().size) + ":" + std::to_string(st.value().mtime.tv_sec) + "." +
           std::to_string(st.value().mtime.tv_nsec) + ";";
  };
  add(path_);
  for (const Member& m : members_) add(m.path);
  return out;
}

uint64_t ImageFiles::MemberBytes(const FileOpener& files) const {
  uint64_t sum = 0;
  for (const Member& m : members_)
    if (auto st = files.Stat(m.path); st.ok()) sum += st.value().allocated;
  return sum;
}

}  // namespace imgfs
