#include <cstdio>
#include <memory>

#include "commands.h"
#include "image_args.h"
#include "imagecore/ops.h"
#include "imagecore/size.h"

namespace imgfs::cli {

// `imgfs map [--output=human|json] [--start-offset=N] [--max-length=N]
// [-f FMT] [-U] FILE`, as qemu-img map.
Runner AddMap(CLI::App& app) {
  struct Args {
    ImageArgs image;
    std::string file, output = "human", start, max_length;
  };
  auto a = std::make_shared<Args>();
  AddImageArgs(app, &a->image);
  app.add_option("--output", a->output, "human or json")->check(CLI::IsMember({"human", "json"}));
  app.add_option("-s,--start-offset", a->start, "map from this guest offset (default 0)");
  app.add_option("-l,--max-length", a->max_length, "map at most this many bytes (default: to the end)");
  app.add_option("FILE", a->file, "the image")->required();
  return [a] {
    uint64_t start = 0, length = UINT64_MAX;
    const char* kSuffixes = " You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, "
                            "terabytes, petabytes and exabytes.";
    if (!a->start.empty()) {
      auto v = ParseSize(a->start);
      if (!v.ok()) return Fail(std::string("Invalid start offset specified.") + kSuffixes);
      start = v.value();
    }
    if (!a->max_length.empty()) {
      auto v = ParseSize(a->max_length);
      if (!v.ok()) return Fail(std::string("Invalid max length specified.") + kSuffixes);
      length = v.value();
    }
    auto spec = ResolveImage(a->image, a->file);
    if (!spec.ok()) return Fail(spec.status().message());
    auto chain = Chain::Open(spec.value().path, spec.value().format, false);
    if (!chain.ok()) return Fail("Could not open '" + spec.value().path + "': " + chain.status().message());
    auto entries = ops::Map(*chain.value(), start, length);
    if (!entries.ok()) return Fail(entries.status().message());
    if (a->output == "json") {
      std::fputs(ops::MapJson(entries.value()).c_str(), stdout);
      return 0;
    }
    std::string out;
    Status st = ops::MapHuman(entries.value(), &out);
    std::fputs(out.c_str(), stdout);
    return st.ok() ? 0 : Fail(st.message());
  };
}

}  // namespace imgfs::cli
