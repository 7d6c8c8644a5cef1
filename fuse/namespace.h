// The namespace: which files the mount shows and what each one is.
//
//   /                      kRoot
//   /<image>/              kImageDir      one per image file in SOURCE
//   /<image>/disk.raw      kDisk          the chain from depth 0, writable
//   /<image>/info.json     kInfo
//   /<image>/layers/       kLayersDir
//   /<image>/layers/N-x.raw kLayer        the chain from depth N, read-only
//   /<image>/snapshots/     kSnapshotsDir  formats with internal snapshots
//   /<image>/snapshots/s.raw kSnapshot     internal snapshot, read-only
//   /<image>/ctl           kCtl           control commands and their state
//   /<image>/partitions/pN.raw kPartition  partition N of the guest disk
//
// Inode numbers are computed, not allocated: image i owns the block
// (i+1) << 16 and the kind and layer live in the low bits, so lookups need
// no table and forget needs no bookkeeping.
//
// Images are probed at mount (header only: cheap even for thousands); the
// backing chain is opened on first use and kept open until unmount.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "control.h"
#include "imagecore/chain.h"
#include "imagecore/file.h"
#include "imagecore/format.h"
#include "imagecore/image_files.h"
#include "imagecore/named_files.h"
#include "imagecore/partitions.h"
#include "imagecore/status.h"
#include "imagecore/mutex.h"

namespace imgfs::fs {

enum class NodeKind {
  kRoot, kImageDir, kDisk, kInfo, kLayersDir, kLayer, kSnapshotsDir, kSnapshot, kCtl, kPartitionsDir, kPartition, kInvalid
};

constexpr uint64_t kRootIno = 1;
constexpr unsigned kImageShift = 16;
constexpr uint64_t kSubDir = 0, kSubDisk = 1, kSubInfo = 2, kSubLayersDir = 3, kSubSnapshotsDir = 4, kSubCtl = 5,
                   kSubPartitionsDir = 6;
constexpr uint64_t kSubLayerBase = 0x100;  // + depth, depth < 64
constexpr uint64_t kMaxLayers = 64;
constexpr uint64_t kSubSnapshotBase = 0x1000;  // + index in the snapshot table
constexpr uint64_t kMaxSnapshotViews = 0xe000;
constexpr uint64_t kSubPartitionBase = 0xf000;  // + partition number
constexpr uint64_t kMaxPartitionNumber = 0x1000;

struct NodeRef {
  NodeKind kind = NodeKind::kInvalid;
  size_t image = 0;  // index into images
  size_t depth = 0;  // kLayer: depth; kSnapshot: index in the snapshot table; kPartition: its number
};

uint64_t InoOf(NodeKind kind, size_t image, size_t depth = 0);
NodeRef NodeOf(uint64_t ino);

// Whether the mount serves an image read-only, and why: one is never set
// without the other (user.imgfs.read_only shows the reason).
class ReadOnlyMark {
 public:
  bool is() const { return set_.load(); }
  std::string why() const {
    MutexLock l(mu_);
    return why_;
  }
  // False if it was set already (the first reason stays).
  bool Set(const std::string& why) {
    MutexLock l(mu_);
    if (set_.load()) return false;
    why_ = why.empty() ? "read-only" : why;
    set_.store(true);
    return true;
  }

 private:
  mutable Mutex mu_;
  std::string why_;  // guarded by mu_
  std::atomic<bool> set_{false};
};

struct ImageEntry {
  std::string name;    // file name in SOURCE, and the directory's name
  std::string path;    // path of the image file
  const FormatDriver* driver = nullptr;  // probed at mount: what it can do
  std::string format() const { return driver->name; }
  // The rights every file of the image is opened with: its owner's when the
  // daemon (root) serves other users, so that an image names nothing its
  // owner could not open (see imagecore/access.h).
  io::ImageAccess access;
  std::atomic<uint64_t> virtual_size{0};  // of disk.raw; changes with resize and snapshot apply
  ReadOnlyMark read_only;
  std::vector<std::string> layer_paths;  // real paths of the chain's files, top first (at mount)
  std::string backing_path;              // real path of its backing file, or ""
  // Its files, from listing on (a resize may add some): files other than
  // its image file are not listed as images, and a change to one is a
  // change to this image.
  ImageFiles files() const {
    MutexLock l(files_mu_);
    return files_;
  }
  void set_files(ImageFiles f) {
    MutexLock l(files_mu_);
    files_ = std::move(f);
  }
  uint64_t file_ino = 0, file_dev = 0;   // the image file when it was probed
  std::atomic<bool> removed{false};      // gone from SOURCE; its index is never reused
  Control control;                       // the ctl file's commands
  std::atomic<int> open_partition_views{0};  // writes to disk.raw then invalidate them
  // Raised by ctl lock: views opened before it refuse further I/O.
  std::atomic<uint32_t> key_epoch{0};
  // When a request last used the image, in the memory keeper's ticks, and
  // whether it may hold caches since the keeper last gave them back.
  std::atomic<uint32_t> last_use{0};
  std::atomic<bool> caches_held{true};
  void Touch(uint32_t tick) {
    // Stores only when something changes: readers on many threads then
    // share the cache line instead of taking turns writing it.
    if (last_use.load(std::memory_order_relaxed) != tick) last_use.store(tick, std::memory_order_relaxed);
    if (!caches_held.load(std::memory_order_relaxed)) caches_held.store(true, std::memory_order_relaxed);
  }

