// Image operations shared by the imgfs command and the filesystem.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "imagecore/chain.h"
#include "imagecore/format.h"
#include "imagecore/image.h"
#include "imagecore/named_files.h"
#include "imagecore/secret.h"
#include "imagecore/status.h"

namespace imgfs::ops {

// ---- create (ops/create.cpp) ----
struct CreateRequest {
  std::string path;
  std::string format;          // "qcow2" or "raw"
  std::string size;            // qemu-img size text; "" = the backing file's
  std::string backing_file;
  std::string backing_format;  // "" = probe the backing file
  std::string options;         // "-o" text: "cluster_size=64k,compat=1.1"
  bool unsafe = false;         // -u: the backing file is not opened (its format and the size must be given)
  const SecretStore* secrets = nullptr;  // --object secrets, for key-secret options
};
// -o text ("cluster_size=64k,compat=1.1") as key/value pairs.
Result<std::map<std::string, std::string>> ParseOptionList(const std::string& text);
// Creates the image in a temporary file beside `path` and renames it into
// place, so a failure never leaves a half-written image.
Status Create(const CreateRequest& req);
// What `create -o help` lists for `format` ("" if imgfs cannot create it).
std::string CreateHelp(const std::string& format);
// Writes the new image's files under temporary names into `files`; the
// caller commits them (convert fills the image first).
Status StageCreate(const CreateRequest& req, NewFiles* files);

// ---- info (ops/info.cpp) ----
struct LayerInfo {
  std::string filename;
  ImageInfo info;
  uint64_t actual_size = 0;
  std::string backing_filename;       // as stored
  std::string full_backing_filename;  // resolved
  std::string backing_format;
  std::vector<SnapshotInfo> snapshots;
  // Why the backing file is not the one this layer was made on ("" = it
  // is, or cannot tell): printed as a warning.
  std::string parent_mismatch;
};
// One entry, or with `backing_chain` one per layer from the top down.
// Files are opened with the rights `access`; a chain that loops is an error.
Result<std::vector<LayerInfo>> CollectInfo(const std::string& path, const std::string& format, bool backing_chain,
                                           const io::ImageAccess& access = io::ImageAccess());
// qemu-img's JSON: an object, or an array when `as_chain`.
std::string InfoJson(const std::vector<LayerInfo>& layers, bool as_chain);
std::string InfoHuman(const std::vector<LayerInfo>& layers);
// {"error": message} in the same JSON style.
std::string InfoErrorJson(const std::string& message);

// ---- check (ops/check.cpp) ----
// Checks (and with a repair mode, repairs) the image at `path`.
Result<CheckResult> CheckImage(const std::string& path, const std::string& format, RepairMode mode,
                               const ProgressFn& progress = {});
// qemu-img check's report: the summary (stdout) and JSON.
std::string CheckHuman(const CheckResult& r);
std::string CheckJson(const CheckResult& r, const std::string& filename, const std::string& format);
// qemu-img check's exit code: 0 clean, 2 corruptions, 3 leaks only.
int CheckExitCode(const CheckResult& r);
// ... and when CheckImage failed: 63 the format has no check, 1 otherwise.
int CheckExitCode(const Status& failed);

// ---- snapshot (ops/snapshot.cpp) ----
Result<std::vector<SnapshotInfo>> ListSnapshots(const std::string& path, const std::string& format);
enum class SnapshotAction { kCreate, kApply, kDelete };
// qemu-img snapshot -c/-a/-d on an image nobody else is writing.
Status ChangeSnapshot(const std::string& path, const std::string& format, SnapshotAction action,
                      const std::string& name);
// The table `qemu-img snapshot -l` prints (header line and rows, no title).
std::string SnapshotTable(const std::vector<SnapshotInfo>& snaps);
// File names for snapshot views: "<name>.raw", or "<id>-<name>.raw" (with
// '/' replaced by '_') when the name is empty, repeats or holds a '/'.
std::vector<std::string> SnapshotFileNames(const std::vector<SnapshotInfo>& snaps);

// The same on an open chain (a mounted image): the one implementation the
// CLI, the ctl file and the attributes share.
Status ChangeSnapshot(Chain& chain, SnapshotAction action, const std::string& name);

// ---- resize (ops/resize.cpp) ----
// The size `spec` asks for: "SIZE", or "+SIZE"/"-SIZE" from `current`.
Result<uint64_t> ParseNewSize(const std::string& spec, uint64_t current);
// Resizes the disk (its top layer) to `spec`; a smaller size needs
// `shrink`, as qemu-img resize --shrink; `prealloc` reserves what the disk
// gained (--preallocation, where the format can). Returns the new size.
Result<uint64_t> Resize(Chain& chain, const std::string& spec, bool shrink, Prealloc prealloc = Prealloc::kOff);
Result<uint64_t> ResizeFile(const std::string& path, const std::string& format, const std::string& spec,
                            bool shrink, Prealloc prealloc = Prealloc::kOff);

// ---- commit (ops/commit.cpp) ----
// The backing layer `spec` names: "" the backing file (depth 1), a depth,
// a file name or path in the chain, or a layer view's name "N-x.raw".
Result<size_t> FindLayer(const Chain& chain, const std::string& spec);
// Merges the layers above `base` into it. The top is emptied afterwards
// unless `drop` is set or `base` is not the immediate backing file (the
// layers between would then shadow what was committed). `rate`: at most
// that many bytes per second (qemu-img commit -r), 0 = as fast as it goes.
Status Commit(Chain& chain, const std::string& base, bool drop, const Chain::Progress& progress, uint64_t rate = 0);
Status CommitFile(const std::string& path, const std::string& format, const std::string& base, bool drop,
                  const Chain::Progress& progress, uint64_t rate = 0);

// ---- map (ops/map.cpp) ----
// One run of the disk as qemu-img map reports it.
struct MapEntry {
  uint64_t start = 0, length = 0;
  size_t depth = 0;     // the layer that holds it (not present: the last layer looked at)
  bool present = false; // some layer holds it
  bool zero = false;    // reads as zeros
  bool data = false;    // stored (a format's data, even where the host file has a hole)
  bool has_offset = false;
  uint64_t offset = 0;  // where in `filename` (has_offset)
  std::string filename; // the host file holding it, as opened ("" = none)
};
// The runs of [start, start + length) of the disk seen from the top,
// merged as qemu-img map merges them.
Result<std::vector<MapEntry>> Map(const Chain& chain, uint64_t start, uint64_t length);
std::string MapJson(const std::vector<MapEntry>& entries);
// qemu-img map's table: the runs stored verbatim in some file. Fails (with
// what was printed so far in *out) where a run is stored but not verbatim
// (compressed), as qemu-img does.
Status MapHuman(std::vector<MapEntry> entries, std::string* out);

// ---- rebase (ops/rebase.cpp) ----
struct RebaseRequest {
  std::string path, format;
  std::string backing;         // the new backing file as it will be stored; "" = none (flatten)
  std::string backing_format;  // required where backing is not empty, as qemu-img asks
  bool unsafe = false;         // -u: only the reference changes, no data is copied
  bool compress = false;       // -c: the clusters copied are written compressed (qcow2)
  Chain::Progress progress;
};
// qemu-img rebase. Safe mode first copies into the image exactly the
// clusters (grains) whose content differs between the old backing chain
// and the new one, makes them durable, and only then changes the
// reference, so that a crash at any point leaves a disk that reads as
// before. Where both chains share layers, nothing of those is read.
Status Rebase(const RebaseRequest& req);

// ---- compare (ops/compare.cpp) ----
struct CompareRequest {
  std::string path1, format1, path2, format2;
  bool strict = false;  // -s: sizes and allocation must match too
  Chain::Progress progress;
};
struct CompareResult {
  // Where it failed: qemu-img's exit codes 2 (open), 3 (block status), 4 (read).
  enum Stage { kNone, kOpen, kStatus, kRead } stage = kNone;
  Status status;                    // the error, where stage != kNone
  bool equal = false;
  std::vector<std::string> lines;   // what qemu-img prints, in order
};
// qemu-img compare. Block status comes first: runs that read as zeros on
// both sides, and runs both images take from the same backing layer, are
// never read.
CompareResult Compare(const CompareRequest& req);

// ---- sources (ops/source.cpp) ----
// Opens `path` read-only, or with `snapshot` ("snapshot.id=X",
// "snapshot.name=X", or an ID or name, as qemu-img's -l) that internal
// snapshot of it.
Result<std::unique_ptr<Chain>> OpenSourceChain(const std::string& path, const std::string& format,
                                               const std::string& snapshot);

// ---- outputs (ops/output.cpp) ----
// What lies at the path a command writes to: nothing yet (a new file is
// made beside it and renamed into place), a regular file (replaced the
// same way; `path` is the file a symbolic link names), or a block device
// (written in place). Anything else is refused with the reason.
struct Output {
  enum Kind { kNew, kRegular, kBlockDevice } kind = kNew;
  std::string path;
  dev_t dev = 0;
  ino_t ino = 0;
};
Result<Output> InspectOutput(const std::string& path);
// Refuses an output that is one of the files any layer of `inputs` reads
// (an image, an extent, a data file, a backing file), before anything is
// written: the command would destroy what it reads.
Status CheckNotAnInput(const Output& out, const std::vector<const Chain*>& inputs);

// ---- measure (ops/measure.cpp) ----
struct MeasureRequest {
  std::string path, format, snapshot;  // the source (path "" with --size)
  std::string size;                    // --size text
  std::string out_format = "raw", options;
};
Result<MeasureResult> Measure(const MeasureRequest& req);
// The human and JSON forms qemu-img prints.
std::string MeasureHuman(const MeasureResult& r);
std::string MeasureJson(const MeasureResult& r);

// ---- amend (ops/amend.cpp) ----
// qemu-img amend: `options` as -o takes them ("lazy_refcounts=on").
Status Amend(const std::string& path, const std::string& format, const std::string& options,
             const ProgressFn& progress = {});
// What `amend -o help` lists for `format`; or for the format of the image
// at `path` when `format` is empty.
std::string AmendHelp(const std::string& format);
Result<std::string> AmendHelp(const std::string& path, const std::string& format);

// ---- bitmap (ops/bitmap.cpp) ----
struct BitmapRequest {
  std::string path, format, bitmap;
  std::vector<BitmapChange> steps;  // in the order given; a merge's `source` names the bitmap
  std::string merge_file, merge_format;  // -b, -F: the merges' source bitmaps are in this image
};
// qemu-img bitmap: the steps on bitmap `bitmap` of the image, all stored
// in one crash-safe step or none of them.
Status ChangeBitmap(const BitmapRequest& req);

// ---- bench (ops/bench.cpp) ----
struct BenchRequest {
  std::string path, format;
  uint64_t count = 75000, depth = 64, size = 4096, step = 4096, offset = 0;
  bool write = false;
  uint8_t pattern = 0;
  uint64_t flush_interval = 0;  // writes: flush after every this many requests (0: never)
  bool drain = true;            // wait for requests in flight before each flush
};
// qemu-img bench: `count` requests of `size` bytes, `depth` at a time, at
// offset, offset + step, ... (wrapping before the end of the disk).
// Returns the seconds the run took.
Result<double> Bench(const BenchRequest& req);
// The refusals of Bench, before anything runs.
Status CheckBenchRequest(const BenchRequest& req);

// ---- convert (ops/convert.cpp) ----
struct ConvertRequest {
  std::vector<std::string> sources;  // concatenated in this order
  std::string source_format;         // -f, for every source ("" = probe)
  std::string snapshot;              // -l: an internal snapshot of the one source (ID or name)
  std::string target, target_format = "raw", options;  // -O, -o
  const SecretStore* secrets = nullptr;                // --object secrets, for the target's key-secret
  std::string backing, backing_format;                // -B, -F: write only what differs from it
  bool existing = false;             // -n: the target exists; it is written, not made
  bool target_is_zero = false;       // --target-is-zero (with -n)
  uint64_t sparse_size = 4096;       // -S: zero runs this long are not written; 0: write everything
  unsigned workers = 8;              // -m
  bool out_of_order = false;         // -W
  uint64_t rate = 0;                 // -r, bytes per second
  bool salvage = false;              // --salvage: unreadable source runs are copied as zeros
  bool compress = false;             // -c: clusters written compressed (qcow2: by its compression_type)
  bool bitmaps = false;              // --bitmaps: the source's persistent bitmaps are copied
  bool skip_broken_bitmaps = false;  // --skip-broken-bitmaps: in-use ones are left out (else refused)
  // dd: only [from, min(until, its size)) of the one source
  uint64_t from = 0, until = UINT64_MAX;
  Chain::Progress progress;
};
// qemu-img convert. A new target is written under temporary names and
// renamed into place once it is complete and durable, so a failure leaves
// no output file.
Status Convert(const ConvertRequest& req);

}  // namespace imgfs::ops
