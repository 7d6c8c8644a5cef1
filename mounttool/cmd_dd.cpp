#include <cstdio>
#include <memory>

#include "commands.h"
#include "image_args.h"
#include "imagecore/ops.h"
#include "imagecore/size.h"
#include "progress.h"

namespace imgfs::cli {

namespace {
struct DdArgs {
  ImageArgs image;
  std::string out_format = "raw";
  std::vector<std::string> operands;  // bs=, count=, skip=, if=, of=
  ProgressArgs progress;
};

struct Operands {
  uint64_t bs = 512, count = UINT64_MAX, skip = 0;
  std::string in, out;
};

const char* kSuffixes = " You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, "
                        "terabytes, petabytes and exabytes.";

// dd's KEY=VALUE operands; 0 or the exit code of a failure.
int ParseOperands(const std::vector<std::string>& args, Operands* o) {
  for (const std::string& arg : args) {
    const auto eq = arg.find('=');
    const std::string key = arg.substr(0, eq), value = eq == std::string::npos ? "" : arg.substr(eq + 1);
    if (eq == std::string::npos) return Fail("unrecognized operand " + arg);
    if (key == "if") {
      o->in = value;
    } else if (key == "of") {
      o->out = value;
    } else if (key == "bs" || key == "count" || key == "skip") {
      auto v = ParseSize(value);
      if (key == "bs" && (!v.ok() || v.value() < 1 || v.value() > 2147483647))
        return Fail("Invalid bs specified. Must be between 1 and 2147483647.");
      if (!v.ok()) return Fail("Invalid " + key + " specified." + kSuffixes);
      (key == "bs" ? o->bs : key == "count" ? o->count : o->skip) = v.value();
    } else {
      return Fail("unrecognized operand " + arg);
    }
  }
  if (o->in.empty() || o->out.empty()) return Fail("Must specify both input and output files");
  return 0;
}
}  // namespace

// `imgfs dd [-f FMT] [-O FMT] [-U] [-p] [bs=N] [count=N] [skip=N] if=IN of=OUT`,
// as qemu-img dd: OUT is a new image of the bytes count*bs (or to the end)
// of IN, from skip*bs.
Runner AddDd(CLI::App& app) {
  auto a = std::make_shared<DdArgs>();
  AddImageArgs(app, &a->image);
  app.add_option("-O", a->out_format, "format of the output (default: raw)");
  AddProgressArgs(app, &a->progress);
  app.add_option("OPERANDS", a->operands, "bs=N (default 512), count=N, skip=N (in blocks), if=IN, of=OUT");
  return [a] {
    Operands o;
    if (int rc = ParseOperands(a->operands, &o)) return rc;
    auto spec = ResolveImage(a->image, o.in);
    if (!spec.ok()) return Fail(spec.status().message());
    if (o.skip > UINT64_MAX / o.bs) return Fail(o.in + ": cannot skip to specified offset");
    ops::ConvertRequest req;
    req.sources = {spec.value().path};
    req.source_format = spec.value().format;
    req.target = o.out;
    req.target_format = a->out_format;
    // As qemu-img: count*bs caps the input's size, then skip*bs comes off
    // it: the bytes [skip*bs, count*bs) are copied.
    req.from = o.skip * o.bs;
    if (o.count != UINT64_MAX && o.count <= UINT64_MAX / o.bs) req.until = o.count * o.bs;
    req.progress = ProgressPrinter(a->progress, false);
    Status st = ops::Convert(req);
    if (!st.ok()) return Fail(st.message());
    FinishProgress(a->progress, false);
    return 0;
  };
}

}  // namespace imgfs::cli
