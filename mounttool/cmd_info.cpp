#include <cstdio>
#include <memory>

#include "commands.h"
#include "imagecore/ops.h"

namespace imgfs::cli {

Runner AddInfo(CLI::App& app) {
  struct Args {
    std::string file, format, output = "human";
    bool chain = false;
  };
  auto a = std::make_shared<Args>();
  app.add_option("-f,--format", a->format, "image format (default: probe)");
  app.add_option("--output", a->output, "human or json")->check(CLI::IsMember({"human", "json"}));
  app.add_flag("--backing-chain", a->chain, "show every layer of the backing chain");
  app.add_option("FILE", a->file, "the image")->required();
  return [a] {
    auto info = ops::CollectInfo(a->file, a->format, a->chain);
    if (!info.ok()) return Fail(info.status().message());
    std::string out = a->output == "json" ? ops::InfoJson(info.value(), a->chain) : ops::InfoHuman(info.value());
    std::fputs(out.c_str(), stdout);
    for (const auto& li : info.value())
      if (!li.parent_mismatch.empty()) std::fprintf(stderr, "imgfs: warning: %s\n", li.parent_mismatch.c_str());
    return 0;
  };
}

}  // namespace imgfs::cli
