// Chain: an image and its backing files, opened top to bottom, read as one
// disk. Depth 0 is the image itself, depth 1 its backing file, and so on;
// every layer can also be read "from depth d down" (the layer views).
//
// Thread safety: all methods may be called concurrently. I/O (Resolve,
// Read, Write, WriteZeroes, Flush) shares `io_mu_`; control operations
// (Resize, snapshots, Check) take it exclusively, so they run alone and I/O
// waits for them. Writes also share `write_mu_`, which Commit holds alone
// for its whole run: writes and control operations wait, reads go on while
// it copies. Lock order:
// write_mu_, then io_mu_. The layers guard their own state below that.
// A layer replaced by Commit is retired, not destroyed, so a Resolved run
// handed out before stays readable (its bytes may be stale, never freed).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "imagecore/image.h"
#include "imagecore/rwlock.h"
#include "imagecore/status.h"
#include "imagecore/thread_annotations.h"

namespace imgfs {

// Chains deeper than this are refused: far past any real chain (qemu sets
// no limit), it bounds what a directory of hostile files can make one open
// cost (a descriptor and a few KiB per layer; loops are refused anyway).
constexpr size_t kMaxChainDepth = 4096;

// One run of guest bytes as the chain resolves it.
struct Resolved {
  enum Kind { kData, kZero, kOpaque } kind = kZero;
  uint64_t length = 0;
  const io::File* file = nullptr;  // kData: read `length` bytes at host_offset (kZero: see Extent)
  uint64_t host_offset = 0;
  size_t depth = 0;                // the layer that holds it; not present: the one below the last that covers it
  bool present = true;             // false: no layer holds it (below every layer, or past a smaller backing file)
  bool mapped_hole = false;        // as Extent::mapped_hole
};

class FileOpener;

// Where the backing file `ref` of the image at `child_path` is: its names
// in order (`name`, then `alternates`), each resolved against the child's
// directory. A Windows name (C:\VMs\base.vhdx, .\base.avhdx) is read with
// '/' for its backslashes, and where that is not found, by its file name
// beside the child. The first that exists wins; if none does, the first
// name resolved (so that the error names it).
std::string ResolveBacking(const std::string& child_path, const BackingRef& ref,
                           const FileOpener* files = nullptr);

// One layer met by WalkChain.
struct LayerRef {
  size_t depth = 0;
  std::string path;    // as resolved
  std::string format;  // as stored ("": probe)
};
// Opens `path` and its backing files one after another: open(ref) opens a
// layer, visit(ref, image, link) takes it (`link`: whether the layer above
// says this is not its parent, as CheckParent) and returns false to stop.
// visit keeps each image alive until its next call. The one loop check
// (a file met twice: InvalidArgument, as qemu-img says it) and depth bound
// for every walk of a chain.
Status WalkChain(const std::string& path, const std::string& format, const FileOpener* files,
                 const std::function<Result<std::unique_ptr<Image>>(const LayerRef&)>& open,
                 const std::function<Result<bool>(const LayerRef&, std::unique_ptr<Image>, const Status&)>& visit);

class Chain {
 public:
  // Opens `path` (format "" = probe) writable or not, and its backing chain
  // read-only. Relative backing names resolve against the directory of the
  // image that names them; a stored backing format is used, never probed.
  // Files are opened with the rights `access` (see imagecore/access.h):
  // the image file with `self`, every file below it with `named`.
  // Files come from `files` (null: the host's).
  static Result<std::unique_ptr<Chain>> Open(const std::string& path, const std::string& format, bool writable,
                                             const io::ImageAccess& access = io::ImageAccess(),
                                             const FileOpener* files = nullptr);
  // The same, read-only, with internal snapshot `snapshot_id` of the image
  // as the top layer (its backing chain is the image's).
  static Result<std::unique_ptr<Chain>> OpenSnapshot(const std::string& path, const std::string& format,
                                                     const std::string& snapshot_id,
                                                     const io::ImageAccess& access = io::ImageAccess(),
                                                     const FileOpener* files = nullptr);
  // Writable, but without QEMU's write claim (OpenOptions::claim): a
  // program may still be making the file. Image::ClaimWriting on the top
  // layer claims it before the first write.
  static Result<std::unique_ptr<Chain>> OpenUnclaimed(const std::string& path, const std::string& format,
                                                      const io::ImageAccess& access,
                                                      const FileOpener* files = nullptr);
  // The same, every file opened through `files` (an image being made).
  static Result<std::unique_ptr<Chain>> OpenThrough(const std::string& path, const std::string& format,
                                                    bool writable, const FileOpener& files);
  ~Chain();

