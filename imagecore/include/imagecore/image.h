// Image: one open layer of a disk image, as a format driver presents it.
//
// A driver answers for its own layer only (as QEMU's block_status does):
// a range it does not hold is kUnallocated, and the chain above decides what
// that reads as (the backing file, or zeros). Every driver implements this
// one interface; the chain, the CLI and the filesystem know nothing else.
//
// Thread model: Read paths (BlockStatus, ReadOpaque) and Write may be called
// from many threads at once; a driver documents which lock guards what.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "imagecore/file.h"
#include "imagecore/named_files.h"
#include "imagecore/status.h"

namespace imgfs {

struct Capabilities;
struct FormatDriver;

// preallocation= (create -o, resize --preallocation): what is reserved of a
// data area.
enum class Prealloc { kOff, kMetadata, kFalloc, kFull };

enum class ExtentKind {
  kData,         // bytes stored verbatim at `host_offset` in `file`
  kZero,         // reads as zeros in this layer (hides the backing file)
  kUnallocated,  // not in this layer: look below
  kOpaque,       // stored, but only the driver can read it (compressed...)
};

struct Extent {
  ExtentKind kind = ExtentKind::kUnallocated;
  uint64_t length = 0;          // > 0 on success
  // kData: where the bytes are. kZero and kUnallocated: where known, the
  // host bytes set aside for the range (a raw file's hole, a qcow2 zero
  // cluster that keeps its allocation, a subcluster not yet written), else
  // null. Only qemu-img map shows them.
  const io::File* file = nullptr;
  uint64_t host_offset = 0;
  // kZero only: the format maps the range to host bytes that are a hole in
  // `file` (a flat vmdk extent's); qemu-img map calls that data too.
  bool mapped_hole = false;
};

// What reads the content below a layer (its backing chain), for copy-on-write.
class LayerReader {
 public:
  virtual ~LayerReader() = default;
  virtual uint64_t VirtualSize() const = 0;
  // Reads guest content; offsets past VirtualSize() read as zeros.
  virtual Status Read(uint64_t off, void* buf, size_t len) const = 0;
};

// What `imgfs info` shows of one layer. Format-specific pairs keep
// qemu-img's JSON names and are rendered in insertion order.
struct ImageInfo {
  std::string format;
  uint64_t virtual_size = 0;
  uint64_t cluster_size = 0;  // 0: the format has none
  bool dirty = false;
  bool corrupt = false;       // the image marks itself corrupt
  bool encrypted = false;
  struct Field {
    std::string key;          // qemu-img json name, e.g. "lazy-refcounts"
    std::string human;        // qemu-img human name, e.g. "lazy refcounts"
    // kBitmaps holds nothing: it marks where `bitmaps` are shown.
    // kObject: nested fields, held as list[0] (qcow2's "encrypt").
    enum Kind { kString, kBool, kInt, kUint, kList, kBitmaps, kObject } kind = kString;
    bool file_name = false;   // kString: a file's name (shown last in one-line renderings)
    std::string s;
    bool b = false;
    int64_t i = 0;
    uint64_t u = 0;
    std::vector<std::vector<Field>> list;  // kList: objects, as vmdk's "extents"

