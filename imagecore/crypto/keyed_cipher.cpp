#include "crypto/keyed_cipher.h"

#include "imagecore/keyring.h"

namespace imgfs::crypto {

KeyedCipher::KeyedCipher(const io::FileStat& id, std::string path, Maker make)
    : id_(id), path_(std::move(path)), make_(std::move(make)) {}

void KeyedCipher::RefreshLocked(const io::File& file) const {
  const uint64_t gen = KeyringGeneration();
  if (gen == generation_) return;
  generation_ = gen;
  std::shared_ptr<const SecretBytes> key = ImageKey(id_);
  if (key == key_ && (cipher_ || !error_.ok())) return;  // not this image's key that changed
  key_ = key;
  cipher_.reset();
  if (!key) {
    error_ = Status(Code::kNoKey, path_ + ": the image is encrypted and no key was given for it");
    return;
  }
  auto c = make_(file, *key);
  if (c.ok()) {
    cipher_ = std::move(c).value();
    error_ = Status::OK();
  } else {
    error_ = c.status();
  }
}

std::shared_ptr<const SectorCipher> KeyedCipher::Get(const io::File& file, std::string* why) const {
  MutexLock l(mu_);
  RefreshLocked(file);
  if (!cipher_ && why) *why = error_.message();
  return cipher_;
}

Status KeyedCipher::Refresh(const io::File& file) const {
  MutexLock l(mu_);
  RefreshLocked(file);
  return cipher_ ? Status::OK() : error_;
}

}  // namespace imgfs::crypto
