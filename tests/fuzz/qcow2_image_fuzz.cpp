// Fuzz target: a whole qcow2 image through the format driver: L1/L2 and
// refcount walks, compressed and extended L2 clusters, snapshots, bitmaps
// and the check. The input is the image file. It is opened three times
// from memory: read-only for the reader's calls, writable for a repair and
// a few writes, and writable for bitmap steps, a preallocating grow and
// amend (see image_walk.h for the bounds). Encrypted images open with the
// passphrase "fuzz", the seeds' (in-memory files share one identity).
#include <cstdint>

#include "formats/qcow2/qcow2_format.h"
#include "fuzz_util.h"
#include "image_walk.h"
#include "imagecore/keyring.h"

using namespace imgfs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > fuzz::kMaxInput) return 0;
  fuzz::QuietLogs();
  static const bool keyed = [] {
    AddImageKey(io::FileStat{}, SecretBytes("fuzz", 4));
    return true;
  }();
  (void)keyed;
  {
    // An absolute data file name would make the driver open a host file.
    auto probe = fuzz::MemFileWith(data, size);
    auto h = qcow2::Header::Read(*probe);
    if (h.ok() && !h->data_file.empty() && h->data_file[0] == '/') return 0;
  }
  if (auto img = fuzz::OpenQcow2(fuzz::MemFileWith(data, size), false)) fuzz::WalkForReading(*img);
  if (auto img = fuzz::OpenQcow2(fuzz::MemFileWith(data, size), true)) fuzz::WalkForWriting(*img);
  if (auto img = fuzz::OpenQcow2(fuzz::MemFileWith(data, size), true)) fuzz::WalkForChanging(*img);
  return 0;
}
