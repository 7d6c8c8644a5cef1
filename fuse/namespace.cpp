#include "namespace.h"

#include <algorithm>

#include "imagecore/format.h"
#include "imagecore/log.h"

namespace imgfs::fs {

uint64_t InoOf(NodeKind kind, size_t image, size_t depth) {
  const uint64_t base = uint64_t(image + 1) << kImageShift;
  switch (kind) {
    case NodeKind::kRoot: return kRootIno;
    case NodeKind::kImageDir: return base | kSubDir;
    case NodeKind::kDisk: return base | kSubDisk;
    case NodeKind::kInfo: return base | kSubInfo;
    case NodeKind::kLayersDir: return base | kSubLayersDir;
    case NodeKind::kLayer: return base | (kSubLayerBase + depth);
    case NodeKind::kSnapshotsDir: return base | kSubSnapshotsDir;
    case NodeKind::kCtl: return base | kSubCtl;
    case NodeKind::kSnapshot: return base | (kSubSnapshotBase + depth);
    case NodeKind::kInvalid: break;
  }
  return 0;
}

NodeRef NodeOf(uint64_t ino) {
  if (ino == kRootIno) return {NodeKind::kRoot, 0, 0};
  const uint64_t hi = ino >> kImageShift, lo = ino & ((1u << kImageShift) - 1);
  if (hi == 0) return {};
  const size_t image = hi - 1;
  switch (lo) {
    case kSubDir: return {NodeKind::kImageDir, image, 0};
    case kSubDisk: return {NodeKind::kDisk, image, 0};
    case kSubInfo: return {NodeKind::kInfo, image, 0};
    case kSubLayersDir: return {NodeKind::kLayersDir, image, 0};
    case kSubSnapshotsDir: return {NodeKind::kSnapshotsDir, image, 0};
    case kSubCtl: return {NodeKind::kCtl, image, 0};
    default:
      if (lo >= kSubLayerBase && lo < kSubLayerBase + kMaxLayers) return {NodeKind::kLayer, image, lo - kSubLayerBase};
      if (lo >= kSubSnapshotBase && lo < kSubSnapshotBase + kMaxSnapshotViews)
        return {NodeKind::kSnapshot, image, lo - kSubSnapshotBase};
  }
  return {};
}

namespace {

bool HasRawExtension(const std::string& name) {
  static const char* kExt[] = {".raw", ".img", ".iso", ".bin"};
  for (const char* e : kExt) {
    const size_t n = std::char_traits<char>::length(e);
    if (name.size() > n && std::equal(name.end() - n, name.end(), e, e + n,
                                      [](char a, char b) { return std::tolower(a) == b; }))
      return true;
  }
  return false;
}

std::string BaseName(const std::string& path) {
  auto s = path.find_last_of('/');
  return s == std::string::npos ? path : path.substr(s + 1);
}

}  // namespace

Status Namespace::Probe(const std::string& name, const std::string& path, bool explicit_file, bool read_only,
                        std::vector<std::string>* backing_paths) {
  std::string format;
  {
    auto file = io::OpenPosixFile(path, false);
    if (!file.ok()) return file.status();
    const FormatDriver* drv = ProbeFormat(*file.value());
    if (drv) {
      format = drv->name;
    } else {
      std::string foreign = SniffForeignFormat(*file.value());
      if (!foreign.empty()) return Unsupported(foreign + " images are not supported yet");
      if (!explicit_file && !HasRawExtension(name)) return Status::OK();  // not a disk image: skip quietly
      format = "raw";
    }
  }
  // Open the whole chain to validate it (a missing backing file leaves the
  // image out) and keep it: a writable image stays claimed with QEMU's
  // locks from now on, so no VM starts writing it behind the mount.
  bool writable = !read_only;
  auto chain = Chain::Open(path, format, writable);
  std::string ro_reason = read_only ? "mounted read-only" : "";
  if (!chain.ok() && writable && chain.status().sys_errno() == EACCES) {
    chain = Chain::Open(path, format, false);
    ro_reason = "no write permission on the image file";
  } else if (!chain.ok() && writable && chain.status().code() == Code::kBusy) {
    // A VM (or another imgfs) has it: serve it read-only and say who.
    std::string why = chain.status().message();
    if (why.rfind(path + ": ", 0) == 0) why = why.substr(path.size() + 2);
    chain = Chain::Open(path, format, false);
    ro_reason = why;
  }
  if (!chain.ok()) return chain.status();
  Image* img = &chain.value()->layer(0);
  auto entry = std::make_unique<ImageEntry>();
  entry->name = name;
  entry->path = path;
  entry->format = format;
  entry->virtual_size = img->VirtualSize();
  if (ro_reason.empty() && img->read_only()) ro_reason = img->read_only_reason();
  entry->read_only = !ro_reason.empty();
  entry->read_only_reason = ro_reason;
  for (size_t d = 0; d < chain.value()->depth(); ++d)
    entry->layer_paths.push_back(io::RealPath(chain.value()->layer_path(d)));
  entry->chain = std::shared_ptr<Chain>(std::move(chain).value());
  if (auto b = img->Backing()) backing_paths->push_back(io::RealPath(ResolveBackingPath(path, b->name)));
  else backing_paths->push_back("");
  by_name_[name] = images_.size();
  images_.push_back(std::move(entry));
  return Status::OK();
}

Status Namespace::Scan(const std::string& source, bool read_only) {
  source_ = source;
  IMGFS_ASSIGN_OR_RETURN(io::FileStat st, io::StatPath(source));
  std::vector<std::string> backing;  // per image: real path of its backing file
  if (!st.is_dir) {
    if (!st.is_regular && !st.is_block) return InvalidArgument(source + ": not a directory or an image file");
    Status s = Probe(BaseName(source), source, true, read_only, &backing);
    if (!s.ok()) return s.Prefixed(source);
  } else {
    IMGFS_ASSIGN_OR_RETURN(auto names, io::ListDir(source));
    for (const std::string& name : names) {
      const std::string path = source + "/" + name;
      auto fst = io::StatPath(path);
      if (!fst.ok() || !fst.value().is_regular) continue;
      Status s = Probe(name, path, false, read_only, &backing);
      if (s.ok()) continue;
      std::string why = s.message();
      if (why.rfind(path + ": ", 0) == 0) why = why.substr(path.size() + 2);
      Log(LogLevel::kWarning, "left out " + path + ": " + why);
    }
  }
  // An image that another image in SOURCE builds on is served read-only:
  // writing it would silently change what the overlay shows.
  std::unordered_map<std::string, size_t> by_real_path;
  for (size_t j = 0; j < images_.size(); ++j) by_real_path[io::RealPath(images_[j]->path)] = j;
  for (size_t i = 0; i < images_.size(); ++i) {
    auto it = backing[i].empty() ? by_real_path.end() : by_real_path.find(backing[i]);
    if (it == by_real_path.end() || it->second == i || images_[it->second]->read_only) continue;
    images_[it->second]->read_only = true;
    images_[it->second]->read_only_reason = "it is the backing file of " + images_[i]->name;
    images_[it->second]->chain.reset();  // drops its write claim; reopened read-only on first use
  }
  for (auto& e : images_) {
    if (e->read_only && !read_only)
      Log(LogLevel::kInfo, "serving " + e->path + " read-only: " + e->read_only_reason);
  }
  Log(LogLevel::kInfo, "serving " + std::to_string(images_.size()) + " image(s) from " + source);
  return Status::OK();
}

long Namespace::Find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? -1 : static_cast<long>(it->second);
}

