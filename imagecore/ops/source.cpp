// Opening a source image as qemu-img's -l names it.
#include "imagecore/ops.h"

namespace imgfs::ops {
namespace {

// The ID of the snapshot -l names: "snapshot.id=X", "snapshot.name=X",
// or a plain ID or name (an ID first), as qemu-img takes it.
Result<std::string> SnapshotId(const std::string& path, const std::string& format, const std::string& spec) {
  IMGFS_ASSIGN_OR_RETURN(auto chain, Chain::Open(path, format, false));
  const std::vector<SnapshotInfo> snaps = chain->layer(0).Snapshots();
  const bool by_id = spec.rfind("snapshot.id=", 0) == 0, by_name = spec.rfind("snapshot.name=", 0) == 0;
  const std::string want = by_id ? spec.substr(12) : by_name ? spec.substr(14) : spec;
  if (!by_name)
    for (const SnapshotInfo& s : snaps)
      if (s.id == want) return s.id;
  if (!by_id)
    for (const SnapshotInfo& s : snaps)
      if (s.name == want) return s.id;
  return NotFound(path + ": no snapshot '" + want + "'");
}

}  // namespace

Result<std::unique_ptr<Chain>> OpenSourceChain(const std::string& path, const std::string& format,
                                               const std::string& snapshot) {
  if (snapshot.empty()) return Chain::Open(path, format, false);
  IMGFS_ASSIGN_OR_RETURN(std::string id, SnapshotId(path, format, snapshot));
  return Chain::OpenSnapshot(path, format, id);
}

}  // namespace imgfs::ops
