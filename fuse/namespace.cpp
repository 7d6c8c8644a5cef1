#include "namespace.h"

#include <algorithm>
#include <set>

#include "imagecore/format.h"
#include "imagecore/keyring.h"
#include "imagecore/log.h"
#include "imagecore/mutex.h"
#include "imagecore/ops.h"

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
    case NodeKind::kPartitionsDir: return base | kSubPartitionsDir;
    case NodeKind::kPartition: return base | (kSubPartitionBase + depth);
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
    case kSubPartitionsDir: return {NodeKind::kPartitionsDir, image, 0};
    default:
      if (lo >= kSubLayerBase && lo < kSubLayerBase + kMaxLayers) return {NodeKind::kLayer, image, lo - kSubLayerBase};
      if (lo >= kSubSnapshotBase && lo < kSubSnapshotBase + kMaxSnapshotViews)
        return {NodeKind::kSnapshot, image, lo - kSubSnapshotBase};
      if (lo >= kSubPartitionBase && lo < kSubPartitionBase + kMaxPartitionNumber)
        return {NodeKind::kPartition, image, lo - kSubPartitionBase};
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

std::vector<std::string> Namespace::HeaderMembers(const std::string& path) const {
  const ImageFiles f = ImageFiles::FromHeader(path, files_, files_.AccessFor(path).self);
  std::vector<std::string> out;
  for (const ImageFiles::Member& m : f.members()) out.push_back(m.path);
  return out;
}

void Namespace::Unclaim(ImageEntry& e) const {
  e.chain->layer(0).DropWriteClaim();
  e.claimed = false;
  e.stamp = e.files().Stamp(files_);
}

void Namespace::Append(std::unique_ptr<ImageEntry> e) {
  const size_t i = count_.load(std::memory_order_relaxed);
  if (i >= kChunk * kMaxChunks) {
    Log(LogLevel::kError, "too many images: left out " + e->path);
    return;
  }
  if (!chunks_[i / kChunk]) chunks_[i / kChunk].reset(new std::unique_ptr<ImageEntry>[kChunk]);
  const std::string name = e->name;
  chunks_[i / kChunk][i % kChunk] = std::move(e);
  count_.store(i + 1, std::memory_order_release);
  MutexLock l(names_mu_);
  by_name_[name] = i;
}

void Namespace::LoadKeyFile(const std::string& name, const io::FileStat& id) const {
  if (key_dir_.empty()) return;
  const std::string key_path = key_dir_ + "/" + name + ".key";
  if (!files_.Stat(key_path).ok()) return;
  auto key = ReadKeyFile(key_path);
  if (!key.ok()) {
    Log(LogLevel::kWarning, key.status().message());
    return;
  }
  AddImageKey(id, std::move(key).value());
}

void Namespace::LoadKeyDir() const {
  if (key_dir_.empty() || !is_dir_) return;
  for (const std::string& f : files_.List(key_dir_)) {
    if (f.size() <= 4 || f.compare(f.size() - 4, 4, ".key") != 0) continue;
    auto st = files_.Stat(source_ + "/" + f.substr(0, f.size() - 4));
    if (st.ok()) LoadKeyFile(f.substr(0, f.size() - 4), st.value());
  }
}

