#include "imagecore/named_files.h"

namespace imgfs {

const char* FileRoleName(FileRole role) {
  switch (role) {
    case FileRole::kImage: return "image";
    case FileRole::kDescriptor: return "descriptor";
    case FileRole::kExtent: return "extent";
    case FileRole::kDataFile: return "data file";
  }
  return "file";
}

std::string ResolveNamedPath(const std::string& naming_path, const std::string& name) {
  if (name.empty() || name[0] == '/') return name;
  if (name.find("://") != std::string::npos || name.rfind("json:", 0) == 0) return name;
  auto slash = naming_path.rfind('/');
  if (slash == std::string::npos) return name;
  return naming_path.substr(0, slash + 1) + name;
}

namespace {
class HostOpener final : public FileOpener {
 public:
  Result<std::unique_ptr<io::File>> Open(const std::string& path, bool writable,
                                         const io::Access& as) const override {
    return io::OpenPosixFile(path, writable, as);
  }
  Result<std::unique_ptr<io::File>> Create(const std::string& path) const override {
    return io::CreatePosixFile(path);
  }
  bool Exists(const std::string& path) const override { return io::StatPath(path).ok(); }
  Status Rename(const std::string& from, const std::string& to) const override { return io::RenameFile(from, to); }
  void Remove(const std::string& path) const override { io::RemoveFile(path); }
};
}  // namespace

const FileOpener& HostFiles() {
  static const HostOpener host;
  return host;
}

}  // namespace imgfs
