#include <cstdio>
#include <memory>

#include "commands.h"
#include "image_args.h"
#include "imagecore/format.h"
#include "imagecore/ops.h"
#include "progress.h"

namespace imgfs::cli {

// `imgfs check [-r leaks|all] [--output=human|json] [-p] [-q] [-f FMT] FILE`, with
// qemu-img check's output and exit codes (0 clean, 1 could not check,
// 2 corruptions, 3 leaks only, 63 format cannot be checked).
Runner AddCheck(CLI::App& app) {
  struct Args {
    ImageArgs image;
    std::string file, output = "human", repair;
    ProgressArgs progress;
    bool quiet = false;
  };
  auto a = std::make_shared<Args>();
  AddImageArgs(app, &a->image, true, true);
  app.add_option("-r,--repair", a->repair, "repair leaks, or all errors")->check(CLI::IsMember({"leaks", "all"}));
  app.add_option("--output", a->output, "human or json")->check(CLI::IsMember({"human", "json"}));
  AddProgressArgs(app, &a->progress);
  app.add_flag("-q", a->quiet, "print no report and no progress (only the problems, on stderr; the exit code tells)");
  app.add_option("FILE", a->file, "the image")->required();
  return [a] {
    RepairMode mode = a->repair == "all" ? RepairMode::kAll : a->repair == "leaks" ? RepairMode::kLeaks : RepairMode::kNone;
    auto spec = ResolveImage(a->image, a->file);
    if (!spec.ok()) return Fail(spec.status().message(), 1);
    auto r = ops::CheckImage(spec.value().path, spec.value().format, mode, ProgressPrinter(a->progress, a->quiet));
    if (!r.ok()) return Fail(r.status().message(), ops::CheckExitCode(r.status()));
    FinishProgress(a->progress, a->quiet);
    for (const auto& m : r->messages) std::fprintf(stderr, "%s\n", m.c_str());
    if (!r->failed.empty()) return Fail("Check failed: " + r->failed, 1);
    if (a->quiet) return ops::CheckExitCode(r.value());
    if (a->output == "json") {
      std::fputs(ops::CheckJson(r.value(), a->file, r->format).c_str(), stdout);
    } else {
      std::fputs(ops::CheckHuman(r.value()).c_str(), stdout);
    }
    return ops::CheckExitCode(r.value());
  };
}

}  // namespace imgfs::cli
