#include <cstdio>
#include <memory>

#include "commands.h"
#include "image_args.h"
#include "imagecore/format.h"
#include "imagecore/ops.h"

namespace imgfs::cli {
namespace {
// "qcow2, vmdk or raw": the formats that can be made.
std::string CreatableFormats() {
  std::vector<std::string> names;
  for (const FormatDriver* d : Formats())
    if (d->create || d->create_files) names.push_back(d->name);
  std::string out;
  for (size_t i = 0; i < names.size(); ++i)
    out += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  return out;
}
}  // namespace

Runner AddCreate(CLI::App& app) {
  auto r = std::make_shared<ops::CreateRequest>();
  auto quiet = std::make_shared<bool>(false);
  auto objects = std::make_shared<std::vector<std::string>>();
  app.add_option("-f,--format", r->format, CreatableFormats())->required();
  app.add_option("-b,--backing", r->backing_file, "backing file (stored as given)");
  app.add_option("-F,--backing-format", r->backing_format, "format of the backing file");
  app.add_option("-o,--options", r->options, "format options (key=value,...; \"help\" lists them)");
  app.add_flag("-q,--quiet", *quiet, "print nothing");
  app.add_flag("-u", r->unsafe, "do not open the backing file (then -F and SIZE are needed; vmdk opens it all the same, for its CID)");
  app.add_option("--object", *objects, "a secret, for key-secret options: secret,id=ID,data=TEXT|file=PATH,...")->allow_extra_args(false);
  app.add_option("FILE", r->path, "the image to create");
  app.add_option("SIZE", r->size, "virtual size (k, M, G, T, P, E suffixes)");
  return [r, quiet, objects] {
    if (Status st = LoadObjects(*objects); !st.ok()) return Fail(st.message());
    r->secrets = &Secrets();
    if (r->options == "help" || r->options == "?") {
      const std::string help = ops::CreateHelp(r->format);
      if (help.empty()) return Fail("Unknown file format '" + r->format + "'");
      std::fputs(help.c_str(), stdout);
      return 0;
    }
    if (r->path.empty()) return Fail("Expecting image file name");
    Status st = ops::Create(*r);
    if (!st.ok()) return Fail(r->path + ": " + st.message());
    if (!*quiet) std::printf("Formatting '%s', fmt=%s\n", r->path.c_str(), r->format.c_str());
    return 0;
  };
}

}  // namespace imgfs::cli