Result<std::shared_ptr<Chain>> Namespace::GetChain(size_t i) {
  ImageEntry& e = *images_[i];
  std::lock_guard<std::mutex> l(e.mu);
  if (e.chain) return e.chain;
  if (!e.open_error.ok()) return e.open_error;
  auto chain = Chain::Open(e.path, e.format, !e.read_only);
  if (!chain.ok() && chain.status().code() == Code::kBusy && !e.read_only) {
    Log(LogLevel::kWarning, "serving " + e.path + " read-only from now on: " + chain.status().message());
    chain = Chain::Open(e.path, e.format, false);
    if (chain.ok()) e.read_only = true;  // the reason stays the one given at mount: see the log
  }
  if (!chain.ok()) {
    e.open_error = chain.status();
    Log(LogLevel::kError, "cannot serve " + e.path + ": " + chain.status().message());
    return e.open_error;
  }
  e.chain = std::shared_ptr<Chain>(std::move(chain).value());
  if (e.chain->depth() > kMaxLayers) Log(LogLevel::kWarning, e.path + ": only the first 64 layers are shown");
  return e.chain;
}

Result<std::vector<SnapshotInfo>> Namespace::Snapshots(size_t i) {
  IMGFS_ASSIGN_OR_RETURN(auto chain, GetChain(i));
  return chain->layer(0).Snapshots();
}