Status Namespace::Probe(const std::string& name, const std::string& path, bool explicit_file, bool read_only,
                        bool claim, std::unique_ptr<ImageEntry>* out) {
  const io::ImageAccess access = files_.AccessFor(path);
  const FormatDriver* drv = nullptr;
  io::FileStat id;
  {
    auto file = files_.Open(path, false, access.self);
    if (!file.ok()) return file.status();
    if (auto st = file.value()->Stat(); st.ok()) id = st.value();
    drv = ProbeFormat(*file.value());
    if (drv && !drv->open) return Unsupported(std::string(drv->name) + " images are not supported yet");
    if (!drv && !explicit_file && !HasRawExtension(name)) return Status::OK();  // not a disk image: skip quietly
    if (!drv) drv = &PlainFormat();
  }
  const std::string format = drv->name;
  LoadKeyFile(name, id);
  // Open the whole chain to validate it (a missing backing file leaves the
  // image out) and keep it. A claimed image stays claimed with QEMU's
  // locks from now on, so no VM starts writing it behind the mount.
  const bool writable = !read_only;
  auto open_chain = [&] {
    return !writable ? Chain::Open(path, format, false, access, &files_)
           : claim   ? Chain::Open(path, format, true, access, &files_)
                     : Chain::OpenUnclaimed(path, format, access, &files_);
  };
  auto chain = open_chain();
  if (!chain.ok() && chain.status().code() == Code::kNoKey) {
    // A wrong key: listed, locked, never read as noise (ctl unlock fixes it).
    Log(LogLevel::kWarning, chain.status().message() + "; listed locked");
    ForgetImageKey(id);
    chain = open_chain();
  }
  std::string ro_reason = read_only ? "mounted read-only" : "";
  bool claimed = writable && claim && chain.ok();
  if (!chain.ok() && writable && chain.status().code() == Code::kBusy) {
    // A VM (or another imgfs, or a program still making it) has it: the
    // first write claims it once it is let go; until then
    // user.imgfs.read_only names the holder.
    Log(LogLevel::kInfo, chain.status().message() + ": claimed when first written");
    chain = Chain::OpenUnclaimed(path, format, access, &files_);
  }
  if (!chain.ok() && writable && chain.status().sys_errno() == EACCES) {
    chain = Chain::Open(path, format, false, access, &files_);
    ro_reason = "no write permission on the image file";
    claimed = false;
  }
  if (!chain.ok()) return chain.status();
  Image* img = &chain.value()->layer(0);
  auto entry = std::make_unique<ImageEntry>();
  entry->name = name;
  entry->path = path;
  entry->driver = drv;
  entry->access = access;
  entry->virtual_size = img->VirtualSize();
  if (!chain.value()->parent_mismatch().empty()) {
    Log(LogLevel::kWarning, chain.value()->parent_mismatch());
    if (ro_reason.empty()) ro_reason = chain.value()->parent_mismatch();
  }
  if (ro_reason.empty() && img->read_only()) ro_reason = img->read_only_reason();
  if (!ro_reason.empty()) entry->read_only.Set(ro_reason);
  for (size_t d = 0; d < chain.value()->depth(); ++d)
    entry->layer_paths.push_back(files_.RealPath(chain.value()->layer_path(d)));
  if (entry->layer_paths.size() > 1) entry->backing_path = entry->layer_paths[1];
  entry->set_files(ImageFiles::FromImage(*img, path, files_));
  if (access.self.pinned) {
    entry->file_ino = access.self.ino;
    entry->file_dev = access.self.dev;
  } else if (auto st = files_.Stat(path); st.ok()) {
    entry->file_ino = st.value().ino;
    entry->file_dev = st.value().dev;
  }
  if (!entry->read_only.is()) {
    MutexLock l(entry->mu);  // not shared yet: for the analysis
    entry->chain = std::shared_ptr<Chain>(std::move(chain).value());
    if (claimed) entry->claimed = true;  // the writable open took it; it stays
    else Unclaim(*entry);
  }
  // A read-only image's chain holds no claim: closed now and opened on
  // first use (GetChain), so a large library costs no descriptors.
  if (entry->read_only.is() && !read_only)
    Log(LogLevel::kInfo, "serving " + path + " read-only: " + entry->read_only.why());
  *out = std::move(entry);
  return Status::OK();
}

namespace {
// The depth at which `overlay`'s backing chain holds `b` (0: it does not).
size_t DepthIn(const ImageEntry& overlay, const ImageEntry& b) {
  if (b.layer_paths.empty()) return 0;
  for (size_t d = 1; d < overlay.layer_paths.size(); ++d)
    if (overlay.layer_paths[d] == b.layer_paths[0]) return d;
  return 0;
}
void ServeReadOnly(ImageEntry& e, const std::string& why) {
  MutexLock l(e.mu);
  if (!e.read_only.Set(why)) return;
  e.claimed = false;
  e.chain.reset();  // its write claim goes (open files keep theirs); reopened read-only on first use
  Log(LogLevel::kInfo, "serving " + e.path + " read-only: " + why);
}
}  // namespace

