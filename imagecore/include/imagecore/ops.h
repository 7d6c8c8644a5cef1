// Image operations shared by the imgfs command and the filesystem.
#pragma once

#include <string>
#include <vector>

#include "imagecore/format.h"
#include "imagecore/image.h"
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
};
// Creates the image in a temporary file beside `path` and renames it into
// place, so a failure never leaves a half-written image.
Status Create(const CreateRequest& req);

// ---- info (ops/info.cpp) ----
struct LayerInfo {
  std::string filename;
  ImageInfo info;
  uint64_t actual_size = 0;
  std::string backing_filename;       // as stored
  std::string full_backing_filename;  // resolved
  std::string backing_format;
  std::vector<SnapshotInfo> snapshots;
};
// One entry, or with `backing_chain` one per layer from the top down.
Result<std::vector<LayerInfo>> CollectInfo(const std::string& path, const std::string& format, bool backing_chain);
// qemu-img's JSON: an object, or an array when `as_chain`.
std::string InfoJson(const std::vector<LayerInfo>& layers, bool as_chain);
std::string InfoHuman(const std::vector<LayerInfo>& layers);

// ---- check (ops/check.cpp) ----
// Checks (and with a repair mode, repairs) the image at `path`.
Result<CheckResult> CheckImage(const std::string& path, const std::string& format, RepairMode mode);
// qemu-img check's report: the summary (stdout) and JSON.
std::string CheckHuman(const CheckResult& r);
std::string CheckJson(const CheckResult& r, const std::string& filename, const std::string& format);
// qemu-img check's exit code: 0 clean, 2 corruptions, 3 leaks only.
int CheckExitCode(const CheckResult& r);

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

}  // namespace imgfs::ops
