#include "crypto/encrypted_io.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <new>

namespace imgfs::crypto {

Status ReadDecrypted(const io::File& f, uint64_t file_off, uint64_t iv_off, void* buf, size_t len,
                     const SectorCipher& c) {
  auto* out = static_cast<uint8_t*>(buf);
  if (iv_off % kCryptSector == 0 && len % kCryptSector == 0) {  // whole sectors: in place
    IMGFS_RETURN_IF_ERROR(f.PRead(file_off, out, len));
    return c.Decrypt(iv_off / kCryptSector, out, len);
  }
  // Part of a sector at either end: the sectors around it, through a buffer.
  constexpr size_t kChunk = 1 << 20;
  const uint64_t head = iv_off % kCryptSector;
  uint64_t pos = iv_off - head;  // disk offset of the first whole sector
  const uint64_t end = iv_off + len;
  const uint64_t span = (end - pos + kCryptSector - 1) / kCryptSector * kCryptSector;
  std::unique_ptr<uint8_t[]> tmp(new (std::nothrow) uint8_t[std::min<uint64_t>(kChunk, span)]);
  if (!tmp) return NoSpace("out of memory decrypting " + f.path());
  while (pos < end) {
    const uint64_t n = std::min<uint64_t>(kChunk, (end - pos + kCryptSector - 1) / kCryptSector * kCryptSector);
    IMGFS_RETURN_IF_ERROR(f.PRead(file_off + pos - iv_off, tmp.get(), n));
    IMGFS_RETURN_IF_ERROR(c.Decrypt(pos / kCryptSector, tmp.get(), n));
    const uint64_t from = std::max(pos, iv_off), to = std::min(pos + n, end);
    std::memcpy(out + (from - iv_off), tmp.get() + (from - pos), to - from);
    pos += n;
  }
  return Status::OK();
}

Status WriteEncrypted(io::File& f, uint64_t file_off, uint64_t iv_off, const void* buf, size_t len,
                      const SectorCipher& c) {
  if (iv_off % kCryptSector || len % kCryptSector || file_off % kCryptSector)
    return InvalidArgument("encrypted writes take whole sectors");
  constexpr size_t kChunk = 1 << 20;
  std::unique_ptr<uint8_t[]> tmp(new (std::nothrow) uint8_t[std::min<size_t>(kChunk, len)]);
  if (!tmp) return NoSpace("out of memory encrypting for " + f.path());
  for (size_t done = 0; done < len;) {
    const size_t n = std::min(kChunk, len - done);
    std::memcpy(tmp.get(), static_cast<const uint8_t*>(buf) + done, n);
    IMGFS_RETURN_IF_ERROR(c.Encrypt((iv_off + done) / kCryptSector, tmp.get(), n));
    IMGFS_RETURN_IF_ERROR(f.PWrite(file_off + done, tmp.get(), n));
    done += n;
  }
  return Status::OK();
}

}  // namespace imgfs::crypto
