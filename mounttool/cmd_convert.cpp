#include <cstdio>
#include <memory>

#include "commands.h"
#include "image_args.h"
#include "imagecore/ops.h"
#include "imagecore/size.h"
#include "progress.h"

namespace imgfs::cli {

namespace {
struct Args {
  ImageArgs image;
  std::vector<std::string> files;  // sources, then the target
  std::string out_format = "raw", options, backing, backing_format, snapshot, sparse = "4k", rate;
  bool compress = false, existing = false, target_is_zero = false, out_of_order = false;
  bool quiet = false, salvage = false, bitmaps = false, skip_broken_bitmaps = false, target_image_opts = false;
  ProgressArgs progress;
  bool copy_offload = false;
  unsigned workers = 8;
};

// -S as qemu-img takes it: multiples of 512 up to 16 MiB, 0 for none.
int ParseSparse(const std::string& text, uint64_t* out) {
  auto v = ParseSize(text);
  if (!v.ok() || v.value() % 512 != 0 || v.value() > (16u << 20))
    return Fail("Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. "
                "Select 0 to disable sparse detection (fully allocates output).");
  *out = v.value();
  return 0;
}

int Run(const Args& a) {
  if (a.files.size() < 2) return Fail("Expecting one image file name");
  if (a.skip_broken_bitmaps && !a.bitmaps) return Fail("Use of --skip-broken-bitmaps requires --bitmaps");
  if (a.target_image_opts && !a.existing) return Fail("--target-image-opts requires use of -n flag");
  if (a.workers < 1 || a.workers > 16)
    return Fail("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16");
  ops::ConvertRequest req;
  for (size_t i = 0; i + 1 < a.files.size(); ++i) {
    auto spec = ResolveImage(a.image, a.files[i]);
    if (!spec.ok()) return Fail(spec.status().message());
    req.sources.push_back(spec.value().path);
    req.source_format = spec.value().format;
  }
  req.target = a.files.back();
  req.target_format = a.out_format;
  if (Status st = LoadObjects(a.image.objects); !st.ok()) return Fail(st.message());
  req.secrets = &Secrets();
  if (a.target_image_opts) {
    auto spec = ResolveImageOpts(req.target);
    if (!spec.ok()) return Fail(spec.status().message());
    req.target = spec.value().path;
    req.target_format = spec.value().format;
  }
  req.options = a.options;
  req.backing = a.backing;
  req.backing_format = a.backing_format;
  req.snapshot = a.snapshot;
  req.existing = a.existing;
  req.target_is_zero = a.target_is_zero;
  if (int rc = ParseSparse(a.sparse, &req.sparse_size)) return rc;
  if (!a.rate.empty()) {
    auto r = ParseSize(a.rate);
    if (!r.ok() || r.value() == 0) return Fail("Invalid rate limit specified");
    req.rate = r.value();
  }
  req.workers = a.workers;
  req.out_of_order = a.out_of_order;
  req.salvage = a.salvage;
  req.compress = a.compress;
  req.bitmaps = a.bitmaps;
  req.skip_broken_bitmaps = a.skip_broken_bitmaps;
  req.progress = ProgressPrinter(a.progress, a.quiet);
  Status st = ops::Convert(req);
  if (st.ok()) FinishProgress(a.progress, a.quiet);
  return st.ok() ? 0 : Fail(st.message());
}
}  // namespace

// `imgfs convert [-f FMT] [-O FMT] [-o OPTS] [-B BACKING [-F FMT]] [-l SNAPSHOT]
// [-S SIZE] [-n] [--target-is-zero] [-m N] [-W] [-r RATE] [-p] [-q] [-U]
// [--salvage] SRC... DST`, as qemu-img convert.
Runner AddConvert(CLI::App& app) {
  auto a = std::make_shared<Args>();
  AddImageArgs(app, &a->image, true, true);
  app.add_option("-O", a->out_format, "format of the output (default: raw)");
  app.add_option("-o", a->options, "options of the output format, as for create (key=value,...)");
  app.add_flag("-c", a->compress, "write the target's clusters compressed (qcow2: zlib, or zstd with -o compression_type=zstd)");
  app.add_option("-B", a->backing, "the output's backing file: only what differs from it is written");
  app.add_option("-F", a->backing_format, "format of the backing file given with -B");
  app.add_option("-l", a->snapshot, "convert this internal snapshot of the source (ID, name, snapshot.id=, snapshot.name=)");
  app.add_option("-S", a->sparse, "zero runs at least this long stay holes (default 4k; 0: write everything)");
  app.add_flag("-n", a->existing, "the output exists: write into it rather than creating it");
  app.add_flag("--target-is-zero", a->target_is_zero, "with -n: the output reads as zeros already");
  app.add_option("-m", a->workers, "parallel requests (default 8; 1 to 16)");
  app.add_flag("-W", a->out_of_order, "write as reads complete, not in guest order");
  app.add_option("-r", a->rate, "limit the copy to this many bytes per second");
  AddProgressArgs(app, &a->progress);
  app.add_flag("-q,--quiet", a->quiet, "print nothing on success");
  app.add_flag("--salvage", a->salvage, "copy unreadable parts of the source as zeros, with a warning");
  app.add_flag("--bitmaps", a->bitmaps, "copy the source's persistent bitmaps (qcow2 to qcow2)");
  app.add_flag("--skip-broken-bitmaps", a->skip_broken_bitmaps, "with --bitmaps: leave out in-use bitmaps (else refused)");
  app.add_flag("--target-image-opts", a->target_image_opts, "the output is an option string: driver=FMT,file.filename=PATH[,key-secret=ID] (with -n)");
  app.add_flag("-C", a->copy_offload, "copy offloading (accepted; imgfs copies by itself)");
  app.add_option("FILES", a->files, "the source image(s), then the output")->required();
  return [a] { return Run(*a); };
}

}  // namespace imgfs::cli