// Whether the owner of the file at `overlay` may write the file at `b`.
bool Namespace::OwnerMayWrite(const std::string& overlay, const std::string& b) const {
  auto o = files_.Stat(overlay);
  auto f = files_.Stat(b);
  if (!o.ok() || !f.ok()) return false;
  if (o.value().uid == 0) return true;
  const io::Access who = io::AccessOf(o.value().uid, o.value().gid);
  return io::MayAccess(f.value().uid, f.value().gid, f.value().mode, o.value().uid, o.value().gid, who.groups, true);
}
// An image that another listed image builds on, directly or deeper down its
// chain, is served read-only: writing it would silently change what the
// overlay shows. That holds where the overlay's owner could change it
// anyway; else any user could freeze another's image by making an overlay
// of it: the overlay is the one served read-only then.
void Namespace::ServeAsBacking(ImageEntry& b, ImageEntry& overlay) const {
  if (!OwnerMayWrite(overlay.path, b.path)) {
    ServeReadOnly(overlay, "its backing chain holds " + b.name + ", which belongs to someone who may change it");
    return;
  }
  const size_t d = DepthIn(overlay, b);
  ServeReadOnly(b, d == 1 ? "it is the backing file of " + overlay.name
                          : "it is in the backing chain of " + overlay.name + " (depth " + std::to_string(d) + ")");
}
namespace {
bool BuildsOn(const ImageEntry& overlay, const ImageEntry& b) { return DepthIn(overlay, b) > 0; }
}  // namespace

// Whether the file of `e` still opens as the chain it was listed with.
bool Namespace::SameChain(const ImageEntry& e) const {
  auto chain = Chain::Open(e.path, e.format(), false, e.access, &files_);
  if (!chain.ok() || chain.value()->depth() != e.layer_paths.size()) return false;
  for (size_t d = 0; d < e.layer_paths.size(); ++d)
    if (files_.RealPath(chain.value()->layer_path(d)) != e.layer_paths[d]) return false;
  return true;
}

// Every listed image another one builds on (its file is a layer below the
// top of the other's chain), found through a map of the images' files:
// one pass over the chains, not every pair of images.
void Namespace::ProtectBackingFiles() {
  std::unordered_map<std::string, std::vector<size_t>> by_file;
  for (size_t j = 0; j < size(); ++j)
    if (!image(j).removed && !image(j).layer_paths.empty()) by_file[image(j).layer_paths[0]].push_back(j);
  for (size_t i = 0; i < size(); ++i) {
    std::set<size_t> below;  // by index, as listed
    for (size_t d = 1; d < image(i).layer_paths.size(); ++d) {
      auto it = by_file.find(image(i).layer_paths[d]);
      if (it == by_file.end()) continue;
      for (size_t j : it->second)
        if (j != i) below.insert(j);
    }
    for (size_t j : below) ServeAsBacking(image(j), image(i));
  }
}

Status Namespace::Scan(const std::string& source, bool read_only, bool claim_at_mount) {
  source_ = source;
  claim_at_mount_ = claim_at_mount;
  read_only_ = read_only;
  IMGFS_ASSIGN_OR_RETURN(io::FileStat st, files_.Stat(source));
  if (!st.is_dir) {
    if (!st.is_regular && !st.is_block) return InvalidArgument(source + ": not a directory or an image file");
    std::unique_ptr<ImageEntry> e;
    Status s = Probe(BaseName(source), source, true, read_only, claim_at_mount, &e);
    if (!s.ok()) return s.Prefixed(source);
    Append(std::move(e));
  } else {
    is_dir_ = true;
    // Every key first: an image's chain may hold another image of SOURCE.
    LoadKeyDir();
    const std::vector<std::string> names = files_.List(source);
    // Files that belong to another image (extents, data files) are never
    // probed as images: opening them writable would also claim them.
    std::set<std::string> members;
    for (const std::string& name : names)
      for (const std::string& m : HeaderMembers(source + "/" + name)) members.insert(m);
    scanning_ = true;
    for (const std::string& name : names) {
      if (members.count(files_.RealPath(source + "/" + name))) {
        Log(LogLevel::kInfo, source + "/" + name + ": a file of another image, not listed");
        continue;
      }
      Added(name);
    }
    scanning_ = false;
  }
  ProtectBackingFiles();
  Log(LogLevel::kInfo, "serving " + std::to_string(size()) + " image(s) from " + source);
  return Status::OK();
}

