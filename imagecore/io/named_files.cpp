#include "imagecore/named_files.h"

#include <cstdio>
#include <random>

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
  Result<std::unique_ptr<io::File>> Create(const std::string& path, const io::Access& as,
                                           mode_t mode) const override {
    return io::CreatePosixFile(path, mode, as);
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

namespace {
constexpr char kTempMark[] = ".imgfs-tmp-";
}

std::string TempNameFor(const std::string& path) {
  std::random_device rd;
  char suffix[32];
  std::snprintf(suffix, sizeof suffix, "%s%08x", kTempMark, rd());
  return path + suffix;
}

bool IsTempName(const std::string& name) { return name.find(kTempMark) != std::string::npos; }

NewFiles::NewFiles(const FileOpener& opener, std::string main_path)
    : opener_(opener), main_path_(std::move(main_path)) {}

NewFiles::~NewFiles() {
  if (committed_) return;
  for (Pending& p : files_) {
    p.file.reset();
    opener_.Remove(p.temp_path);
  }
}

Result<io::File*> NewFiles::Create(const std::string& final_path) {
  Pending p{final_path, TempNameFor(final_path), nullptr};
  IMGFS_ASSIGN_OR_RETURN(p.file, opener_.Create(p.temp_path, io::Access{}, 0644));
  files_.push_back(std::move(p));
  return files_.back().file.get();
}

Result<io::File*> NewFiles::Main() {
  for (Pending& p : files_)
    if (p.final_path == main_path_) return p.file.get();
  return Create(main_path_);
}

Result<io::File*> NewFiles::Add(const std::string& name) {
  const std::string path = ResolveNamedPath(main_path_, name);
  if (path == main_path_) return Main();
  for (Pending& p : files_)
    if (p.final_path == path) return InvalidArgument(path + ": named twice");
  return Create(path);
}

std::string NewFiles::StagedPath(const std::string& path) const {
  for (const Pending& p : files_)
    if (p.final_path == path) return p.temp_path;
  return path;
}

Result<std::unique_ptr<io::File>> NewFiles::StagedOpener::Open(const std::string& path, bool writable,
                                                               const io::Access& as) const {
  return owner_->opener_.Open(owner_->StagedPath(path), writable, as);
}

bool NewFiles::StagedOpener::Exists(const std::string& path) const {
  return owner_->opener_.Exists(owner_->StagedPath(path));
}

Status NewFiles::Commit() {
  // Durable before they take their names: a crash then leaves either the
  // old files or whole new ones (and perhaps temporary names).
  for (Pending& p : files_) IMGFS_RETURN_IF_ERROR(p.file->Sync());
  for (Pending& p : files_) p.file.reset();
  for (Pending& p : files_)
    if (p.final_path != main_path_) IMGFS_RETURN_IF_ERROR(opener_.Rename(p.temp_path, p.final_path));
  for (Pending& p : files_)
    if (p.final_path == main_path_) IMGFS_RETURN_IF_ERROR(opener_.Rename(p.temp_path, p.final_path));
  committed_ = true;
  return Status::OK();
}

}  // namespace imgfs
