// imgfs: mount directories of disk images as raw files, and the qemu-img
// style commands on the same image core.
#include <cctype>
#include <exception>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "commands.h"
#include "imagecore/file.h"
#include "imagecore/log.h"
#include "progress.h"

namespace imgfs::cli {
namespace {
// What a command has said on stderr: the image core may log the same
// damage from several threads, and then the command fails with it; each
// is said once. (A mount sets a sink of its own.)
std::mutex g_said_mu;
std::set<std::string> g_said;
bool FirstTime(const std::string& message) {
  std::lock_guard<std::mutex> l(g_said_mu);
  return g_said.insert(message).second;
}
}  // namespace

int Fail(const std::string& message, int code) {
  if (FirstTime(message)) std::fprintf(stderr, "imgfs: %s\n", message.c_str());
  return code;
}

void SayOnce(LogLevel level, const std::string& message) {
  if (level >= LogLevel::kWarning && FirstTime(message)) std::fprintf(stderr, "imgfs: %s\n", message.c_str());
}
}  // namespace imgfs::cli

namespace {
// qemu-img resize takes "FILE -1G": a negative size is not an option. CLI11
// would read it as one, so a "--" goes before it.
std::vector<char*> NegativeSizeAsOperand(int argc, char** argv) {
  std::vector<char*> args(argv, argv + argc);
  static char kEndOfOptions[] = "--";
  if (argc >= 4 && std::string(argv[1]) == "resize") {
    const std::string last = argv[argc - 1];
    if (last.size() > 1 && last[0] == '-' && (std::isdigit(static_cast<unsigned char>(last[1])) || last[1] == '.') &&
        std::string(argv[argc - 2]) != "--")
      args.insert(args.end() - 1, kEndOfOptions);
  }
  return args;
}
}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args = NegativeSizeAsOperand(argc, argv);
  argc = static_cast<int>(args.size());
  argv = args.data();
  imgfs::SetLogSink(imgfs::cli::SayOnce);
  imgfs::cli::CatchUsr1();
  imgfs::io::RaiseFileLimit();  // a backing chain of 4,096 files is 4,096 descriptors
  CLI::App app{"imgfs: virtual disk images as plain raw files"};
  app.require_subcommand(1);
  app.set_version_flag("-V,--version", "imgfs 0.1.0");
  // Every option shows its default in --help (an option bound to a value
  // shows that value), as the subcommands inherit these defaults.
  app.option_defaults()->always_capture_default();
  std::map<CLI::App*, imgfs::cli::Runner> runners;
  auto add = [&](const char* name, const char* help, imgfs::cli::Runner (*fn)(CLI::App&)) {
    CLI::App* sub = app.add_subcommand(name, help);
    runners[sub] = fn(*sub);
  };
  add("info", "show information about an image", imgfs::cli::AddInfo);
  add("create", "create a new image", imgfs::cli::AddCreate);
  add("check", "check (and repair) an image's metadata", imgfs::cli::AddCheck);
  add("snapshot", "list, create, apply or delete internal snapshots", imgfs::cli::AddSnapshot);
  add("resize", "change the size of an image", imgfs::cli::AddResize);
  add("commit", "merge an image into its backing file", imgfs::cli::AddCommit);
  add("map", "show where the disk's bytes are stored, as qemu-img map", imgfs::cli::AddMap);
  add("rebase", "change the backing file, copying what differs", imgfs::cli::AddRebase);
  add("compare", "compare the contents of two images", imgfs::cli::AddCompare);
  add("convert", "copy an image into another, of any format", imgfs::cli::AddConvert);
  add("measure", "the size a converted or new image needs", imgfs::cli::AddMeasure);
  add("dd", "copy a range of an image into a new image", imgfs::cli::AddDd);
  add("amend", "change options of an existing image", imgfs::cli::AddAmend);
  add("bench", "time reads or writes through the image core", imgfs::cli::AddBench);
  add("bitmap", "add, remove, clear, enable, disable or merge persistent dirty bitmaps", imgfs::cli::AddBitmap);
  add("mount", "mount a directory of images (or one image) as raw files", imgfs::cli::AddMount);
  add("umount", "flush and unmount an imgfs mount", imgfs::cli::AddUmount);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "imgfs: %s (see 'imgfs --help')\n", e.what());
    return 1;
  }
  // No exception leaves a command: it fails with one line, as any error.
  try {
    for (auto& [sub, run] : runners)
      if (sub->parsed()) return run();
  } catch (const std::exception& e) {
    return imgfs::cli::Fail(std::string("internal error: ") + e.what());
  } catch (...) {
    return imgfs::cli::Fail("internal error");
  }
  return 1;
}
