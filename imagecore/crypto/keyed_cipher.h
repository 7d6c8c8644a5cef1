// The cipher of an encrypted image, following the keyring: a key given
// while the image is open (ctl unlock) is taken at the next use, a key
// forgotten (lock) drops the cipher. Shared by an image and its snapshot
// views. Thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "crypto/sector_cipher.h"
#include "imagecore/file.h"
#include "imagecore/mutex.h"

namespace imgfs::crypto {

class KeyedCipher {
 public:
  // Builds the cipher from a key, reading what it needs from `file` (the
  // image's own descriptor); a key that opens nothing is an error.
  using Maker = std::function<Result<std::unique_ptr<SectorCipher>>(const io::File& file, const SecretBytes& key)>;
  // `id`: the image file's identity, under which the keyring holds its key.
  KeyedCipher(const io::FileStat& id, std::string path, Maker make);
  // The cipher now, or null with *why saying why (no key, a wrong one).
  std::shared_ptr<const SectorCipher> Get(const io::File& file, std::string* why) const;
  // Takes the keyring's key now; the error of a key that opens nothing.
  Status Refresh(const io::File& file) const;

 private:
  void RefreshLocked(const io::File& file) const REQUIRES(mu_);
  const io::FileStat id_;
  const std::string path_;
  const Maker make_;
  mutable Mutex mu_;
  mutable uint64_t generation_ GUARDED_BY(mu_) = ~uint64_t(0);
  mutable std::shared_ptr<const SecretBytes> key_ GUARDED_BY(mu_);  // the key cipher_ was made from
  mutable std::shared_ptr<const SectorCipher> cipher_ GUARDED_BY(mu_);
  mutable Status error_ GUARDED_BY(mu_);  // why there is no cipher
};

}  // namespace imgfs::crypto
