#include <cstdio>
#include <memory>

#include "commands.h"
#include "image_args.h"
#include "imagecore/ops.h"
#include "progress.h"

namespace imgfs::cli {

// `imgfs compare [-f FMT] [-F FMT] [-s] [-p] [-q] [-U] A B`, as qemu-img
// compare: exit 0 equal, 1 different, 2 cannot open, 3 block status
// failed, 4 read failed.
Runner AddCompare(CLI::App& app) {
  struct Args {
    ImageArgs image;
    std::string first, second, second_format;
    bool strict = false, quiet = false;
    ProgressArgs progress;
  };
  auto a = std::make_shared<Args>();
  AddImageArgs(app, &a->image, true, true);
  app.add_option("-F", a->second_format, "format of the second image (default: probe by content)");
  app.add_flag("-s", a->strict, "strict: the sizes and the allocation must match too");
  AddProgressArgs(app, &a->progress);
  app.add_flag("-q,--quiet", a->quiet, "print nothing; only the exit code tells");
  app.add_option("A", a->first, "the first image")->required();
  app.add_option("B", a->second, "the second image")->required();
  return [a] {
    auto s1 = ResolveImage(a->image, a->first);
    if (!s1.ok()) return Fail(s1.status().message(), 2);
    ImageArgs second = a->image;
    second.format = a->second_format;
    auto s2 = ResolveImage(second, a->second);
    if (!s2.ok()) return Fail(s2.status().message(), 2);
    ops::CompareRequest req;
    req.path1 = s1.value().path;
    req.format1 = s1.value().format;
    req.path2 = s2.value().path;
    req.format2 = s2.value().format;
    req.strict = a->strict;
    req.progress = ProgressPrinter(a->progress, a->quiet);
    const ops::CompareResult r = ops::Compare(req);
    FinishProgress(a->progress, a->quiet);
    if (!a->quiet)
      for (const std::string& line : r.lines) std::printf("%s\n", line.c_str());
    switch (r.stage) {
      case ops::CompareResult::kOpen: return Fail(r.status.message(), 2);
      case ops::CompareResult::kStatus: return Fail(r.status.message(), 3);
      case ops::CompareResult::kRead: return Fail(r.status.message(), 4);
      case ops::CompareResult::kNone: break;
    }
    return r.equal ? 0 : 1;
  };
}

}  // namespace imgfs::cli