    static Field Str(std::string k, std::string h, std::string v) {
      Field f = Make(std::move(k), std::move(h), kString);
      f.s = std::move(v);
      return f;
    }
    static Field Bool(std::string k, std::string h, bool v) {
      Field f = Make(std::move(k), std::move(h), kBool);
      f.b = v;
      return f;
    }
    static Field Int(std::string k, std::string h, int64_t v) {
      Field f = Make(std::move(k), std::move(h), kInt);
      f.i = v;
      return f;
    }
    static Field Uint(std::string k, std::string h, uint64_t v) {
      Field f = Make(std::move(k), std::move(h), kUint);
      f.u = v;
      return f;
    }
    static Field FileName(std::string k, std::string h, std::string v) {
      Field f = Str(std::move(k), std::move(h), std::move(v));
      f.file_name = true;
      return f;
    }
    static Field List(std::string k, std::string h) { return Make(std::move(k), std::move(h), kList); }
    static Field Object(std::string k, std::string h, std::vector<Field> fields) {
      Field f = Make(std::move(k), std::move(h), kObject);
      f.list.push_back(std::move(fields));
      return f;
    }
    static Field BitmapsHere() { return Make("bitmaps", "bitmaps", kBitmaps); }
    static Field Make(std::string k, std::string h, Kind kind) {
      Field f;
      f.key = std::move(k);
      f.human = std::move(h);
      f.kind = kind;
      return f;
    }
  };
  std::vector<Field> specific;
  // Persistent dirty bitmaps, shown where `specific` holds a kBitmaps
  // field (if they are not empty).
  struct Bitmap {
    std::string name;
    uint64_t granularity = 0;
    std::vector<std::string> flags;  // "in-use", "auto"
  };
  std::vector<Bitmap> bitmaps;
};

// The bits of a persistent dirty bitmap: bit i (LSB first) set means the
// disk changed in [i << granularity_bits, (i + 1) << granularity_bits).
struct DirtyBitmap {
  std::string name;
  uint32_t granularity_bits = 16;
  bool enabled = true;     // "auto": it records writes
  uint64_t disk_size = 0;  // the disk size it covers
  std::vector<uint8_t> bits;
};

// How far a long operation is: `done` of `total` units (bytes, tables).
using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

// One step of qemu-img bitmap; the steps run in the order given.
struct BitmapChange {
  enum Kind { kAdd, kRemove, kClear, kEnable, kDisable, kMerge } kind = kAdd;
  uint64_t granularity = 0;           // kAdd; 0: the format's default
  std::string source;                 // kMerge: a bitmap of the same image,
  const DirtyBitmap* from = nullptr;  // or, when set, this one (of another)
  static const char* Verb(Kind k);    // "add", "remove", ... as qemu-img says
};

// One internal snapshot, as `qemu-img snapshot -l` lists it.
struct SnapshotInfo {
  std::string id;
  std::string name;
  uint64_t virtual_size = 0;   // the disk's size when the snapshot was taken
  uint64_t vm_state_size = 0;  // saved VM state (not part of the disk)
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  uint64_t icount = UINT64_MAX;  // UINT64_MAX: not recorded
};

// What a consistency check found (and fixed), with qemu-img check's counts.
struct CheckResult {
  uint64_t corruptions = 0;
  uint64_t leaks = 0;
  uint64_t check_errors = 0;
  uint64_t corruptions_fixed = 0;
  uint64_t leaks_fixed = 0;
  uint64_t total_clusters = 0;      // guest clusters of the virtual disk
  uint64_t allocated_clusters = 0;  // of those, allocated in the image
  uint64_t fragmented_clusters = 0;
  uint64_t compressed_clusters = 0;
  uint64_t image_end_offset = 0;
  bool cluster_counts = true;         // false: the format reports no cluster counts (vmdk)
  // Why the check stopped before the end ("" = it did not), as qemu-img's
  // vmdk check stops at the first grain outside the file.
  std::string failed;
  std::string format;                 // of the image checked (filled by ops::CheckImage)
  std::vector<std::string> messages;  // one line per problem, as qemu-img prints them
};

enum class RepairMode { kNone, kLeaks, kAll };

struct BackingRef {
  std::string name = {};    // as stored in the image
  std::string format = {};  // as stored; empty: probe
  // Other names the image stores for the same file, tried in order where
  // `name` is not found here (VHDX's parent locator entries).
  std::vector<std::string> alternates = {};
};

class Image {
 public:
  virtual ~Image() = default;

  // The format's driver: what it is called and what it can do.
  virtual const FormatDriver& driver() const = 0;
  const char* format_name() const;
  const Capabilities& caps() const;
  virtual uint64_t VirtualSize() const = 0;

  // Describes the longest run starting at `off` (< VirtualSize()) of at most
  // `len` bytes that has one kind (and, for kData, contiguous host bytes).
  virtual Status BlockStatus(uint64_t off, uint64_t len, Extent* out) = 0;
  // Reads a kOpaque range. Other kinds may be passed too.
  virtual Status ReadOpaque(uint64_t off, void* buf, size_t len) = 0;

