// Reads and writes through a sector cipher: the bytes at file offset
// `file_off + x` hold the disk's byte at `iv_off + x`, encrypted with the
// IV of sector (iv_off + x) / 512.
#pragma once

#include <cstddef>
#include <cstdint>

#include "crypto/sector_cipher.h"
#include "imagecore/file.h"

namespace imgfs::crypto {

constexpr uint64_t kCryptSector = 512;

// Any range: the sectors around it are read and decrypted.
Status ReadDecrypted(const io::File& f, uint64_t file_off, uint64_t iv_off, void* buf, size_t len,
                     const SectorCipher& c);
// Whole sectors only (file_off, iv_off and len multiples of 512).
Status WriteEncrypted(io::File& f, uint64_t file_off, uint64_t iv_off, const void* buf, size_t len,
                      const SectorCipher& c);

}  // namespace imgfs::crypto
