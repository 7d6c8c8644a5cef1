#include <cstdio>
#include <memory>

#include "commands.h"
#include "image_args.h"
#include "imagecore/ops.h"

namespace imgfs::cli {

// `imgfs measure [--output=human|json] [-O FMT] [-o OPTS] [--size SIZE |
// [-f FMT] [-l SNAPSHOT] FILE]`, as qemu-img measure.
Runner AddMeasure(CLI::App& app) {
  struct Args {
    ImageArgs image;
    std::string file, output = "human", out_format = "raw", options, size, snapshot;
  };
  auto a = std::make_shared<Args>();
  AddImageArgs(app, &a->image);
  app.add_option("--output", a->output, "human or json")->check(CLI::IsMember({"human", "json"}));
  app.add_option("-O", a->out_format, "the format to measure for (default: raw)");
  app.add_option("-o", a->options, "options of that format, as for create");
  app.add_option("--size", a->size, "measure a new image of this size instead of a file");
  app.add_option("-l", a->snapshot, "measure this internal snapshot of the file");
  app.add_option("FILE", a->file, "the image to be converted");
  return [a] {
    ops::MeasureRequest req;
    if (!a->file.empty()) {
      auto spec = ResolveImage(a->image, a->file);
      if (!spec.ok()) return Fail(spec.status().message());
      req.path = spec.value().path;
      req.format = spec.value().format;
    }
    req.snapshot = a->snapshot;
    req.size = a->size;
    req.out_format = a->out_format;
    req.options = a->options;
    auto r = ops::Measure(req);
    if (!r.ok()) return Fail(r.status().message());
    std::fputs((a->output == "json" ? ops::MeasureJson(r.value()) : ops::MeasureHuman(r.value())).c_str(), stdout);
    return 0;
  };
}

}  // namespace imgfs::cli
