// New LUKS headers: create -f luks, and qcow2's encrypt.format=luks.
#include <cstring>

#include "formats/luks/luks_image.h"
#include "imagecore/keyring.h"

namespace imgfs::luks {

const char* const kLuksCreateOptions =
    "  key-secret=<str>       - ID of secret providing the luks passphrase\n"
    "  cipher-alg=<str>       - aes-128, aes-192, aes-256 (default), cast5-128\n"
    "  cipher-mode=<str>      - xts (default), cbc, ctr or ecb\n"
    "  ivgen-alg=<str>        - plain64 (default), plain or essiv\n"
    "  ivgen-hash-alg=<str>   - the hash essiv keys its cipher with (sha256)\n"
    "  hash-alg=<str>         - PBKDF2 and AF hash: sha256 (default), sha1, sha512...\n"
    "  iter-time=<num>        - milliseconds of PBKDF2 per key slot (default 2000)\n"
    "  preallocation=<str>    - off (default), falloc or full\n";

namespace {

std::string Take(std::map<std::string, std::string>& options, const std::string& key, const std::string& def) {
  auto it = options.find(key);
  if (it == options.end()) return def;
  std::string v = it->second;
  options.erase(it);
  return v;
}

}  // namespace

Result<crypto::LuksParams> ParseLuksOptions(std::map<std::string, std::string>& options, const std::string& prefix,
                                            const std::string& what) {
  crypto::LuksParams p;
  p.spec.alg = Take(options, prefix + "cipher-alg", "aes-256");
  p.spec.mode = Take(options, prefix + "cipher-mode", "xts");
  p.spec.ivgen = Take(options, prefix + "ivgen-alg", "plain64");
  const std::string ivhash = Take(options, prefix + "ivgen-hash-alg", "");
  if (p.spec.ivgen == "essiv") p.spec.ivgen_hash = ivhash.empty() ? "sha256" : ivhash;
  p.hash = Take(options, prefix + "hash-alg", "sha256");
  const std::string iter = Take(options, prefix + "iter-time", "2000");
  char* end = nullptr;
  const unsigned long ms = std::strtoul(iter.c_str(), &end, 10);
  if (iter.empty() || *end || ms == 0 || ms > 3600000)
    return InvalidArgument(what + ": Parameter '" + prefix + "iter-time' expects a number of milliseconds");
  p.iter_time_ms = uint32_t(ms);
  if (p.spec.ivgen != "plain" && p.spec.ivgen != "plain64" && p.spec.ivgen != "essiv")
    return InvalidArgument(what + ": Parameter '" + prefix + "ivgen-alg' does not accept value '" + p.spec.ivgen + "'");
  if (!crypto::DigestLength(p.hash)) return InvalidArgument(what + ": the hash " + p.hash + " is not available");
  IMGFS_RETURN_IF_ERROR(crypto::KeyBytes(p.spec).status().Prefixed(what));
  return p;
}

Result<const SecretBytes*> CreateSecret(const CreateOptions& opts, const std::string& key, const std::string& what) {
  auto it = opts.options.find(key);
  if (it == opts.options.end()) return InvalidArgument(what + ": Parameter '" + key + "' is required for cipher");
  if (!opts.secrets) return NotFound(what + ": No secret with id '" + it->second + "'");
  auto s = opts.secrets->Find(it->second);
  if (!s.ok()) return s.status().Prefixed(what);
  return s;
}

Status CreateLuks(io::File& file, const CreateOptions& opts) {
  if (!opts.backing_file.empty()) return Unsupported("luks images cannot have a backing file");
  std::map<std::string, std::string> options = opts.options;
  IMGFS_ASSIGN_OR_RETURN(const SecretBytes* password, CreateSecret(opts, "key-secret", file.path()));
  options.erase("key-secret");
  Prealloc mode = Prealloc::kOff;
  if (options.count("preallocation")) {
    IMGFS_ASSIGN_OR_RETURN(mode, ParsePrealloc(options["preallocation"], file.path()));
    if (mode == Prealloc::kMetadata) return InvalidArgument(file.path() + ": Unsupported preallocation mode: metadata");
    options.erase("preallocation");
  }
  IMGFS_ASSIGN_OR_RETURN(crypto::LuksParams params, ParseLuksOptions(options, "", file.path()));
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
  options.erase("key-secret");
  options.erase("preallocation");
  IMGFS_ASSIGN_OR_RETURN(crypto::LuksParams params, ParseLuksOptions(options, "", "measure"));
  if (!options.empty()) return InvalidArgument("Invalid parameter '" + options.begin()->first + "'");
  IMGFS_ASSIGN_OR_RETURN(size_t key_bytes, crypto::KeyBytes(params.spec));
  const uint64_t split = (uint64_t(key_bytes) * 4000 + 511) / 512;
  const uint64_t header = (8 + 8 * ((split + 7) / 8 * 8)) * 512;
  MeasureResult r;
  r.required = r.fully_allocated = header + (in.size + 511) / 512 * 512;
  return r;
}

}  // namespace imgfs::luks
