#include <memory>

#include "commands.h"
#include "image_args.h"
#include "imagecore/ops.h"
#include "imagecore/size.h"

namespace imgfs::cli {

// `imgfs bitmap (--merge SOURCE | --add | --remove | --clear | --enable |
// --disable)... [-b SOURCE_FILE [-F SOURCE_FMT]] [-g GRANULARITY] [-f FMT]
// FILE BITMAP`, as qemu-img bitmap: the steps run in the order given; unlike
// qemu-img, a step that fails leaves the image as it was before all of them.
Runner AddBitmap(CLI::App& app) {
  struct Args {
    ImageArgs image;
    std::vector<std::string> operands, merges;
    std::string granularity, merge_file, merge_format;
  };
  auto a = std::make_shared<Args>();
  AddImageArgs(app, &a->image);
  struct Step {
    CLI::Option* opt;
    BitmapChange::Kind kind;
  };
  auto steps = std::make_shared<std::vector<Step>>();
  auto* merge = app.add_option("--merge", a->merges, "merge bitmap SOURCE into BITMAP")->allow_extra_args(false);
  steps->push_back({merge, BitmapChange::kMerge});
  // A description that is a const std::string picks CLI11's plain flag.
  auto flag = [&app](const char* name, const std::string& help) { return app.add_flag(name, help); };
  steps->push_back({flag("--add", "add BITMAP (enabled, unless --disable follows)"), BitmapChange::kAdd});
  steps->push_back({flag("--remove", "remove BITMAP"), BitmapChange::kRemove});
  steps->push_back({flag("--clear", "clear every bit of BITMAP"), BitmapChange::kClear});
  steps->push_back({flag("--enable", "let BITMAP record writes"), BitmapChange::kEnable});
  steps->push_back({flag("--disable", "stop BITMAP recording writes"), BitmapChange::kDisable});
  app.add_option("-g", a->granularity, "the granularity of a new bitmap (default: the cluster size, 4k to 64k)");
  app.add_option("-b", a->merge_file, "the image that holds the merges' SOURCE bitmaps");
  app.add_option("-F", a->merge_format, "the format of that image (default: probe)");
  app.add_option("FILE BITMAP", a->operands, "the image and the bitmap's name");
  return [a, steps, &app] {
    std::vector<BitmapChange> changes;
    size_t merges = 0;
    for (const CLI::Option* opt : app.parse_order())
      for (const Step& s : *steps)
        if (s.opt == opt) {
          BitmapChange c;
          c.kind = s.kind;
          if (s.kind == BitmapChange::kMerge) c.source = a->merges.at(merges++);
          changes.push_back(std::move(c));
        }
    if (changes.empty()) return Fail("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge");
    if (!a->granularity.empty()) {
      bool add = false;
      for (const BitmapChange& c : changes) add |= c.kind == BitmapChange::kAdd;
      if (!add) return Fail("granularity only supported with --add");
      auto g = ParseSize(a->granularity);
      if (!g.ok() || !g.value()) return Fail("Invalid granularity specified");
      for (BitmapChange& c : changes) c.granularity = g.value();
    }
    if (!a->merge_file.empty() && merges == 0) return Fail("Merge bitmap source file only supported with --merge");
    if (!a->merge_format.empty() && a->merge_file.empty()) return Fail("-F only supported with -b");
    if (a->operands.size() != 2) return Fail("Expecting filename and bitmap name");
    auto spec = ResolveImage(a->image, a->operands[0]);
    if (!spec.ok()) return Fail(spec.status().message());
    ops::BitmapRequest req;
    req.path = spec.value().path;
    req.format = spec.value().format;
    req.bitmap = a->operands[1];
    req.steps = std::move(changes);
    req.merge_file = a->merge_file;
    req.merge_format = a->merge_format;
    Status st = ops::ChangeBitmap(req);
    return st.ok() ? 0 : Fail(st.message());
  };
}

}  // namespace imgfs::cli
