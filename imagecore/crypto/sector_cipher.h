// Sector ciphers as LUKS and qemu use them: a block cipher in a mode, with
// each sector's IV made from its number (plain, plain64, essiv).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "imagecore/secret.h"
#include "imagecore/status.h"

typedef struct evp_cipher_st EVP_CIPHER;

namespace imgfs::crypto {

// qemu's names: alg "aes-256", "sm4", "3des", "cast5-128"...; mode "xts",
// "cbc", "ctr", "ecb"; ivgen "plain", "plain64", "essiv" ("" for ecb);
// ivgen_hash the hash that keys essiv ("sha256").
struct CipherSpec {
  std::string alg, mode, ivgen, ivgen_hash;
  std::string Describe() const;  // "aes-256-xts-plain64"
};

// The key length a spec takes (xts: two keys), or why it cannot be served.
Result<size_t> KeyBytes(const CipherSpec& spec);

class SectorCipher {
 public:
  // `sector_size` bytes per IV step (512 for LUKS and qcow2).
  static Result<std::unique_ptr<SectorCipher>> Make(const CipherSpec& spec, const SecretBytes& key,
                                                    size_t sector_size = 512);
  ~SectorCipher();
  // In place. `len` is a multiple of the cipher's block size; a last
  // sector may be shorter (LUKS key material). `sector` numbers the first.
  Status Decrypt(uint64_t sector, uint8_t* data, size_t len) const { return Run(sector, data, len, 0); }
  Status Encrypt(uint64_t sector, uint8_t* data, size_t len) const { return Run(sector, data, len, 1); }
  const CipherSpec& spec() const { return spec_; }

 private:
  SectorCipher() = default;
  Status Run(uint64_t sector, uint8_t* data, size_t len, int enc) const;
  void MakeIv(uint64_t sector, uint8_t* iv) const;
  CipherSpec spec_;
  EVP_CIPHER* cipher_ = nullptr;
  EVP_CIPHER* essiv_cipher_ = nullptr;
  SecretBytes key_, essiv_key_;
  size_t sector_size_ = 512, iv_len_ = 0, block_ = 16;
};

// The hash's digest length, or 0 for a hash OpenSSL does not know.
size_t DigestLength(const std::string& hash);
Result<SecretBytes> Pbkdf2(const std::string& hash, const SecretBytes& password, const uint8_t* salt, size_t salt_len,
                           uint32_t iterations, size_t out_len);
// PBKDF2 iterations this machine runs in `ms` milliseconds (at least 1000).
uint32_t Pbkdf2Speed(const std::string& hash, size_t out_len, uint32_t ms);
// Random bytes from OpenSSL's generator.
Status RandomBytes(uint8_t* out, size_t n);
// qemu's wrapped secrets: AES-256-CBC, no padding removed.
Result<SecretBytes> Aes256CbcDecrypt(const SecretBytes& key, const SecretBytes& iv, const SecretBytes& in);

}  // namespace imgfs::crypto
