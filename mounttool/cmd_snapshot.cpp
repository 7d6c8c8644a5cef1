#include <cstdio>
#include <memory>

#include "commands.h"
#include "imagecore/ops.h"

namespace imgfs::cli {

// `imgfs snapshot -l FILE`. Creating, applying and deleting snapshots
// (-c/-a/-d) come with the qcow2 issue and are not offered yet.
Runner AddSnapshot(CLI::App& app) {
  struct Args {
    std::string file, format;
    bool list = false;
  };
  auto a = std::make_shared<Args>();
  app.add_flag("-l,--list", a->list, "list the internal snapshots")->required();
  app.add_option("-f,--format", a->format, "image format (default: probe)");
  app.add_option("FILE", a->file, "the image")->required();
  return [a] {
    auto snaps = ops::ListSnapshots(a->file, a->format);
    if (!snaps.ok()) return Fail(snaps.status().message());
    if (snaps.value().empty()) return 0;  // qemu-img prints nothing either
    std::printf("Snapshot list:\n%s", ops::SnapshotTable(snaps.value()).c_str());
    return 0;
  };
}

}  // namespace imgfs::cli
