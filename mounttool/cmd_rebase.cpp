#include <cstdio>
#include <memory>

#include "commands.h"
#include "image_args.h"
#include "imagecore/ops.h"
#include "progress.h"

namespace imgfs::cli {

// `imgfs rebase [-f FMT] [-F FMT] -b BACKING [-u] [-p] [-q] FILE`, as
// qemu-img rebase; for vmdk too, which qemu-img cannot change.
Runner AddRebase(CLI::App& app) {
  struct Args {
    ImageArgs image;
    std::string file, backing, backing_format;
    bool unsafe = false, compress = false, quiet = false;
    ProgressArgs progress;
  };
  auto a = std::make_shared<Args>();
  AddImageArgs(app, &a->image, true, true);
  auto* b = app.add_option("-b", a->backing, "the new backing file, as it is to be stored (\"\" for none)");
  app.add_option("-F", a->backing_format, "format of the new backing file");
  app.add_flag("-u", a->unsafe, "only change the reference; copy nothing (the disk may read differently)");
  app.add_flag("-c", a->compress, "compress what is copied (qcow2)");
  AddProgressArgs(app, &a->progress);
  app.add_flag("-q,--quiet", a->quiet, "print nothing on success");
  app.add_option("FILE", a->file, "the image")->required();
  return [a, b] {
    // As qemu-img: -u without -b drops the reference.
    if (b->count() == 0 && !a->unsafe) return Fail("Must specify backing file (-b) or use unsafe mode (-u)");
    auto spec = ResolveImage(a->image, a->file);
    if (!spec.ok()) return Fail(spec.status().message());
    ops::RebaseRequest req;
    req.path = spec.value().path;
    req.format = spec.value().format;
    req.backing = a->backing;
    req.backing_format = a->backing_format;
    req.unsafe = a->unsafe;
    req.compress = a->compress;
    req.progress = ProgressPrinter(a->progress, a->quiet);
    Status st = ops::Rebase(req);
    if (st.ok()) FinishProgress(a->progress, a->quiet);
    return st.ok() ? 0 : Fail(st.message());
  };
}

}  // namespace imgfs::cli
