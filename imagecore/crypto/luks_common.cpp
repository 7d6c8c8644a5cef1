// Unlocking with the keyring's key, info fields and create options, for
// the luks format and qcow2's LUKS encryption alike.
#include "crypto/luks_common.h"

#include <cstdlib>

#include "imagecore/keyring.h"

namespace imgfs::crypto {

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

Result<LuksParams> ParseLuksOptions(std::map<std::string, std::string>& options, const std::string& prefix,
                                            const std::string& what) {
  LuksParams p;
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
  if (!DigestLength(p.hash)) return InvalidArgument(what + ": the hash " + p.hash + " is not available");
  IMGFS_RETURN_IF_ERROR(KeyBytes(p.spec).status().Prefixed(what));
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

Result<std::shared_ptr<KeyedCipher>> LuksCipher(const io::File& file, uint64_t base, const LuksHeader& h) {
  IMGFS_ASSIGN_OR_RETURN(io::FileStat id, file.Stat());
  auto keyed = std::make_shared<KeyedCipher>(id, file.path(), [base, h](const io::File& f, const SecretBytes& key)
                                                 -> Result<std::unique_ptr<SectorCipher>> {
    IMGFS_ASSIGN_OR_RETURN(SecretBytes master, UnlockLuks(h, f, base, key, f.path()));
    return SectorCipher::Make(h.spec, master);
  });
  if (Status st = keyed->Refresh(file); !st.ok() && ImageKey(id)) return st;  // a key, and a wrong one
  return keyed;
}

std::vector<ImageInfo::Field> LuksInfoFields(const LuksHeader& h) {
  using F = ImageInfo::Field;
  std::vector<F> f;
  f.push_back(F::Str("ivgen-alg", "ivgen alg", h.spec.ivgen));
  f.push_back(F::Str("hash-alg", "hash alg", h.hash));
  f.push_back(F::Str("cipher-alg", "cipher alg", h.spec.alg));
  f.push_back(F::Str("uuid", "uuid", h.uuid));
  if (h.spec.ivgen == "essiv") f.push_back(F::Str("ivgen-hash-alg", "ivgen hash alg", h.spec.ivgen_hash));
  f.push_back(F::Str("cipher-mode", "cipher mode", h.spec.mode));
  F slots = F::List("slots", "slots");
  for (const LuksSlot& s : h.slots) {
    std::vector<F> o;
    o.push_back(F::Bool("active", "active", s.active));
    if (s.active) o.push_back(F::Uint("iters", "iters", s.iterations));
    o.push_back(F::Uint("key-offset", "key offset", uint64_t(s.key_offset) * kLuksSector));
    if (s.active) o.push_back(F::Uint("stripes", "stripes", s.stripes));
    slots.list.push_back(std::move(o));
  }
  f.push_back(std::move(slots));
  f.push_back(F::Uint("payload-offset", "payload offset", uint64_t(h.payload_offset) * kLuksSector));
  f.push_back(F::Uint("master-key-iters", "master key iters", h.mk_digest_iter));
  return f;
}


}  // namespace imgfs::crypto