long Namespace::Added(const std::string& name, bool moved_in) {
  const std::string path = source_ + "/" + name;
  if (IsTempName(name)) {
    if (scanning_) Log(LogLevel::kInfo, path + ": a file an interrupted create left, not listed");
    return -1;
  }
  auto fst = files_.Stat(path);
  if (!fst.ok() || !fst.value().is_regular) return -1;
  if (!scanning_) {
    const long owner = OwnerOf(files_.RealPath(path));
    if (owner >= 0) {
      // An extent or data file was written: its image is what changed.
      ImageEntry& e = image(size_t(owner));
      {
        MutexLock l(e.mu);
        if (e.claimed) return -1;  // the mount's own writes
      }
      Reopen(size_t(owner));
      Log(LogLevel::kInfo, path + " (a file of " + e.name + ") was changed by another program: reopened");
      return owner;
    }
    const std::string of = NewMemberOf(files_.RealPath(path));
    if (!of.empty()) {
      Log(LogLevel::kInfo, path + ": a new file of " + of + ", not listed");
      return -1;
    }
    // A new image may take files that are listed as images of their own.
    for (const std::string& real : HeaderMembers(path)) {
      for (size_t j = 0; j < size(); ++j)
        if (!image(j).removed && !image(j).layer_paths.empty() && image(j).layer_paths[0] == real) Unlist(j, "it is a file of " + name);
    }
  }
  const long old = Find(name);
  if (old >= 0) {
    ImageEntry& e = image(size_t(old));
    if (e.file_ino == fst.value().ino && e.file_dev == fst.value().dev) {
      // The same file, written and closed. Not by the mount if it holds the
      // claim; else someone else changed it: what is cached is stale. That
      // holds with no chain open too: the size read at the last event may
      // be a half-made image's (qemu-img create closes the file several
      // times, the header first saying size 0).
      {
        MutexLock l(e.mu);
        if (e.claimed) return -1;
      }
      if (SameChain(e)) {
        Reopen(size_t(old));
        Log(LogLevel::kInfo, path + " was changed by another program: reopened");
        return old;
      }
      // It now names other backing files (qemu-img create writes the
      // header before the backing name): list it anew, so that what it
      // builds on is protected. An entry's chain paths never change.
    }
    Removed(name);  // replaced by another file of that name, or by another chain
  }
  std::unique_ptr<ImageEntry> e;
  Status s = Probe(name, path, false, read_only_, claim_at_mount_ && (scanning_ || moved_in), &e);
  if (!s.ok()) {
    std::string why = s.message();
    if (why.rfind(path + ": ", 0) == 0) why = why.substr(path.size() + 2);
    Log(LogLevel::kWarning, "left out " + path + ": " + why);
    return -1;
  }
  if (!e) return -1;  // not an image
  if (!scanning_) {
    // Settled before it is listed: its backing file may be listed, or it
    // may be the backing file of a listed image.
    for (size_t j = 0; j < size(); ++j) {
      if (image(j).removed) continue;
      if (BuildsOn(*e, image(j))) ServeAsBacking(image(j), *e);
      if (BuildsOn(image(j), *e)) ServeAsBacking(*e, image(j));
    }
  }
  const size_t index = size();
  Append(std::move(e));
  return static_cast<long>(index);
}

std::string Namespace::NewMemberOf(const std::string& real) {
  // A listed image grown by an extent file: its header names it now.
  for (size_t j = 0; j < size(); ++j) {
    const ImageEntry& e = image(j);
    if (e.removed || !e.driver->caps.several_files) continue;
    for (const std::string& m : HeaderMembers(e.path))
      if (m == real) return e.name;
  }
  // An image being made: its extents take their names before its
  // descriptor leaves its temporary one; and the descriptor may have taken
  // its own name already, its event still on the way (so not listed yet).
  // A descriptor renamed between the listing and the look at it is looked
  // for again under its new name.
  for (int attempt = 0; attempt < 3; ++attempt) {
    bool vanished = false;
    for (const std::string& name : files_.List(source_)) {
      if (!IsTempName(name)) {
        MutexLock l(names_mu_);
        if (by_name_.count(name)) continue;  // listed: looked at above
      }
      const std::string path = source_ + "/" + name;
      for (const std::string& m : HeaderMembers(path))
        if (m == real) return name;
      if (!files_.Stat(path).ok()) vanished = true;
    }
    if (!vanished) break;
  }
  return "";
}

long Namespace::Removed(const std::string& name) {
  long i;
  {
    MutexLock l(names_mu_);
    auto it = by_name_.find(name);
    if (it == by_name_.end()) return -1;
    i = static_cast<long>(it->second);
  }
  Unlist(size_t(i), "it left " + source_);
  return i;
}

