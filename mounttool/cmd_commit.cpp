#include <cstdio>
#include <memory>

#include "commands.h"
#include "image_args.h"
#include "imagecore/ops.h"
#include "imagecore/size.h"
#include "progress.h"

namespace imgfs::cli {

// `imgfs commit [-b BASE] [-d] [-p] [-q] [-r RATE] [-f FMT] FILE`, as qemu-img commit:
// without -b the backing file receives the data and FILE is emptied
// (unless -d); with -b FILE is left as it is, as qemu-img does.
Runner AddCommit(CLI::App& app) {
  struct Args {
    ImageArgs image;
    std::string file, base, rate;
    bool keep = false, quiet = false;
    ProgressArgs progress;
  };
  auto a = std::make_shared<Args>();
  auto* b = app.add_option("-b", a->base, "the layer of the backing chain to commit into (default: the backing file)");
  app.add_flag("-d", a->keep, "leave FILE as it is instead of emptying it");
  AddProgressArgs(app, &a->progress);
  app.add_flag("-q,--quiet", a->quiet, "print nothing on success");
  AddImageArgs(app, &a->image);
  app.add_option("-r", a->rate, "at most this many bytes per second (size suffixes as for sizes; default: no limit)");
  app.add_option("FILE", a->file, "the image")->required();
  return [a, b] {
    Chain::Progress progress = ProgressPrinter(a->progress, a->quiet);
    uint64_t rate = 0;
    if (!a->rate.empty()) {
      auto r = ParseSize(a->rate);
      if (!r.ok() || r.value() == 0) return Fail("Invalid rate limit specified: '" + a->rate + "'");
      rate = r.value();
    }
    auto spec = ResolveImage(a->image, a->file);
    if (!spec.ok()) return Fail(spec.status().message());
    Status st = ops::CommitFile(spec.value().path, spec.value().format, a->base, a->keep || b->count() > 0, progress, rate);
    FinishProgress(a->progress, a->quiet);
    if (!st.ok()) return Fail(st.message());
    if (!a->quiet) std::printf("Image committed.\n");
    return 0;
  };
}

}  // namespace imgfs::cli
