// io::File's portable defaults, for files that have no better way.
#include <algorithm>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include "imagecore/file.h"

namespace imgfs::io {

Result<std::unique_ptr<File>> File::OpenAgain() const {
  if (fd() < 0) return Unsupported(path() + ": cannot be opened again");
  return ReopenPosixFile(*this, false);
}

Status File::PWriteV(uint64_t off, const Piece* pieces, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    if (!pieces[i].len) continue;
    IMGFS_RETURN_IF_ERROR(PWrite(off, pieces[i].data, pieces[i].len));
    off += pieces[i].len;
  }
  return Status::OK();
}

Status File::Deallocate(uint64_t off, uint64_t n) {
  const uint64_t end = std::min(off + n, Size());
  return end > off ? WriteZeros(off, end - off) : Status::OK();
}

Status File::WriteZeros(uint64_t off, uint64_t n) {
  std::vector<uint8_t> zeros(std::min<uint64_t>(n, 1 << 20), 0);
  for (uint64_t p = off; p < off + n;) {
    const uint64_t k = std::min<uint64_t>(zeros.size(), off + n - p);
    IMGFS_RETURN_IF_ERROR(PWrite(p, zeros.data(), k));
    p += k;
  }
  return Status::OK();
}

Status File::Allocate(uint64_t off, uint64_t n) {
  return off + n > Size() ? Truncate(off + n) : Status::OK();  // memory holds every byte anyway
}

Result<FileStat> File::Stat() const {
  FileStat st;  // a file of the process's own, as in memory
  st.is_regular = true;
  st.mode = S_IFREG | 0644;
  st.uid = ::getuid();
  st.gid = ::getgid();
  st.size = Size();
  st.allocated = AllocatedBytes();
  return st;
}

}  // namespace imgfs::io