void Namespace::Unlist(size_t i, const std::string& why) {
  ImageEntry& e = image(i);
  {
    MutexLock l(names_mu_);
    by_name_.erase(e.name);
  }
  e.removed = true;
  std::shared_ptr<Chain> chain;
  {
    MutexLock l(e.mu);
    chain = std::move(e.chain);  // its claim goes with it; open files keep theirs until closed
    e.DropSnapshotViews();
  }
  if (chain) {
    Status st = chain->Flush();
    if (!st.ok()) Log(LogLevel::kError, "flush of " + e.path + " failed: " + st.message());
  }
  Log(LogLevel::kInfo, "no longer serving " + e.path + ": " + why);
}

long Namespace::OwnerOf(const std::string& real_path) {
  for (size_t i = 0; i < size(); ++i) {
    const ImageEntry& e = image(i);
    if (e.removed) continue;
    if (e.files().HasMember(real_path)) return static_cast<long>(i);
  }
  return -1;
}


long Namespace::Find(const std::string& name) const {
  MutexLock l(names_mu_);
  auto it = by_name_.find(name);
  return it == by_name_.end() ? -1 : static_cast<long>(it->second);
}

Result<std::shared_ptr<Chain>> Namespace::GetChain(size_t i) {
  ImageEntry& e = image(i);
  MutexLock l(e.mu);
  if (e.chain) return e.chain;
  if (!e.open_error.ok()) return e.open_error;
  // Never claimed here: the file was changed by another program, which
  // may not be done (ClaimForWrite claims it).
  auto chain = e.read_only.is() ? Chain::Open(e.path, e.format(), false, e.access, &files_)
                                : Chain::OpenUnclaimed(e.path, e.format(), e.access, &files_);
  if (!chain.ok()) {
    Log(LogLevel::kError, "cannot serve " + e.path + ": " + chain.status().message());
    // A key comes and goes (ctl unlock, keydir): not kept as the answer.
    if (chain.status().code() == Code::kNoKey) return chain.status();
    e.open_error = chain.status();
    return e.open_error;
  }
  e.chain = std::shared_ptr<Chain>(std::move(chain).value());
  if (!e.read_only.is()) Unclaim(e);
  if (e.chain->depth() > kMaxLayers) Log(LogLevel::kWarning, e.path + ": only the first 64 layers are shown");
  return e.chain;
}

Result<uint64_t> Namespace::Resize(size_t i, Chain& chain, const std::string& size, bool shrink) {
  ImageEntry& e = image(i);
  auto out = ops::Resize(chain, size, shrink);
  e.virtual_size = chain.VirtualSize();
  e.set_files(ImageFiles::FromImage(chain.layer(0), e.path, files_));
  return out;
}

Status Namespace::ClaimForWrite(size_t i) {
  ImageEntry& e = image(i);
  if (e.read_only.is()) return ReadOnly(e.name + " is served read-only: " + e.read_only.why());
  IMGFS_RETURN_IF_ERROR(GetChain(i).status());
  MutexLock l(e.mu);
  if (e.claimed) return Status::OK();
  if (!e.chain) return Busy(e.name + " is being reopened; try again");
  IMGFS_RETURN_IF_ERROR(e.chain->layer(0).ClaimWriting());
  if (e.files().Stamp(files_) != e.stamp) {
    // Written by someone else while unclaimed: what the chain has cached
    // may be stale. Open it afresh (handles open now keep the old one).
    e.chain->layer(0).DropWriteClaim();  // the fresh open claims with its own descriptor
    auto fresh = Chain::Open(e.path, e.format(), true, e.access, &files_);
    if (!fresh.ok()) return fresh.status();
    Log(LogLevel::kInfo, e.path + " changed while the mount did not hold it: reopened");
    e.chain = std::shared_ptr<Chain>(std::move(fresh).value());
    e.DropSnapshotViews();
    e.virtual_size = e.chain->VirtualSize();
  }
  e.claimed = true;
  return Status::OK();
}

Result<std::vector<Partition>> Namespace::Partitions(size_t i) {
  IMGFS_ASSIGN_OR_RETURN(auto chain, GetChain(i));
  const Chain* c = chain.get();
  return ReadPartitionTable([c](uint64_t off, void* buf, size_t len) { return c->Read(0, off, buf, len); },
                            c->VirtualSize());
}

