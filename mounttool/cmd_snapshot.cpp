#include <cstdio>
#include <memory>

#include "commands.h"
#include "image_args.h"
#include "imagecore/ops.h"

namespace imgfs::cli {

// `imgfs snapshot [-f FMT] [-U] [-q] -l|-c NAME|-a NAME|-d NAME FILE`, as qemu-img snapshot.
Runner AddSnapshot(CLI::App& app) {
  struct Args {
    ImageArgs image;
    std::string file, create, apply, del;
    bool list = false, quiet = false;
  };
  auto a = std::make_shared<Args>();
  auto* l = app.add_flag("-l,--list", a->list, "list the internal snapshots");
  auto* c = app.add_option("-c", a->create, "create a snapshot named NAME");
  auto* ap = app.add_option("-a", a->apply, "revert the disk to snapshot NAME (or ID)");
  auto* d = app.add_option("-d", a->del, "delete snapshot NAME (or ID)");
  l->excludes(c, ap, d);
  c->excludes(ap, d);
  ap->excludes(d);
  AddImageArgs(app, &a->image);
  app.add_flag("-q", a->quiet, "print nothing on success (errors are printed)");
  app.add_option("FILE", a->file, "the image")->required();
  return [a, l, c, ap, d] {
    if (!l->count() && !c->count() && !ap->count() && !d->count())
      return Fail("snapshot: one of -l, -c, -a, -d is required");
    auto spec = ResolveImage(a->image, a->file);
    if (!spec.ok()) return Fail(spec.status().message());
    const std::string& path = spec.value().path;
    const std::string& format = spec.value().format;
    if (a->list) {
      auto snaps = ops::ListSnapshots(path, format);
      if (!snaps.ok()) return Fail(snaps.status().message());
      if (!snaps.value().empty()) std::printf("Snapshot list:\n%s", ops::SnapshotTable(snaps.value()).c_str());
      return 0;
    }
    ops::SnapshotAction action = c->count() ? ops::SnapshotAction::kCreate
                                 : ap->count() ? ops::SnapshotAction::kApply
                                               : ops::SnapshotAction::kDelete;
    const std::string& name = c->count() ? a->create : ap->count() ? a->apply : a->del;
    static const char* kVerb[] = {"create", "apply", "delete"};
    Status st = ops::ChangeSnapshot(path, format, action, name);
    if (!st.ok())
      return Fail(std::string("could not ") + kVerb[int(action)] + " snapshot '" + name + "' of " + a->file + ": " +
                  st.message());
    return 0;
  };
}

}  // namespace imgfs::cli