  size_t depth() const { return layers_.size(); }
  // Why a layer's backing file is not the one it was made on (VMDK's
  // parentCID), or "". Set at open.
  const std::string& parent_mismatch() const { return parent_mismatch_; }
  Image& layer(size_t d) const { return *layers_[d]; }
  const std::string& layer_path(size_t d) const { return paths_[d]; }
  uint64_t VirtualSize(size_t d = 0) const;
  // What the filesystem shows of every file the disk seen from layer `d`
  // down reads from (each layer's image file and the files it names).
  std::vector<io::FileStat> StatFiles(size_t d) const;

  // The run at `off` of the disk seen from layer `d` down. REQUIRES: off <
  // VirtualSize(d). Bytes below every layer (or past a smaller backing
  // file) are kZero.
  Status Resolve(size_t d, uint64_t off, uint64_t len, Resolved* out) const;
  // Reads the disk as seen from layer `d` down; past its end reads zeros.
  Status Read(size_t d, uint64_t off, void* buf, size_t len) const;
  // Reads one resolved run into buf (kData, kZero or kOpaque).
  Status ReadResolved(const Resolved& r, uint64_t off, void* buf) const;

  Status Write(uint64_t off, const void* buf, size_t len);
  // The first layer from `d` down that is encrypted and has no key, and
  // why ("" = every one can be read).
  std::string KeyMissing(size_t d) const;
  // Makes [off, off+len) of the disk read as zeros (see Image::WriteZeroes).
  Status WriteZeroes(uint64_t off, uint64_t len, bool unmap);
  // The same, hiding `next` instead: the backing chain the top layer is
  // about to get (rebase writes what must survive the change).
  Status WriteZeroesOver(uint64_t off, uint64_t len, const LayerReader& next);
  // One cluster compressed by layer(0).Compress (see Image::WriteCompressed).
  Result<bool> WriteCompressed(uint64_t off, const uint8_t* data, size_t len);
  Status Flush();
  // Every layer's Image::DropCaches.
  void DropCaches();

  // --- control operations on the top layer: each runs alone -------------
  Status Resize(uint64_t new_size);
  Status CreateSnapshot(const std::string& name);
  Status DeleteSnapshot(const std::string& which);
  Status ApplySnapshot(const std::string& which);
  Result<CheckResult> Check(RepairMode mode, const ProgressFn& progress = {});
  // Merges what layers [0, base) hold into layer `base` (reopened writable
  // for the time), growing it to the top's size if smaller; then, with
  // `empty_top`, empties layer 0. `progress(done, total)` gets bytes.
  using Progress = ProgressFn;
  Status Commit(size_t base, bool empty_top, const Progress& progress);

 private:
  class Below;
  Chain() = default;
  Status ResolveUnlocked(size_t d, uint64_t off, uint64_t len, Resolved* out) const;
  // Resolves through layers [d, stop) only; *decided is false when none of
  // them decides the run (it is left to the layers below `stop`).
  Status ResolveAbove(size_t d, size_t stop, uint64_t off, uint64_t len, Resolved* out, bool* decided) const;
  Status ReadUnlocked(size_t d, uint64_t off, void* buf, size_t len) const;
  Status ReadResolvedUnlocked(const Resolved& r, uint64_t off, void* buf) const;
  uint64_t VirtualSizeUnlocked(size_t d) const { return layers_[d]->VirtualSize(); }
  // What lies below layer d, for copy-on-write; null at the bottom.
  const LayerReader* below(size_t d) const;
  // Replaces layer d by the same file opened again (writable or not).
  Status ReopenLayer(size_t d, bool writable) REQUIRES(io_mu_, write_mu_);
  // Copies what layers [0, base) hold into layer `base`.
  Status CopyUp(size_t base, const Progress& progress) REQUIRES_SHARED(io_mu_) REQUIRES(write_mu_);
  // After a commit into `base`: the layer above it relinks to it.
  Status RelinkAbove(size_t base) REQUIRES(io_mu_, write_mu_);

  mutable RwLock write_mu_;
  mutable RwLock io_mu_;
  static Result<std::unique_ptr<Chain>> OpenImpl(const std::string& path, const std::string& format, bool writable,
                                                 const std::string& snapshot_id, const io::ImageAccess& access,
                                                 const FileOpener* files = nullptr, bool claim = true);
  io::ImageAccess access_;  // set at open, then constant
  std::string parent_mismatch_;  // set at open, then constant
  std::vector<std::unique_ptr<Image>> layers_;
  std::vector<std::string> paths_;
  std::vector<std::unique_ptr<Below>> below_;  // below_[d] reads from depth d+1 down
  std::vector<std::unique_ptr<Image>> retired_ GUARDED_BY(io_mu_);  // exclusive
};

// How many layers at the bottom of `a` (from depth `top_a` down) and of `b`
// are the same file opened as the same format, so that they read alike.
size_t SharedBottomLayers(const Chain& a, size_t top_a, const Chain& b);


}  // namespace imgfs