  // Writes guest data. Bytes of partly written clusters that this layer does
  // not hold are taken from `below` (may be null: zeros).
  virtual Status Write(uint64_t off, const void* buf, size_t len, const LayerReader* below) = 0;
  // Makes [off, off+len) read as zeros in this layer, hiding the backing
  // file; with `unmap` the host space is freed where the format can. May
  // run alongside reads and writes, like Write. The default writes zeros.
  virtual Status WriteZeroes(uint64_t off, uint64_t len, bool unmap, const LayerReader* below);
  // Makes every completed Write durable in the image file(s).
  virtual Status Flush() = 0;
  // Gives back the memory of metadata caches whose tables are clean (an
  // idle image, or a memory limit reached); they load again on use. Safe
  // alongside reads and writes.
  virtual void DropCaches() {}

  // Compressed clusters (convert -c), for formats whose capabilities say
  // compressed_writes. Compress is the format's compressor and runs on any
  // thread without locks: it returns the compressed length, or 0 when that
  // would not be shorter than `cap` (write the data as it is then).
  // WriteCompressed stores one cluster: `off` aligned to it, `data` what
  // Compress made of the cluster's bytes (the last cluster of the disk
  // padded with zeros). False, with nothing written, where this layer holds
  // the cluster already: the caller writes the plain data instead.
  virtual Result<size_t> Compress(const uint8_t* in, size_t len, uint8_t* out, size_t cap) const {
    return Unsupported(std::string(format_name()) + " images cannot be written compressed");
  }
  virtual Result<bool> WriteCompressed(uint64_t off, const uint8_t* data, size_t len) {
    return Unsupported(std::string(format_name()) + " images cannot be written compressed");
  }
  // A new, empty image whose format keeps its data as a stream of
  // compressed grains (VMDK streamOptimized), made ready to take each whole
  // grain once, compressed by the driver: true. False, with nothing
  // changed, where the image is no such stream (it takes ordinary writes).
  // The writer then writes whole clusters (Info().cluster_size), each once.
  virtual Result<bool> BeginStreamWrite() { return false; }

  // Changes the virtual size. What lies past the old end reads as zeros
  // afterwards, even where `below` is larger; shrinking drops the data past
  // the new end (the caller has asked, as qemu-img resize --shrink does).
  // Exclusive: no I/O may run on the image meanwhile.
  virtual Status Resize(uint64_t new_size, const LayerReader* below) {
    return Unsupported(std::string(format_name()) + " images cannot be resized yet");
  }
  // Reserves [off, off+len) as resize --preallocation asks (falloc, full)
  // after the disk grew there. Exclusive, like Resize.
  virtual Status Preallocate(uint64_t off, uint64_t len, Prealloc mode) {
    return Unsupported(std::string(format_name()) + ": resize --preallocation is not supported yet");
  }
  // Drops every allocation, so the whole layer reads from below again:
  // what qemu-img commit leaves in the image it committed. Exclusive.
  virtual Status MakeEmpty() {
    return Unsupported(std::string(format_name()) + " images cannot be emptied");
  }

