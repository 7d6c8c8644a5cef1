#include <cstdio>
#include <memory>

#include "commands.h"
#include "image_args.h"
#include "imagecore/ops.h"

namespace imgfs::cli {

Runner AddInfo(CLI::App& app) {
  struct Args {
    ImageArgs image;
    std::string file, output = "human";
    bool chain = false;
  };
  auto a = std::make_shared<Args>();
  AddImageArgs(app, &a->image);
  app.add_option("--output", a->output, "human or json")->check(CLI::IsMember({"human", "json"}));
  app.add_flag("--backing-chain", a->chain, "show every layer of the backing chain");
  app.add_option("FILE", a->file, "the image")->required();
  return [a] {
    auto spec = ResolveImage(a->image, a->file);
    if (!spec.ok()) return Fail(spec.status().message());
    auto info = ops::CollectInfo(spec.value().path, spec.value().format, a->chain);
    if (!info.ok()) return Fail(info.status().message());
    std::string out = a->output == "json" ? ops::InfoJson(info.value(), a->chain) : ops::InfoHuman(info.value());
    std::fputs(out.c_str(), stdout);
    for (const auto& li : info.value())
      if (!li.parent_mismatch.empty()) std::fprintf(stderr, "imgfs: warning: %s\n", li.parent_mismatch.c_str());
    return 0;
  };
}

}  // namespace imgfs::cli
