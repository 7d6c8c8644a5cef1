#include <cstdio>
#include <memory>

#include "commands.h"
#include "image_args.h"
#include "imagecore/ops.h"
#include "imagecore/size.h"

namespace imgfs::cli {

namespace {
struct BenchArgs {
  ImageArgs image;
  std::string file, offset = "0", size = "4096", step, aio;
  uint64_t count = 75000, depth = 64, flush_interval = 0;
  unsigned pattern = 0;
  bool write = false, native = false, no_drain = false, quiet = false;
};

int Run(const BenchArgs& a) {
  auto spec = ResolveImage(a.image, a.file);
  if (!spec.ok()) return Fail(spec.status().message());
  ops::BenchRequest req;
  req.path = spec.value().path;
  req.format = spec.value().format;
  req.count = a.count;
  req.depth = a.depth;
  auto size = ParseSize(a.size);
  if (!size.ok() || size.value() == 0 || size.value() > (1u << 30)) return Fail("Invalid buffer size specified");
  req.size = size.value();
  auto step = ParseSize(a.step.empty() ? a.size : a.step);
  if (!step.ok()) return Fail("Invalid step size specified");
  req.step = step.value();
  auto offset = ParseSize(a.offset);
  if (!offset.ok()) return Fail("Invalid offset specified");
  req.offset = offset.value();
  if (a.pattern > 255) return Fail("Invalid pattern byte specified");
  req.pattern = static_cast<uint8_t>(a.pattern);
  req.write = a.write;
  req.flush_interval = a.flush_interval;
  req.drain = !a.no_drain;
  if (Status st = ops::CheckBenchRequest(req); !st.ok()) return Fail(st.message());
  if (!a.quiet) {
    std::printf("Sending %llu %s requests, %llu bytes each, %llu in parallel (starting at offset %llu, step size %llu)\n",
                (unsigned long long)req.count, req.write ? "write" : "read", (unsigned long long)req.size,
                (unsigned long long)req.depth, (unsigned long long)req.offset, (unsigned long long)req.step);
    if (req.flush_interval) std::printf("Sending flush every %llu requests\n", (unsigned long long)req.flush_interval);
  }
  auto secs = ops::Bench(req);
  if (!secs.ok()) return Fail(secs.status().message());
  if (!a.quiet) std::printf("Run completed in %3.3f seconds.\n", secs.value());
  return 0;
}
}  // namespace

// `imgfs bench [-c COUNT] [-d DEPTH] [-f FMT] [-n] [-o OFFSET] [-s SIZE]
// [-S STEP] [-t CACHE] [-w] [--pattern=N] [--flush-interval=N] [--no-drain]
// [-q] FILE`, as qemu-img bench: requests through the image core, DEPTH
// threads at once.
Runner AddBench(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  AddImageArgs(app, &a->image);
  app.add_option("-c", a->count, "number of requests (default 75000)");
  app.add_option("-d", a->depth, "requests in flight at once (default 64)");
  app.add_flag("-n", a->native, "native AIO (accepted; imgfs uses threads)");
  app.add_option("-i", a->aio, "AIO mode (accepted; imgfs uses threads)");
  app.add_option("-o", a->offset, "offset of the first request (default 0)");
  app.add_option("-s", a->size, "bytes per request (default 4096)");
  app.add_option("-S", a->step, "distance between requests (default: the request size)");
  app.add_flag("-w", a->write, "write instead of read");
  app.add_option("--pattern", a->pattern, "byte written with -w (default 0)");
  app.add_option("--flush-interval", a->flush_interval, "with -w: flush after every N requests");
  app.add_flag("--no-drain", a->no_drain, "flush without waiting for the requests in flight");
  app.add_flag("-q,--quiet", a->quiet, "print nothing");
  app.add_option("FILE", a->file, "the image")->required();
  return [a] { return Run(*a); };
}

}  // namespace imgfs::cli
