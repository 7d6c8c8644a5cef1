// LUKS1 headers: parsing, unlocking a key slot, and making new ones. Used
// by the raw luks format and by qcow2's embedded LUKS header alike.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "crypto/sector_cipher.h"
#include "imagecore/file.h"
#include "imagecore/secret.h"
#include "imagecore/status.h"

namespace imgfs::crypto {

constexpr size_t kLuksHeaderSize = 592;
constexpr size_t kLuksSlots = 8;
constexpr uint64_t kLuksSector = 512;

struct LuksSlot {
  bool active = false;
  uint32_t iterations = 0;
  std::array<uint8_t, 32> salt{};
  uint32_t key_offset = 0;  // in 512-byte sectors from the header
  uint32_t stripes = 0;
};

struct LuksHeader {
  std::string cipher_name, cipher_mode, hash;  // as stored: "aes", "xts-plain64", "sha256"
  uint32_t payload_offset = 0;                 // in 512-byte sectors from the header
  uint32_t key_bytes = 0;
  std::array<uint8_t, 20> mk_digest{};
  std::array<uint8_t, 32> mk_digest_salt{};
  uint32_t mk_digest_iter = 0;
  std::string uuid;
  std::array<LuksSlot, kLuksSlots> slots{};
  CipherSpec spec;  // what cipher_name, cipher_mode and key_bytes mean

  std::vector<uint8_t> Encode() const;
};

// Parses and bounds a LUKS1 header (kLuksHeaderSize bytes at `p`); `area`
// is how many bytes from the header on belong to it (key material lies
// inside). Errors say what is wrong, prefixed by `what`.
Result<LuksHeader> ParseLuksHeader(const uint8_t* p, size_t n, uint64_t area, const std::string& what);

// The master key, from the first active slot `password` opens. A wrong
// password is refused (the master key digest decides), never guessed at.
// `base`: the header's offset in `file`.
Result<SecretBytes> UnlockLuks(const LuksHeader& h, const io::File& file, uint64_t base, const SecretBytes& password,
                               const std::string& what);

// What a new LUKS header takes (qemu's create options).
struct LuksParams {
  CipherSpec spec{"aes-256", "xts", "plain64", ""};
  std::string hash = "sha256";
  uint32_t iter_time_ms = 2000;
};
// A new header with slot 0 holding `password`, its key material, and the
// master key. `align` rounds the key material and payload (bytes).
struct NewLuks {
  LuksHeader header;
  std::vector<uint8_t> key_material;  // from offset kLuksSector... as laid out: header.slots[0].key_offset
  SecretBytes master_key;
};
Result<NewLuks> MakeLuks(const LuksParams& p, const SecretBytes& password, uint64_t align);

// Splits `key` into `stripes` diffused copies (AF), and merges them back.
Result<std::vector<uint8_t>> AfSplit(const SecretBytes& key, uint32_t stripes, const std::string& hash);
Result<SecretBytes> AfMerge(const uint8_t* material, size_t key_bytes, uint32_t stripes, const std::string& hash);

}  // namespace imgfs::crypto
