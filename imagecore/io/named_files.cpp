#include "imagecore/named_files.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <random>
#include <string>
#include <utility>

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
  Result<std::unique_ptr<io::File>> CreateUnnamed(const std::string& path, mode_t mode) const override {
    return io::CreateUnnamedPosixFile(path, mode);
  }
  Status Name(const io::File& file, const std::string& path) const override { return io::LinkUnnamed(file, path); }
  Result<std::unique_ptr<io::File>> Reopen(const io::File& file, bool writable) const override {
    return io::ReopenPosixFile(file, writable);
  }
  std::vector<std::string> List(const std::string& dir) const override {
    auto names = io::ListDir(dir);
    return names.ok() ? names.value() : std::vector<std::string>{};
  }
  Result<io::FileStat> Stat(const std::string& path) const override { return io::StatPath(path); }
  std::string RealPath(const std::string& path) const override { return io::RealPath(path); }
  io::ImageAccess AccessFor(const std::string& path) const override { return io::AccessForImage(path); }
};
}  // namespace

const FileOpener& HostFiles() {
  static const HostOpener host;
  return host;
}

namespace {
constexpr char kTempMark[] = ".imgfs-tmp-";
}

// The maker's pid is part of the name: a name whose maker is gone was
// left by a killed run.
std::string TempNameFor(const std::string& path) {
  std::random_device rd;
  char suffix[48];
  std::snprintf(suffix, sizeof suffix, "%s%d-%08x", kTempMark, static_cast<int>(::getpid()), rd());
  return path + suffix;
}

namespace {
std::pair<std::string, std::string> SplitPath(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return {".", path};
  return {slash == 0 ? "/" : path.substr(0, slash), path.substr(slash + 1)};
}

// Whether the temporary name `name` of a file beside `base` was left by
// a process that is gone.
bool LeftByDeadRun(const std::string& name, const std::string& base) {
  const std::string prefix = base + kTempMark;
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  const std::string rest = name.substr(prefix.size());
  const auto dash = rest.find('-');
  if (dash == std::string::npos || dash == 0 || dash > 10) return false;
  for (size_t i = 0; i < dash; i++)
    if (rest[i] < '0' || rest[i] > '9') return false;
  const long pid = std::stol(rest.substr(0, dash));
  return pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}
}  // namespace

bool IsTempName(const std::string& name) { return name.find(kTempMark) != std::string::npos; }

NewFiles::NewFiles(const FileOpener& opener, std::string main_path)
    : opener_(opener), main_path_(std::move(main_path)) {}

NewFiles::~NewFiles() {
  if (committed_) return;
  for (Pending& p : files_) {
    p.file.reset();
    if (!p.unnamed) opener_.Remove(p.temp_path);
  }
}

void NewFiles::RemoveLeftovers(const std::string& final_path) const {
  const auto [dir, base] = SplitPath(final_path);
  for (const std::string& name : opener_.List(dir))
    if (LeftByDeadRun(name, base)) opener_.Remove(dir + "/" + name);
}

Result<io::File*> NewFiles::Create(const std::string& final_path) {
  RemoveLeftovers(final_path);
  Pending p{final_path, "", nullptr};
  auto unnamed = opener_.CreateUnnamed(final_path, 0644);
  if (unnamed.ok()) {
    p.file = std::move(unnamed).value();
    p.unnamed = true;
  } else if (unnamed.status().code() == Code::kUnsupported) {
    p.temp_path = TempNameFor(final_path);
    IMGFS_ASSIGN_OR_RETURN(p.file, opener_.Create(p.temp_path, io::Access{}, 0644));
  } else {
    return unnamed.status();
  }
  files_.push_back(std::move(p));
  return files_.back().file.get();
}

Status NewFiles::NameTemporarily(Pending& p) {
  if (!p.unnamed) return Status::OK();
  // linkat cannot replace an existing file: a name of its own first.
  const std::string temp = TempNameFor(p.final_path);
  IMGFS_RETURN_IF_ERROR(opener_.Name(*p.file, temp));
  p.temp_path = temp;
  p.unnamed = false;
  return Status::OK();
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
  for (const Pending& p : owner_->files_)
    if (p.final_path == path && p.unnamed) return owner_->opener_.Reopen(*p.file, writable);
  return owner_->opener_.Open(owner_->StagedPath(path), writable, as);
}

bool NewFiles::StagedOpener::Exists(const std::string& path) const {
  for (const Pending& p : owner_->files_)
    if (p.final_path == path && p.unnamed) return true;
  return owner_->opener_.Exists(owner_->StagedPath(path));
}

Status NewFiles::Commit() {
  // Durable before they take their names: a crash then leaves either the
  // old files or whole new ones (and perhaps temporary names).
  for (Pending& p : files_) IMGFS_RETURN_IF_ERROR(p.file->Sync());
  // Every file has a temporary name before any takes its own: one who
  // sees an extent appear finds the descriptor that names it.
  for (Pending& p : files_) IMGFS_RETURN_IF_ERROR(NameTemporarily(p));
  for (Pending& p : files_)
    if (p.final_path != main_path_) IMGFS_RETURN_IF_ERROR(opener_.Rename(p.temp_path, p.final_path));
  for (Pending& p : files_)
    if (p.final_path == main_path_) IMGFS_RETURN_IF_ERROR(opener_.Rename(p.temp_path, p.final_path));
  for (Pending& p : files_) p.file.reset();
  committed_ = true;
  return Status::OK();
}

}  // namespace imgfs
