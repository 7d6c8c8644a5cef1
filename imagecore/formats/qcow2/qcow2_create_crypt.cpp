// The encryption options of a new qcow2 image: encrypt.format=luks (a LUKS
// header in clusters of its own) or aes (the legacy AES-CBC), keyed by
// encrypt.key-secret.
#include "formats/qcow2/qcow2_create_crypt.h"

#include "crypto/luks_common.h"
#include "imagecore/keyring.h"

namespace imgfs::qcow2 {

Result<NewEncryption> TakeEncryptionOptions(CreateOptions& opts, const std::string& what) {
  NewEncryption e;
  auto& o = opts.options;
  std::string format;
  if (auto it = o.find("encryption"); it != o.end()) {  // qemu's old spelling of encrypt.format=aes
    bool on = false;
    if (!ParseOnOff(it->second, &on)) return InvalidArgument(what + ": Parameter 'encryption' expects 'on' or 'off'");
    if (on) format = "aes";
    o.erase(it);
  }
  if (auto it = o.find("encrypt.format"); it != o.end()) {
    format = it->second;
    o.erase(it);
  }
  if (format.empty()) {
    for (const auto& [k, v] : o)
      if (k.rfind("encrypt.", 0) == 0) return InvalidArgument(what + ": '" + k + "' needs encrypt.format");
    return e;
  }
  if (format != "luks" && format != "aes")
    return InvalidArgument(what + ": Parameter 'encrypt.format' does not accept value '" + format + "'");
  IMGFS_ASSIGN_OR_RETURN(const SecretBytes* pw, crypto::CreateSecret(opts, "encrypt.key-secret", what));
  e.password = SecretBytes(pw->data(), pw->size());
  o.erase("encrypt.key-secret");
  if (format == "aes") {
    e.method = 1;
    for (const auto& [k, v] : o)
      if (k.rfind("encrypt.", 0) == 0) return InvalidArgument(what + ": Invalid parameter '" + k + "'");
    return e;
  }
  e.method = 2;
  IMGFS_ASSIGN_OR_RETURN(crypto::LuksParams params, crypto::ParseLuksOptions(o, "encrypt.", what));
  IMGFS_ASSIGN_OR_RETURN(crypto::NewLuks luks, crypto::MakeLuks(params, e.password, 4096));
  e.luks = std::make_unique<crypto::NewLuks>(std::move(luks));
  return e;
}

uint64_t NewEncryption::AreaBytes() const {
  return luks ? uint64_t(luks->header.payload_offset) * crypto::kLuksSector : 0;
}

Status NewEncryption::WriteArea(io::File& file, uint64_t offset) const {
  if (!luks) return Status::OK();
  IMGFS_RETURN_IF_ERROR(file.PWrite(offset + uint64_t(luks->header.slots[0].key_offset) * crypto::kLuksSector,
                                    luks->key_material.data(), luks->key_material.size()));
  const std::vector<uint8_t> header = luks->header.Encode();
  return file.PWrite(offset, header.data(), header.size());
}

Status NewEncryption::RememberKey(const io::File& file) const {
  if (!method) return Status::OK();
  IMGFS_ASSIGN_OR_RETURN(io::FileStat st, file.Stat());
  AddImageKey(st, SecretBytes(password.data(), password.size()));
  return Status::OK();
}

}  // namespace imgfs::qcow2
