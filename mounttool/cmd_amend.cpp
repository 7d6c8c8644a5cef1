#include <cstdio>
#include <memory>

#include "commands.h"
#include "image_args.h"
#include "imagecore/ops.h"
#include "progress.h"

namespace imgfs::cli {

// `imgfs amend [-f FMT] [-p] [-q] [--force] -o OPTIONS FILE`, as qemu-img
// amend; for vmdk too (adapter_type, hwversion, toolsversion), which
// qemu-img cannot amend.
Runner AddAmend(CLI::App& app) {
  struct Args {
    ImageArgs image;
    std::string file, options;
    ProgressArgs progress;
    bool quiet = false, force = false;
  };
  auto a = std::make_shared<Args>();
  AddImageArgs(app, &a->image);
  app.add_option("-o", a->options, "the options to change (key=value,...; \"help\" lists them)");
  AddProgressArgs(app, &a->progress);
  app.add_flag("-q,--quiet", a->quiet, "print nothing on success");
  app.add_flag("--force", a->force, "accepted: imgfs amends only what it can do safely");
  app.add_option("FILE", a->file, "the image");
  return [a] {
    if (a->options.empty()) return Fail("Must specify options (-o)");
    if (a->options == "help" || a->options == "?") {
      auto help = ops::AmendHelp(a->file, a->image.format);
      if (!help.ok()) return Fail(help.status().message());
      std::fputs(help.value().c_str(), stdout);
      return 0;
    }
    if (a->file.empty()) return Fail("Expecting one image file name");
    auto spec = ResolveImage(a->image, a->file);
    if (!spec.ok()) return Fail(spec.status().message());
    Status st = ops::Amend(spec.value().path, spec.value().format, a->options, ProgressPrinter(a->progress, a->quiet));
    if (!st.ok()) return Fail(st.message());
    FinishProgress(a->progress, a->quiet);
    return 0;
  };
}

}  // namespace imgfs::cli
