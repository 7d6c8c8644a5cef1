// imgwrite FILE OFFSET PATTERN_BYTE LENGTH: writes LENGTH bytes of
// PATTERN_BYTE at OFFSET through imagecore, then flushes and closes.
// PATTERN_BYTE "zero" zeroes the range, "discard" zeroes it and frees
// the space where the format can. With IMGWRITE_KEY set, an encrypted
// image opens with that passphrase.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "imagecore/chain.h"
#include "imagecore/keyring.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: imgwrite FILE OFFSET PATTERN_BYTE LENGTH\n");
    return 2;
  }
  if (const char* key = std::getenv("IMGWRITE_KEY")) {
    imgfs::Status st = imgfs::AddImageKey(argv[1], imgfs::SecretBytes(key, std::strlen(key)));
    if (!st.ok()) {
      std::fprintf(stderr, "imgwrite: %s\n", st.ToString().c_str());
      return 1;
    }
  }
  auto chain = imgfs::Chain::Open(argv[1], "", true);
  if (!chain.ok()) {
    std::fprintf(stderr, "imgwrite: %s\n", chain.status().ToString().c_str());
    return 1;
  }
  uint64_t off = std::strtoull(argv[2], nullptr, 0);
  const std::string what = argv[3];
  uint64_t len = std::strtoull(argv[4], nullptr, 0);
  imgfs::Status st;
  if (what == "zero" || what == "discard") {
    st = chain.value()->WriteZeroes(off, len, what == "discard");
  } else {
    int pattern = static_cast<int>(std::strtol(argv[3], nullptr, 0));
    std::vector<unsigned char> buf(len, static_cast<unsigned char>(pattern));
    st = chain.value()->Write(off, buf.data(), len);
  }
  if (st.ok()) st = chain.value()->Flush();
  if (!st.ok()) {
    std::fprintf(stderr, "imgwrite: %s\n", st.ToString().c_str());
    return 1;
  }
  return 0;
}