std::string Namespace::WhyReadOnly(size_t i) {
  ImageEntry& e = image(i);
  if (e.read_only.is()) return e.read_only.why();
  auto chain = GetChain(i);
  if (!chain.ok()) return chain.status().message();
  const Image& top = chain.value()->layer(0);
  std::string damage = top.DamageFound();
  if (!damage.empty()) return damage;
  // Turned read-only since the mount (a repair at the claim that failed).
  if (top.read_only()) return top.read_only_reason();
  MutexLock l(e.mu);
  if (e.claimed) return "";
  Status st = chain.value()->layer(0).CheckWriteClaim();
  if (st.ok()) return "";
  std::string why = st.message();
  if (why.rfind(e.path + ": ", 0) == 0) why = why.substr(e.path.size() + 2);
  return why;
}

Result<std::vector<SnapshotInfo>> Namespace::Snapshots(size_t i) {
  IMGFS_ASSIGN_OR_RETURN(auto chain, GetChain(i));
  return chain->layer(0).Snapshots();
}

Status Namespace::NameSnapshots(size_t i, std::vector<std::string>* names, std::vector<uint64_t>* sizes) {
  ImageEntry& e = image(i);
  uint64_t gen;
  {
    MutexLock l(e.mu);
    if (e.snapshots.named) {
      *names = e.snapshots.names;
      *sizes = e.snapshots.sizes;
      return Status::OK();
    }
    gen = e.snapshots_gen;
  }
  IMGFS_ASSIGN_OR_RETURN(auto snaps, Snapshots(i));
  *names = ops::SnapshotFileNames(snaps);
  sizes->clear();
  for (const auto& s : snaps) sizes->push_back(s.virtual_size);
  MutexLock l(e.mu);
  if (gen == e.snapshots_gen && !e.snapshots.named) {  // no change meanwhile
    e.snapshots.names = *names;
    e.snapshots.sizes = *sizes;
    for (size_t k = 0; k < names->size(); ++k) e.snapshots.by_name.emplace((*names)[k], k);
    e.snapshots.named = true;
  }
  return Status::OK();
}

Result<std::vector<std::string>> Namespace::SnapshotNames(size_t i) {
  std::vector<std::string> names;
  std::vector<uint64_t> sizes;
  IMGFS_RETURN_IF_ERROR(NameSnapshots(i, &names, &sizes));
  return names;
}

Result<size_t> Namespace::FindSnapshot(size_t i, const std::string& name) {
  ImageEntry& e = image(i);
  {
    MutexLock l(e.mu);
    if (e.snapshots.named) {
      auto it = e.snapshots.by_name.find(name);
      if (it == e.snapshots.by_name.end()) return NotFound("no such snapshot");
      return it->second;
    }
  }
  IMGFS_ASSIGN_OR_RETURN(auto names, SnapshotNames(i));
  for (size_t k = 0; k < names.size(); ++k)
    if (names[k] == name) return k;
  return NotFound("no such snapshot");
}

Result<uint64_t> Namespace::SnapshotSize(size_t i, size_t index) {
  ImageEntry& e = image(i);
  {
    MutexLock l(e.mu);
    if (e.snapshots.named) {
      if (index >= e.snapshots.sizes.size()) return NotFound("no such snapshot");
      return e.snapshots.sizes[index];
    }
  }
  std::vector<std::string> names;
  std::vector<uint64_t> sizes;
  IMGFS_RETURN_IF_ERROR(NameSnapshots(i, &names, &sizes));
  if (index >= sizes.size()) return NotFound("no such snapshot");
  return sizes[index];
}

Result<std::shared_ptr<Chain>> Namespace::GetSnapshotChain(size_t i, size_t index) {
  IMGFS_ASSIGN_OR_RETURN(auto snaps, Snapshots(i));
  if (index >= snaps.size()) return NotFound("no such snapshot");
  ImageEntry& e = image(i);
  MutexLock l(e.mu);
  auto it = e.snapshots.chains.find(index);
  if (it != e.snapshots.chains.end()) return it->second;
  auto chain = Chain::OpenSnapshot(e.path, e.format(), snaps[index].id, e.access, &files_);
  if (!chain.ok()) {
    Log(LogLevel::kError, "cannot serve snapshot '" + snaps[index].name + "' of " + e.path + ": " +
                              chain.status().message());
    return chain.status();
  }
  std::shared_ptr<Chain> shared(std::move(chain).value());
  e.snapshots.chains[index] = shared;
  return shared;
}

