#include <cstdio>
#include <memory>

#include "commands.h"
#include "imagecore/ops.h"

namespace imgfs::cli {

Runner AddCreate(CLI::App& app) {
  auto r = std::make_shared<ops::CreateRequest>();
  auto quiet = std::make_shared<bool>(false);
  app.add_option("-f,--format", r->format, "qcow2 or raw")->required();
  app.add_option("-b,--backing", r->backing_file, "backing file (stored as given)");
  app.add_option("-F,--backing-format", r->backing_format, "format of the backing file");
  app.add_option("-o,--options", r->options, "format options: cluster_size=N,compat=0.10|1.1,...");
  app.add_flag("-q,--quiet", *quiet, "print nothing");
  app.add_option("FILE", r->path, "the image to create")->required();
  app.add_option("SIZE", r->size, "virtual size (k, M, G, T, P, E suffixes)");
  return [r, quiet] {
    Status st = ops::Create(*r);
    if (!st.ok()) return Fail(r->path + ": " + st.message());
    if (!*quiet) std::printf("Formatting '%s', fmt=%s\n", r->path.c_str(), r->format.c_str());
    return 0;
  };
}

}  // namespace imgfs::cli
