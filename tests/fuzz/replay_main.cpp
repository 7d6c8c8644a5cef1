// Replays inputs through a fuzz target without libFuzzer, for the normal
// (gcc, ASan) builds: every file named, and every file below every
// directory named. A crash or sanitizer report fails the run; so does
// having nothing to replay, which would otherwise pass silently.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

namespace fs = std::filesystem;

bool ReplayFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", p.c_str());
    return false;
  }
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  size_t replayed = 0;
  bool ok = true;
  for (int i = 1; i < argc; ++i) {
    const fs::path arg(argv[i]);
    std::error_code ec;
    size_t here = 0;
    if (fs::is_directory(arg, ec)) {
      std::vector<fs::path> files;
      for (fs::recursive_directory_iterator it(arg, ec), end; !ec && it != end; it.increment(ec))
        if (it->is_regular_file()) files.push_back(it->path());
      std::sort(files.begin(), files.end());
      for (const fs::path& f : files) here += ReplayFile(f) ? 1 : (ok = false, 0);
    } else if (fs::is_regular_file(arg, ec)) {
      here += ReplayFile(arg) ? 1 : (ok = false, 0);
    } else {
      std::fprintf(stderr, "%s: no such file or directory\n", argv[i]);
      ok = false;
    }
    std::printf("%s: replayed %zu inputs\n", argv[i], here);
    replayed += here;
  }
  std::printf("replayed %zu inputs in all\n", replayed);
  if (replayed == 0) {
    std::fprintf(stderr, "nothing was replayed: an empty corpus proves nothing\n");
    return 1;
  }
  return ok ? 0 : 1;
}