std::string Namespace::LayerName(const Chain& chain, size_t depth) {
  return std::to_string(depth) + "-" + BaseName(chain.layer_path(depth)) + ".raw";
}

void Namespace::Reopen(size_t i) {
  ImageEntry& e = image(i);
  MutexLock l(e.mu);
  e.chain.reset();
  e.DropSnapshotViews();
  e.open_error = Status::OK();
  OpenOptions opts = LayerOptions(e.access, true);
  opts.opener = &files_;
  auto img = OpenImage(e.path, e.format(), opts);
  if (img.ok()) e.virtual_size = img.value()->VirtualSize();
}

namespace {
Status RefuseIfPlain(const std::shared_ptr<Chain>& chain, const ImageEntry& e) {
  if (chain->layer(0).Info().encrypted) return Status::OK();
  return InvalidArgument(e.name + " is not encrypted");
}
}  // namespace

// The open chain takes the key change at once (its layers follow the
// keyring): nothing is reopened, so the mount's claim and the views stay.
Status Namespace::Unlock(size_t i, SecretBytes key) {
  ImageEntry& e = image(i);
  IMGFS_ASSIGN_OR_RETURN(auto chain, GetChain(i));
  IMGFS_RETURN_IF_ERROR(RefuseIfPlain(chain, e));
  io::FileStat id;
  id.dev = e.file_dev;
  id.ino = e.file_ino;
  AddImageKey(id, std::move(key));
  const std::string why = chain->layer(0).KeyMissing();  // unlocks here, not in the next read
  if (why.empty()) return Status::OK();
  ForgetImageKey(id);
  (void)chain->layer(0).KeyMissing();  // locked again, as before
  return Status(Code::kNoKey, why);
}

Status Namespace::Lock(size_t i) {
  ImageEntry& e = image(i);
  IMGFS_ASSIGN_OR_RETURN(auto chain, GetChain(i));
  IMGFS_RETURN_IF_ERROR(RefuseIfPlain(chain, e));
  IMGFS_RETURN_IF_ERROR(chain->Flush());  // what was written stays
  io::FileStat id;
  id.dev = e.file_dev;
  id.ino = e.file_ino;
  ForgetImageKey(id);
  ++e.key_epoch;  // views opened before stop reading and writing
  (void)chain->layer(0).KeyMissing();  // the cipher goes now
  return Status::OK();
}

void Namespace::ForgetSnapshots(size_t i) {
  ImageEntry& e = image(i);
  MutexLock l(e.mu);
  e.DropSnapshotViews();
}

std::vector<size_t> Namespace::BackingUsers(const std::string& real_path, size_t except) {
  std::vector<size_t> out;
  for (size_t i = 0; i < size(); ++i) {
    const auto& p = image(i).layer_paths;
    if (i != except && !image(i).removed && p.size() > 1 && std::find(p.begin() + 1, p.end(), real_path) != p.end())
      out.push_back(i);
  }
  return out;
}

std::vector<size_t> Namespace::ImagesAt(const std::string& real_path) {
  std::vector<size_t> out;
  for (size_t i = 0; i < size(); ++i)
    if (!image(i).removed && !image(i).layer_paths.empty() && image(i).layer_paths[0] == real_path) out.push_back(i);
  return out;
}

void Namespace::DropCaches(size_t i) {
  ImageEntry& e = image(i);
  e.caches_held.store(false, std::memory_order_relaxed);  // first: a use from now on sets it again
  std::shared_ptr<Chain> chain;
  std::unordered_map<size_t, std::shared_ptr<Chain>> snapshots;
  {
    MutexLock l(e.mu);
    chain = e.chain;
    // A read-only image's chain holds no claim: it closes too (GetChain
    // opens it again). A writable one's descriptor holds QEMU's lock.
    if (e.read_only.is()) e.chain.reset();
    snapshots.swap(e.snapshots.chains);
  }
  if (chain) chain->DropCaches();
  for (auto& [index, view] : snapshots) view->DropCaches();
}

void Namespace::JoinControls() {
  for (size_t i = 0; i < size(); ++i) image(i).control.Join();
}

Status Namespace::CloseAll() {
  Status first;
  for (size_t i = 0; i < size(); ++i) {
    ImageEntry* e = &image(i);
    std::shared_ptr<Chain> chain;
    {
      MutexLock l(e->mu);
      chain = std::move(e->chain);
      e->DropSnapshotViews();  // read-only: nothing to flush
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
