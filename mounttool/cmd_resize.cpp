#include <cstdio>
#include <memory>

#include "commands.h"
#include "image_args.h"
#include "imagecore/ops.h"

namespace imgfs::cli {

// `imgfs resize [--shrink] [--preallocation=MODE] [-f FMT] [-q] FILE [+|-]SIZE`, as qemu-img resize.
// (main() puts "--" before a "-SIZE" so that it is not taken for an option.)
Runner AddResize(CLI::App& app) {
  struct Args {
    ImageArgs image;
    std::string file, size, prealloc = "off";
    bool shrink = false, quiet = false;
  };
  auto a = std::make_shared<Args>();
  app.add_flag("--shrink", a->shrink, "allow the disk to get smaller (data past the new end is lost)");
  app.add_option("--preallocation", a->prealloc, "reserve what the disk gains: off, metadata (qcow2), falloc or full (raw, qcow2)")
      ->capture_default_str();
  AddImageArgs(app, &a->image);
  app.add_flag("-q,--quiet", a->quiet, "print nothing on success");
  app.add_option("FILE", a->file, "the image")->required();
  app.add_option("SIZE", a->size, "new size, or +SIZE / -SIZE relative to the current one")->required();
  return [a] {
    Prealloc mode = Prealloc::kOff;
    if (a->prealloc == "off") mode = Prealloc::kOff;
    else if (a->prealloc == "metadata") mode = Prealloc::kMetadata;
    else if (a->prealloc == "falloc") mode = Prealloc::kFalloc;
    else if (a->prealloc == "full") mode = Prealloc::kFull;
    else return Fail("Invalid preallocation mode '" + a->prealloc + "'");
    auto spec = ResolveImage(a->image, a->file);
    if (!spec.ok()) return Fail(spec.status().message());
    auto size = ops::ResizeFile(spec.value().path, spec.value().format, a->size, a->shrink, mode);
    if (!size.ok()) return Fail(size.status().message());
    if (!a->quiet) std::printf("Image resized.\n");
    return 0;
  };
}

}  // namespace imgfs::cli