  Mutex mu;
  std::shared_ptr<Chain> chain GUARDED_BY(mu);  // opened at mount (read-only backing files: on first use)
  // Whether the mount holds QEMU's write claim on the image: from the scan
  // on (the default), or with -o claim=write from the first write (open
  // for writing, control) on, so that until then a VM may use the image.
  // Kept until unmount.
  bool claimed GUARDED_BY(mu) = false;
  // The size and mtime of every file of the image when the claim was
  // given up at mount: if they differ when it is taken, someone else wrote
  // the image meanwhile and the chain is opened afresh.
  std::string stamp GUARDED_BY(mu);
  Status open_error GUARDED_BY(mu);
  // The snapshot views, by table index: chains opened on first use, and
  // the file names, made once per table (each lookup would otherwise name
  // the whole table). Dropped together whenever the table may change.
  struct SnapshotViews {
    std::unordered_map<size_t, std::shared_ptr<Chain>> chains;
    bool named = false;
    std::vector<std::string> names;
    std::vector<uint64_t> sizes;  // each snapshot's disk size
    std::unordered_map<std::string, size_t> by_name;
  };
  SnapshotViews snapshots GUARDED_BY(mu);
  uint64_t snapshots_gen GUARDED_BY(mu) = 0;  // counts the drops
  void DropSnapshotViews() REQUIRES(mu) {
    snapshots = {};
    ++snapshots_gen;
  }

 private:
  mutable Mutex files_mu_;  // taken alone or innermost
  ImageFiles files_ GUARDED_BY(files_mu_);
};

class Namespace {
 public:
  // Files come from `files` (the host's; tests give their own).
  explicit Namespace(const FileOpener& files = HostFiles()) : files_(files) {}

  // Scans SOURCE (a directory, or one image file). Files that are not
  // images are skipped; images that cannot be opened are left out; both
  // are logged with the reason. Fails only if SOURCE itself is unusable.
  // With `claim_at_mount`, every writable image found now, or later
  // moved into SOURCE whole, is claimed (QEMU's locks) from then on; an
  // image another program writes into SOURCE, or that a VM holds, only
  // when the mount first writes it: that program may not be done.
  Status Scan(const std::string& source, bool read_only, bool claim_at_mount = true);

