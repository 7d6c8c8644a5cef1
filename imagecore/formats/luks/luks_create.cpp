// New LUKS headers: create -f luks, and qcow2's encrypt.format=luks.
#include <cstring>

#include "crypto/luks_common.h"
#include "formats/luks/luks_create.h"
#include "imagecore/keyring.h"

namespace imgfs::luks {

Status CreateLuks(io::File& file, const CreateOptions& opts) {
  if (!opts.backing_file.empty()) return Unsupported("luks images cannot have a backing file");
  std::map<std::string, std::string> options = opts.options;
  IMGFS_ASSIGN_OR_RETURN(const SecretBytes* password, crypto::CreateSecret(opts, "key-secret", file.path()));
  options.erase("key-secret");
  Prealloc mode = Prealloc::kOff;
  if (options.count("preallocation")) {
    IMGFS_ASSIGN_OR_RETURN(mode, ParsePrealloc(options["preallocation"], file.path()));
    if (mode == Prealloc::kMetadata) return InvalidArgument(file.path() + ": Unsupported preallocation mode: metadata");
    options.erase("preallocation");
  }
  IMGFS_ASSIGN_OR_RETURN(crypto::LuksParams params, crypto::ParseLuksOptions(options, "", file.path()));
  if (!options.empty()) return InvalidArgument(file.path() + ": Invalid parameter '" + options.begin()->first + "'");
  if (opts.size % crypto::kLuksSector)
    return InvalidArgument(file.path() + ": the size must be a multiple of 512 bytes");
  IMGFS_ASSIGN_OR_RETURN(crypto::NewLuks n, crypto::MakeLuks(params, *password, 4096));
  const uint64_t payload = uint64_t(n.header.payload_offset) * crypto::kLuksSector;
  // The header area first, then the header that makes it a LUKS volume.
  IMGFS_RETURN_IF_ERROR(file.Truncate(payload + opts.size));
  IMGFS_RETURN_IF_ERROR(file.PWrite(uint64_t(n.header.slots[0].key_offset) * crypto::kLuksSector,
                                    n.key_material.data(), n.key_material.size()));
  IMGFS_RETURN_IF_ERROR(file.Sync());
  const std::vector<uint8_t> header = n.header.Encode();
  IMGFS_RETURN_IF_ERROR(file.PWrite(0, header.data(), header.size()));
  IMGFS_RETURN_IF_ERROR(PreallocateRange(file, payload, opts.size, mode));
  IMGFS_RETURN_IF_ERROR(file.Sync());
  // Whoever made it knows the key: what this process opens next (convert's
  // target) opens unlocked.
  IMGFS_ASSIGN_OR_RETURN(io::FileStat st, file.Stat());
  AddImageKey(st, SecretBytes(password->data(), password->size()));
  return Status::OK();
}

Result<MeasureResult> MeasureLuks(const CreateOptions& opts, const MeasureInput& in) {
  std::map<std::string, std::string> options = opts.options;
  // As qemu-img: the layout depends on no secret, but one must be named.
  if (!options.erase("key-secret")) return InvalidArgument("Parameter 'key-secret' is required for cipher");
  options.erase("preallocation");
  IMGFS_ASSIGN_OR_RETURN(crypto::LuksParams params, crypto::ParseLuksOptions(options, "", "measure"));
  if (!options.empty()) return InvalidArgument("Invalid parameter '" + options.begin()->first + "'");
  IMGFS_ASSIGN_OR_RETURN(size_t key_bytes, crypto::KeyBytes(params.spec));
  const uint64_t split = (uint64_t(key_bytes) * 4000 + 511) / 512;
  const uint64_t header = (8 + 8 * ((split + 7) / 8 * 8)) * 512;
  MeasureResult r;
  r.required = r.fully_allocated = header + (in.size + 511) / 512 * 512;
  return r;
}

}  // namespace imgfs::luks
