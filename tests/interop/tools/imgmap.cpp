// imgmap FILE: "OFFSET LENGTH data|zero" per merged run of the resolved
// chain (zero = reads as zeros and holds no data: a hole).
#include <cstdio>

#include "imagecore/chain.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: imgmap FILE\n");
    return 2;
  }
  auto chain = imgfs::Chain::Open(argv[1], "", false);
  if (!chain.ok()) {
    std::fprintf(stderr, "imgmap: %s\n", chain.status().ToString().c_str());
    return 1;
  }
  const uint64_t size = chain.value()->VirtualSize();
  uint64_t off = 0, run_start = 0;
  int run_kind = -1;
  while (off < size) {
    imgfs::Resolved r;
    imgfs::Status st = chain.value()->Resolve(0, off, size - off, &r);
    if (!st.ok()) {
      std::fprintf(stderr, "imgmap: %s\n", st.ToString().c_str());
      return 1;
    }
    int kind = r.kind == imgfs::Resolved::kZero ? 0 : 1;
    if (kind != run_kind) {
      if (run_kind >= 0)
        std::printf("%llu %llu %s\n", (unsigned long long)run_start, (unsigned long long)(off - run_start),
                    run_kind ? "data" : "zero");
      run_start = off;
      run_kind = kind;
    }
    off += r.length;
  }
  if (run_kind >= 0)
    std::printf("%llu %llu %s\n", (unsigned long long)run_start, (unsigned long long)(off - run_start),
                run_kind ? "data" : "zero");
  return 0;
}
