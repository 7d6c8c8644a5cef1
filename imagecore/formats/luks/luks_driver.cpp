// luks: a LUKS1 volume as qemu's "luks" driver serves it. The disk is the
// payload after the header, decrypted sector by sector with the IV of its
// own offset. Without its key the image opens locked: its header answers
// `info`, its bytes refuse to be read.
// Thread model: reads and sector-aligned writes run in parallel; a write
// that covers part of a sector reads, changes and rewrites it while no
// other write runs (rmw_mu_).
#include "formats/luks/luks_driver.h"

#include <cstring>
#include <vector>

#include "crypto/encrypted_io.h"
#include "crypto/luks.h"
#include "crypto/luks_common.h"
#include "formats/luks/luks_create.h"
#include "imagecore/rwlock.h"

namespace imgfs::luks {
namespace {

using crypto::kCryptSector;

class LuksImage final : public Image {
 public:
  LuksImage(std::unique_ptr<io::File> file, crypto::LuksHeader h, std::shared_ptr<crypto::KeyedCipher> keyed)
      : file_(std::move(file)), header_(std::move(h)), keyed_(std::move(keyed)) {
    payload_ = uint64_t(header_.payload_offset) * kCryptSector;
    if (!file_->writable()) read_only_reason_ = "opened read-only";
  }

  const FormatDriver& driver() const override { return kDriver; }
  uint64_t VirtualSize() const override { return file_->Size() > payload_ ? file_->Size() - payload_ : 0; }

  Status BlockStatus(uint64_t off, uint64_t len, Extent* out) override {
    IMGFS_RETURN_IF_ERROR(Cipher().status());
    const uint64_t size = VirtualSize();
    if (off >= size) return InvalidArgument("block status past the end of " + file_->path());
    out->kind = ExtentKind::kOpaque;  // every byte is data, readable only through the cipher
    out->length = std::min(len, size - off);
    return Status::OK();
  }

  Status ReadOpaque(uint64_t off, void* buf, size_t len) override {
    IMGFS_ASSIGN_OR_RETURN(auto cipher, Cipher());
    return crypto::ReadDecrypted(*file_, payload_ + off, off, buf, len, *cipher);
  }

  Status Write(uint64_t off, const void* buf, size_t len, const LayerReader*) override {
    if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
    IMGFS_ASSIGN_OR_RETURN(auto cipher, Cipher());
    if (off + len > VirtualSize()) return NoSpace(file_->path() + ": write past the end of the disk");
    if (off % kCryptSector == 0 && len % kCryptSector == 0) {
      SharedLock l(rmw_mu_);
      return crypto::WriteEncrypted(*file_, payload_ + off, off, buf, len, *cipher);
    }
    ExclusiveLock l(rmw_mu_);
    const uint64_t begin = off / kCryptSector * kCryptSector;
    const uint64_t end = (off + len + kCryptSector - 1) / kCryptSector * kCryptSector;
    std::vector<uint8_t> sectors(end - begin);
    IMGFS_RETURN_IF_ERROR(crypto::ReadDecrypted(*file_, payload_ + begin, begin, sectors.data(), sectors.size(), *cipher));
    std::memcpy(sectors.data() + (off - begin), buf, len);
    return crypto::WriteEncrypted(*file_, payload_ + begin, begin, sectors.data(), sectors.size(), *cipher);
  }

  Status Resize(uint64_t new_size, const LayerReader*) override {
    if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
    IMGFS_RETURN_IF_ERROR(Cipher().status());
    if (new_size % kCryptSector) return InvalidArgument(file_->path() + ": a luks disk grows in whole sectors");
    const uint64_t old = VirtualSize();
    IMGFS_RETURN_IF_ERROR(file_->Truncate(payload_ + new_size));
    return new_size > old ? WriteZeroes(old, new_size - old, false, nullptr) : Status::OK();
  }

  Status Flush() override { return file_->writable() ? file_->Sync() : Status::OK(); }

  ImageInfo Info() const override {
    ImageInfo info;
    info.format = "luks";
    info.virtual_size = VirtualSize();
    info.encrypted = true;
    info.specific = crypto::LuksInfoFields(header_);
    return info;
  }

  std::string KeyMissing() const override {
    std::string why;
    return keyed_->Get(*file_, &why) ? "" : why;
  }
  const io::File& file() const override { return *file_; }
  std::vector<LayerFile> files() const override { return {{file_.get(), FileRole::kImage}}; }

 private:
  // The cipher now (a key given or forgotten since the open counts).
  Result<std::shared_ptr<const crypto::SectorCipher>> Cipher() const {
    std::string why;
    auto c = keyed_->Get(*file_, &why);
    if (!c) return Status(Code::kNoKey, why);
    return c;
  }
  std::unique_ptr<io::File> file_;
  const crypto::LuksHeader header_;
  const std::shared_ptr<crypto::KeyedCipher> keyed_;
  uint64_t payload_ = 0;
  RwLock rmw_mu_;  // shared: whole-sector writes; exclusive: a partial sector's read-modify-write
};

int Probe(const io::File&, const uint8_t* head, size_t len) {
  static const uint8_t kMagic[6] = {'L', 'U', 'K', 'S', 0xba, 0xbe};
  return len >= 8 && std::memcmp(head, kMagic, 6) == 0 && head[6] == 0 && head[7] == 1 ? 100 : 0;
}

Result<std::unique_ptr<Image>> Open(std::unique_ptr<io::File> file, const OpenOptions& opts) {
  uint8_t raw[crypto::kLuksHeaderSize] = {};
  if (file->Size() < sizeof raw) return Corrupt("the file is too short for a LUKS header");
  IMGFS_RETURN_IF_ERROR(file->PRead(0, raw, sizeof raw));
  IMGFS_ASSIGN_OR_RETURN(crypto::LuksHeader h, crypto::ParseLuksHeader(raw, sizeof raw, file->Size(), file->path()));
  if (uint64_t(h.payload_offset) * kCryptSector > file->Size())
    return Corrupt("the LUKS payload offset lies past the end of the file");
  IMGFS_ASSIGN_OR_RETURN(auto keyed, crypto::LuksCipher(*file, 0, h));
  return std::unique_ptr<Image>(new LuksImage(std::move(file), std::move(h), std::move(keyed)));
}

}  // namespace

const FormatDriver kDriver = {
    .name = "luks",
    .probe = Probe,
    .open = Open,
    .create = CreateLuks,
    .measure = MeasureLuks,
    .create_options = crypto::kLuksCreateOptions,
    .caps = {.resize = true, .new_not_zero = true},
};

}  // namespace imgfs::luks
