// Fuzz target: LUKS1 headers (raw luks images, and the header qcow2 embeds),
// the input as the header area. A header that parses keeps to the parser's
// bounds; where its PBKDF2 counts are small enough to run here, every slot
// is tried with a passphrase, which opens or is refused, never crashes.
#include <cstdint>

#include "crypto/luks.h"
#include "fuzz_util.h"
#include "imagecore/file.h"

using namespace imgfs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > fuzz::kMaxInput) return 0;
  fuzz::QuietLogs();
  auto h = crypto::ParseLuksHeader(data, size, size, "fuzz");
  if (!h.ok()) return 0;
  if (h->key_bytes == 0 || h->key_bytes > 64) __builtin_trap();
  bool cheap = h->mk_digest_iter <= 2000;
  for (const crypto::LuksSlot& s : h->slots) {
    if (!s.active) continue;
    const uint64_t end = uint64_t(s.key_offset) * crypto::kLuksSector + uint64_t(h->key_bytes) * s.stripes;
    if (end > size) __builtin_trap();
    cheap &= s.iterations <= 2000;
  }
  if (!cheap) return 0;
  auto file = io::NewMemFile();
  if (!file->PWrite(0, data, size).ok()) return 0;
  const SecretBytes password("fuzz", 4);
  auto key = crypto::UnlockLuks(h.value(), *file, 0, password, "fuzz");
  if (key.ok() && key->size() != h->key_bytes) __builtin_trap();
  if (!key.ok() && key.status().code() != Code::kNoKey && key.status().code() != Code::kUnsupported &&
      key.status().code() != Code::kCorrupt && key.status().code() != Code::kInvalidArgument)
    __builtin_trap();
  return 0;
}