  // Writes from now on, until the layer is reopened, keep the identity
  // its children record of it (VMDK's CID). For a commit: the base only
  // gains bytes its children hide, so they read it as the parent they were
  // made on at every moment, and a crash leaves no chain that qemu refuses.
  virtual void KeepIdentity() {}
  virtual std::optional<BackingRef> Backing() const { return std::nullopt; }
  // Whether `parent`, opened as this layer's backing file, is the one it
  // was made on (VMDK: parentCID against the parent's CID). An error says
  // why not; the chain is then served read-only with that reason.
  virtual Status CheckParent(const Image& parent) const { return Status::OK(); }
  // The parent changed by the chain's own doing (a commit wrote into it):
  // record what it is now, so that CheckParent holds again. Exclusive.
  virtual Status RelinkParent(const Image& parent) { return Status::OK(); }
  // Names another backing file (`name` as it will be stored, "" for none;
  // `parent` opened, for what the layer records of it), in one crash-safe
  // step, without touching the data: qemu-img rebase -u. Exclusive.
  virtual Status SetBacking(const std::string& name, const std::string& format, const Image* parent) {
    return Unsupported(std::string(format_name()) + " images cannot change their backing file yet");
  }
  // Changes creation options of an existing image (qemu-img amend), each
  // pair as create's -o takes it. Every option is checked before anything
  // changes; each step that follows is crash-safe. `progress` gets the
  // work done of the long steps. Exclusive: no I/O may run meanwhile.
  Status Amend(const std::map<std::string, std::string>& options) { return Amend(options, {}); }
  virtual Status Amend(const std::map<std::string, std::string>& options, const ProgressFn& progress) {
    return Unsupported(std::string("Format driver '") + format_name() + "' does not support option amendment");
  }
  // Whether this image can hold persistent bitmaps (a format may keep
  // them in some versions only: qcow2 in compat=1.1).
  virtual bool StoresBitmaps() const { return false; }
  // Persistent dirty bitmaps (capability `bitmaps`). ReadBitmap returns
  // one whole; ChangeBitmap applies the steps to bitmap `name` in memory
  // and then stores the result in one crash-safe step: all or nothing.
  // Exclusive: no I/O may run on the image meanwhile.
  virtual Result<DirtyBitmap> ReadBitmap(const std::string& name) {
    return Unsupported(std::string("Can't store persistent bitmaps in ") + format_name() + " images");
  }
  virtual Status ChangeBitmap(const std::string& name, const std::vector<BitmapChange>& steps) {
    return Unsupported(std::string("Can't store persistent bitmaps in ") + format_name() + " images");
  }
  // Internal snapshots, oldest first.
  virtual std::vector<SnapshotInfo> Snapshots() const { return {}; }
  // Opens internal snapshot `id` as a read-only layer. Its backing file is
  // this layer's: the chain below stays the same.
  virtual Result<std::unique_ptr<Image>> OpenSnapshot(const std::string& id) const {
    return Unsupported(std::string(format_name()) + " images have no internal snapshots");
  }
  // Checks the image's metadata; with a repair mode, fixes what it may and
  // checks again; `progress` gets how far the walk is. Exclusive, like
  // snapshot control.
  Result<CheckResult> Check(RepairMode mode) { return Check(mode, {}); }
  virtual Result<CheckResult> Check(RepairMode mode, const ProgressFn& progress) {
    return Unsupported("this image format does not support checks");
  }
  // Snapshot control, as qemu-img snapshot -c/-d/-a. `which` is an ID or,
  // failing that, a name. Exclusive: no I/O may run on the image meanwhile.
  virtual Status CreateSnapshot(const std::string& name) {
    return Unsupported(std::string(format_name()) + " images have no internal snapshots");
  }
  virtual Status DeleteSnapshot(const std::string& which) {
    return Unsupported(std::string(format_name()) + " images have no internal snapshots");
  }
  virtual Status ApplySnapshot(const std::string& which) {
    return Unsupported(std::string(format_name()) + " images have no internal snapshots");
  }
  virtual ImageInfo Info() const = 0;

  // The file holding the layer (its header or descriptor).
  virtual const io::File& file() const = 0;
  // Every file the layer reads from, each with its role: file() first,
  // then those it opened by name (extents, an external data file).
  struct LayerFile {
    io::File* file;
    FileRole role;
  };
  virtual std::vector<LayerFile> files() const = 0;
  // Bytes the host stores for all of them (`disk size`, st_blocks).
  uint64_t AllocatedBytes() const;
  // Whether qemu-img map looks under this layer's data for holes in the
  // host file, calling them zeros (qemu does for qcow2 images whose
  // metadata looks preallocated; a format's own zeros are reported anyway).
  virtual bool MapShowsHostHoles() const { return false; }
  // The write claim on every writable file of the layer (see
  // io::File::ClaimForWriting): a writable open takes it; an instance kept
  // open but idle may give it up and take it again before it next writes.
  // Check tells without taking.
  virtual Status ClaimWriting();
  virtual Status CheckWriteClaim() const;
  virtual void DropWriteClaim();

  // Why the layer's data cannot be read or written: it is encrypted and was
  // opened without its key ("" = it can). Its metadata still answers.
  virtual std::string KeyMissing() const { return ""; }

  // Why a layer that opened writable refuses writes now: damage its driver
  // found while serving I/O ("" = none).
  virtual std::string DamageFound() const { return ""; }

  bool read_only() const { return !read_only_reason_.empty(); }
  // Refuses writes from now on, for a reason found above the driver (a
  // backing file that is not this layer's parent). Before any I/O.
  void MarkReadOnly(const std::string& why) {
    if (read_only_reason_.empty()) read_only_reason_ = why;
  }
  const std::string& read_only_reason() const { return read_only_reason_; }

 protected:
  // Set by drivers at open: why this layer must not be written ("" = may).
  std::string read_only_reason_;
};

}  // namespace imgfs