Result<std::shared_ptr<Chain>> Namespace::GetSnapshotChain(size_t i, size_t index) {
  IMGFS_ASSIGN_OR_RETURN(auto snaps, Snapshots(i));
  if (index >= snaps.size()) return NotFound("no such snapshot");
  ImageEntry& e = *images_[i];
  std::lock_guard<std::mutex> l(e.mu);
  auto it = e.snapshot_chains.find(index);
  if (it != e.snapshot_chains.end()) return it->second;
  auto chain = Chain::OpenSnapshot(e.path, e.format, snaps[index].id);
  if (!chain.ok()) {
    Log(LogLevel::kError, "cannot serve snapshot '" + snaps[index].name + "' of " + e.path + ": " +
                              chain.status().message());
    return chain.status();
  }
  std::shared_ptr<Chain> shared(std::move(chain).value());
  e.snapshot_chains[index] = shared;
  return shared;
}

std::string Namespace::LayerName(const Chain& chain, size_t depth) {
  return std::to_string(depth) + "-" + BaseName(chain.layer_path(depth)) + ".raw";
}

void Namespace::Reopen(size_t i) {
  ImageEntry& e = *images_[i];
  std::lock_guard<std::mutex> l(e.mu);
  e.chain.reset();
  e.snapshot_chains.clear();
  e.open_error = Status::OK();
  auto img = OpenImage(e.path, e.format, OpenOptions{});
  if (img.ok()) e.virtual_size = img.value()->VirtualSize();
}

void Namespace::ForgetSnapshots(size_t i) {
  ImageEntry& e = *images_[i];
  std::lock_guard<std::mutex> l(e.mu);
  e.snapshot_chains.clear();
}

std::vector<size_t> Namespace::BackingUsers(const std::string& real_path, size_t except) const {
  std::vector<size_t> out;
  for (size_t i = 0; i < images_.size(); ++i) {
    const auto& p = images_[i]->layer_paths;
    if (i != except && p.size() > 1 && std::find(p.begin() + 1, p.end(), real_path) != p.end()) out.push_back(i);
  }
  return out;
}

std::vector<size_t> Namespace::ImagesAt(const std::string& real_path) const {
  std::vector<size_t> out;
  for (size_t i = 0; i < images_.size(); ++i)
    if (!images_[i]->layer_paths.empty() && images_[i]->layer_paths[0] == real_path) out.push_back(i);
  return out;
}

void Namespace::JoinControls() {
  for (auto& e : images_) e->control.Join();
}

Status Namespace::CloseAll() {
  Status first;
  for (auto& e : images_) {
    std::shared_ptr<Chain> chain;
    {
      std::lock_guard<std::mutex> l(e->mu);
      chain = std::move(e->chain);
      e->snapshot_chains.clear();  // read-only: nothing to flush
    }
    if (!chain) continue;
    Status st = chain->Flush();
    if (!st.ok()) {
      Log(LogLevel::kError, "flush of " + e->path + " failed: " + st.message());
      if (first.ok()) first = st;
    }
  }
  return first;
}

}  // namespace imgfs::fs