  // Images ever listed, removed ones included (their slots stay, so an
  // index - and the inodes made from it - never means another image).
  // Slots are appended by one thread at a time (the scan, then the
  // watcher) and read by any: a slot is filled before `count_` covers it.
  size_t size() const { return count_.load(std::memory_order_acquire); }
  ImageEntry& image(size_t i) { return *chunks_[i / kChunk][i % kChunk]; }
  // Marks image i used now (see MemoryKeeper).
  void Touch(size_t i) { image(i).Touch(tick_.load(std::memory_order_relaxed)); }
  uint32_t tick() const { return tick_.load(std::memory_order_relaxed); }
  void Tick() { tick_.fetch_add(1, std::memory_order_relaxed); }
  // Index of the image now named `name`, or -1.
  long Find(const std::string& name) const;
  // SOURCE changed (the watcher): the file `name` appeared or was
  // rewritten (`moved_in`: renamed into SOURCE), or went away. Returns
  // the index added, reopened (the same file, changed by another program)
  // or removed, or -1.
  long Added(const std::string& name, bool moved_in = false);
  long Removed(const std::string& name);
  // Index of the listed image that has the file at `real_path` among its
  // other files, or -1.
  long OwnerOf(const std::string& real_path);
  bool watches() const { return is_dir_; }
  // The chain of image i, opening it on first use.
  Result<std::shared_ptr<Chain>> GetChain(size_t i);
  // Takes the write claim on image i before it is first written (see
  // ImageEntry::claimed). ReadOnly or Busy (naming the holder) if it may
  // not be written.
  Status ClaimForWrite(size_t i);
  // Resizes the disk of image i (see ops::Resize); its files follow (a
  // vmdk may gain or lose extent files). Returns the new size.
  Result<uint64_t> Resize(size_t i, Chain& chain, const std::string& size, bool shrink);
  // The partitions of image i's disk, read from its partition table now.
  Result<std::vector<Partition>> Partitions(size_t i);
  // Why image i may not be written now, or "" if it may.
  std::string WhyReadOnly(size_t i);
  // Internal snapshots of image i, and their view file names.
  Result<std::vector<SnapshotInfo>> Snapshots(size_t i);
  // The file names of its snapshots (ops::SnapshotFileNames), by table
  // index, and the index of one name.
  Result<std::vector<std::string>> SnapshotNames(size_t i);
  Result<size_t> FindSnapshot(size_t i, const std::string& name);
  Result<uint64_t> SnapshotSize(size_t i, size_t index);
  // The read-only chain of snapshot `index` of image i, opened on first use.
  Result<std::shared_ptr<Chain>> GetSnapshotChain(size_t i, size_t index);
  // The name of the layer file at `depth` ("1-base.qcow2.raw").
  static std::string LayerName(const Chain& chain, size_t depth);
  // Forgets the open chain of image i (and its snapshot views) so that the
  // next use opens it again: after another image's commit changed its file.
  // Open files keep the chain they have.
  void Reopen(size_t i);
  // Forgets the snapshot views of image i (after snapshot control).
  void ForgetSnapshots(size_t i);
  // -o keydir=DIR: DIR/NAME.key holds the secret of the encrypted image
  // NAME, read when NAME is listed. Before Scan.
  void SetKeyDir(const std::string& dir) { key_dir_ = dir; }
  // ctl unlock: gives image i the key (read with its writer's rights); its
  // open chain takes it at once. A key that opens nothing is refused, forgotten.
  Status Unlock(size_t i, SecretBytes key);
  // ctl lock: flushes and forgets image i's key; views opened before get
  // EACCES from then on (key_epoch).
  Status Lock(size_t i);
  // Images other than `except` whose chain holds `real_path` below the top.
  std::vector<size_t> BackingUsers(const std::string& real_path, size_t except);
  // Images whose own file is `real_path`.
  std::vector<size_t> ImagesAt(const std::string& real_path);
  // Waits for the control commands still running in the background.
  void JoinControls();
  // Gives back image i's cached metadata: its chain's tables (the whole
  // chain if the image is read-only) and the snapshot views' chains (open
  // files keep theirs). Opened and loaded again on use.
  void DropCaches(size_t i);
  // Flushes and closes every open chain; returns the first error.
  Status CloseAll();
  const std::string& source() const { return source_; }
  const FileOpener& files() const { return files_; }

 private:
  // The snapshot file names and sizes of image i: cached, or made and
  // cached (unless the table was dropped meanwhile).
  Status NameSnapshots(size_t i, std::vector<std::string>* names, std::vector<uint64_t>* sizes);
  // Opens the image at `path`, claimed for writing if `claim` and it may;
  // *out stays null for a file that is no image.
  Status Probe(const std::string& name, const std::string& path, bool explicit_file, bool read_only, bool claim,
               std::unique_ptr<ImageEntry>* out);
  // Serves read-only every listed image another listed image builds on.
  void ProtectBackingFiles();
  void Append(std::unique_ptr<ImageEntry> e);
  // Real paths of the files other than its image file that the image at
  // `path` names in its header.
  std::vector<std::string> HeaderMembers(const std::string& path) const;
  // Gives up the write claim the writable open took, noting the files'
  // state.
  void Unclaim(ImageEntry& e) const REQUIRES(e.mu);
  bool OwnerMayWrite(const std::string& overlay, const std::string& b) const;
  void ServeAsBacking(ImageEntry& b, ImageEntry& overlay) const;
  bool SameChain(const ImageEntry& e) const;
  // The key DIR/NAME.key gives the image file identified by `id`, if any.
  void LoadKeyFile(const std::string& name, const io::FileStat& id) const;
  // Every DIR/NAME.key whose NAME is in SOURCE.
  void LoadKeyDir() const;
  std::string key_dir_;

  static constexpr size_t kChunk = 1024, kMaxChunks = 1024;  // room for a million images
  const FileOpener& files_;
  std::string source_;
  bool read_only_ = false;
  bool is_dir_ = false;
  // Stops listing image i (it left SOURCE, or is a file of another image):
  // its slot stays, its chain is flushed and let go.
  // The image that names the file at `real` though the listing does not
  // know it as that image's yet (grown by it, or being made), or "".
  std::string NewMemberOf(const std::string& real);
  void Unlist(size_t i, const std::string& why);
  bool scanning_ = false;  // Scan is adding: backing protection runs once at its end
  bool claim_at_mount_ = true;
  std::unique_ptr<std::unique_ptr<ImageEntry>[]> chunks_[kMaxChunks];
  std::atomic<size_t> count_{0};
  std::atomic<uint32_t> tick_{1};  // seconds of the memory keeper; 0 is "never used"
  mutable Mutex names_mu_;                      // guards by_name_
  std::unordered_map<std::string, size_t> by_name_;  // live images only
};

}  // namespace imgfs::fs
