// imgcat FILE [OFFSET LENGTH]: the guest view of FILE (chain resolved) to
// stdout, through imagecore alone. Test tool for the interop suite.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "imagecore/chain.h"

int main(int argc, char** argv) {
  if (argc != 2 && argc != 4) {
    std::fprintf(stderr, "usage: imgcat FILE [OFFSET LENGTH]\n");
    return 2;
  }
  auto chain = imgfs::Chain::Open(argv[1], "", false);
  if (!chain.ok()) {
    std::fprintf(stderr, "imgcat: %s\n", chain.status().ToString().c_str());
    return 1;
  }
  uint64_t off = argc == 4 ? std::strtoull(argv[2], nullptr, 0) : 0;
  uint64_t len = argc == 4 ? std::strtoull(argv[3], nullptr, 0) : chain.value()->VirtualSize() - off;
  std::vector<char> buf(4 << 20);
  while (len > 0) {
    size_t n = len < buf.size() ? len : buf.size();
    imgfs::Status st = chain.value()->Read(0, off, buf.data(), n);
    if (!st.ok()) {
      std::fprintf(stderr, "imgcat: %s\n", st.ToString().c_str());
      return 1;
    }
    for (size_t done = 0; done < n;) {
      ssize_t w = ::write(1, buf.data() + done, n - done);
      if (w <= 0) return 1;
      done += static_cast<size_t>(w);
    }
    off += n;
    len -= n;
  }
  return 0;
}
