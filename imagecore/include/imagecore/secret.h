// Key material and qemu's secret objects.
//
// Secrets live in pages of their own: locked against swapping (where the
// memory lock limit allows), left out of core dumps, and zeroed before
// they are unmapped. They never appear in a Status message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "imagecore/status.h"

namespace imgfs {

class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(size_t n);  // n zero bytes
  SecretBytes(const void* data, size_t n);
  ~SecretBytes();
  SecretBytes(SecretBytes&& o) noexcept;
  SecretBytes& operator=(SecretBytes&& o) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;

  uint8_t* data() { return p_; }
  const uint8_t* data() const { return p_; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  // The first n bytes (n <= size()).
  SecretBytes Prefix(size_t n) const { return SecretBytes(p_, n); }
  bool Equals(const SecretBytes& o) const;

 private:
  void Release();
  uint8_t* p_ = nullptr;
  size_t n_ = 0;
  size_t mapped_ = 0;
};

// Decodes base64 (qemu's alphabet, padding required); the result is a secret.
Result<SecretBytes> DecodeBase64Secret(const std::string& text, const std::string& what);
Result<SecretBytes> DecodeBase64Secret(const SecretBytes& text, const std::string& what);

// A key file (imgfs mount --key, -o keydir, ctl unlock): its bytes, less
// one trailing newline, at most 64 KiB.
Result<SecretBytes> ReadKeyFile(const std::string& path);

// Memory locks do not survive fork(): a daemon locks the secrets it
// inherited again.
void RelockSecretMemory();

// qemu's `secret` objects, by id: --object secret,id=ID,data=TEXT or
// file=PATH, format=raw|base64, and keyid=MASTER,iv=BASE64 for a secret
// encrypted with AES-256-CBC under another secret of 32 bytes.
class SecretStore {
 public:
  // Takes one --object value. Other object types are refused by name.
  Status AddObject(const std::string& spec);
  // The secret with this id; NotFound names it.
  Result<const SecretBytes*> Find(const std::string& id) const;

 private:
  std::map<std::string, std::unique_ptr<SecretBytes>> secrets_;
};

}  // namespace imgfs
