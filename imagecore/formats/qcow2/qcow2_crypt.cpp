// Encrypted qcow2: LUKS (crypt_method 2, a LUKS header in clusters the
// header extension names; IVs from the host offset) and the legacy AES-CBC
// (crypt_method 1: the passphrase's first 16 bytes are the key; IVs from
// the guest offset). Data clusters are encrypted; metadata is not.
#include <cstring>
#include <vector>

#include "crypto/encrypted_io.h"
#include "crypto/luks_common.h"
#include "formats/qcow2/qcow2_image.h"
#include "crypto/keyed_cipher.h"
#include "imagecore/keyring.h"

namespace imgfs::qcow2 {

using crypto::kCryptSector;

namespace {
constexpr uint64_t kMaxLuksArea = 64ull << 20;  // qemu's is 2 MiB for aes-256-xts; refuse absurd ones
}  // namespace

Status Qcow2Image::SetUpCrypto() {
  const Header& h = header_;
  if (h.crypt_method == 0) {
    if (h.has_crypto_ext) return Corrupt("an encryption header extension in an image that is not encrypted");
    return Status::OK();
  }
  if (h.crypt_method == 1) {
    if (h.has_crypto_ext) return Corrupt("an encryption header extension with AES encryption");
    IMGFS_ASSIGN_OR_RETURN(io::FileStat id, file_->Stat());
    keyed_ = std::make_shared<crypto::KeyedCipher>(id, file_->path(), [](const io::File&, const SecretBytes& pw) {
      // As qemu: the passphrase up to its first NUL, cut or padded with zeros to 16 bytes.
      SecretBytes key(16);
      const size_t n = strnlen(reinterpret_cast<const char*>(pw.data()), pw.size());
      std::memcpy(key.data(), pw.data(), std::min<size_t>(16, n));
      return crypto::SectorCipher::Make({"aes-128", "cbc", "plain64", ""}, key);
    });
    return Status::OK();
  }
  if (h.crypt_method != 2) return Unsupported("encryption method " + std::to_string(h.crypt_method));
  if (!h.has_crypto_ext) return Corrupt("LUKS encryption without its header extension");
  if (h.crypto_offset % cluster_size_ || h.crypto_offset == 0)
    return Corrupt("the LUKS header offset is not a cluster boundary");
  if (h.crypto_length < crypto::kLuksHeaderSize || h.crypto_length > kMaxLuksArea ||
      h.crypto_offset > file_->Size() || h.crypto_length > file_->Size() - h.crypto_offset)
    return Corrupt("the LUKS header area lies outside the file or has an impossible size");
  if (extended_l2_) return Unsupported("encryption with extended L2 entries is not supported yet");
  uint8_t raw[crypto::kLuksHeaderSize];
  IMGFS_RETURN_IF_ERROR(file_->PRead(h.crypto_offset, raw, sizeof raw));
  IMGFS_ASSIGN_OR_RETURN(crypto::LuksHeader luks,
                         crypto::ParseLuksHeader(raw, sizeof raw, h.crypto_length, file_->path()));
  IMGFS_ASSIGN_OR_RETURN(keyed_, crypto::LuksCipher(*file_, h.crypto_offset, luks));
  luks_ = std::make_shared<const crypto::LuksHeader>(std::move(luks));
  return Status::OK();
}

Result<std::shared_ptr<const crypto::SectorCipher>> Qcow2Image::Cipher() const {
  std::string why;
  auto c = keyed_ ? keyed_->Get(*file_, &why) : nullptr;
  if (!c) return Status(Code::kNoKey, why);
  return c;
}

std::string Qcow2Image::KeyMissing() const {
  if (!encrypted()) return "";
  auto c = Cipher();
  return c.ok() ? "" : c.status().message();
}

Status Qcow2Image::ReadData(uint64_t host, uint64_t guest, void* buf, size_t len) const {
  if (!encrypted()) return data().PRead(host, buf, len);
  IMGFS_ASSIGN_OR_RETURN(auto cipher, Cipher());
  return crypto::ReadDecrypted(data(), host, luks_ ? host : guest, buf, len, *cipher);
}

Status Qcow2Image::WriteData(uint64_t host, uint64_t guest, const void* buf, size_t len) {
  if (!encrypted()) return data().PWrite(host, buf, len);
  IMGFS_ASSIGN_OR_RETURN(auto cipher, Cipher());
  const uint64_t iv = luks_ ? host : guest;
  if (iv % kCryptSector == 0 && len % kCryptSector == 0) {
    SharedLock l(crypt_rmw_mu_);
    return crypto::WriteEncrypted(data(), host, iv, buf, len, *cipher);
  }
  // Part of a sector: read it, change it, write it back whole.
  ExclusiveLock l(crypt_rmw_mu_);
  const uint64_t head = iv % kCryptSector;
  const uint64_t span = (head + len + kCryptSector - 1) / kCryptSector * kCryptSector;
  std::vector<uint8_t> sectors(span);
  IMGFS_RETURN_IF_ERROR(crypto::ReadDecrypted(data(), host - head, iv - head, sectors.data(), span, *cipher));
  std::memcpy(sectors.data() + head, buf, len);
  return crypto::WriteEncrypted(data(), host - head, iv - head, sectors.data(), span, *cipher);
}

Status Qcow2Image::WriteDataPieces(uint64_t host, uint64_t guest, const io::File::Piece* pieces, size_t count) {
  if (!encrypted()) return data().PWriteV(host, pieces, count);
  std::vector<uint8_t> all;
  for (size_t i = 0; i < count; ++i) {
    const auto* p = static_cast<const uint8_t*>(pieces[i].data);
    if (pieces[i].len) all.insert(all.end(), p, p + pieces[i].len);
  }
  return WriteData(host, guest, all.data(), all.size());
}

ImageInfo::Field Qcow2Image::CryptoInfo() const {
  using F = ImageInfo::Field;
  std::vector<F> fields;
  if (luks_) {
    fields = crypto::LuksInfoFields(*luks_);
    // qemu-img lists "format" among the LUKS fields, before cipher-mode.
    size_t at = 0;
    while (at < fields.size() && fields[at].key != "cipher-mode") ++at;
    fields.insert(fields.begin() + at, F::Str("format", "format", "luks"));
  } else {
    fields.push_back(F::Str("format", "format", header_.crypt_method == 1 ? "aes" : "unknown"));
  }
  return F::Object("encrypt", "encrypt", std::move(fields));
}

}  // namespace imgfs::qcow2
