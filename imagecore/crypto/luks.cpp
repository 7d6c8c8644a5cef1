// LUKS1: the header, the anti-forensic splitter and key slots.
#include "crypto/luks.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "base/endian.h"

namespace imgfs::crypto {
namespace {

const uint8_t kMagic[6] = {'L', 'U', 'K', 'S', 0xba, 0xbe};
constexpr uint32_t kSlotActive = 0x00AC71F3, kSlotInactive = 0x0000DEAD;
// Bounds on what a header may ask of us: a hostile image must not make an
// unlock run for hours or read gigabytes.
constexpr uint32_t kMaxIterations = 1u << 24;
constexpr uint32_t kMaxStripes = 1u << 16;
constexpr uint32_t kMaxKeyBytes = 64;
constexpr uint32_t kStripes = 4000;

std::string Field(const uint8_t* p, size_t n) {
  size_t len = 0;
  while (len < n && p[len]) ++len;
  return std::string(reinterpret_cast<const char*>(p), len);
}

void PutField(uint8_t* p, size_t n, const std::string& s) { std::memcpy(p, s.data(), std::min(n - 1, s.size())); }

// "aes" + "xts-plain64" + 64 key bytes: aes-256, xts, plain64.
Result<CipherSpec> SpecOf(const std::string& name, const std::string& mode, uint32_t key_bytes, const std::string& what) {
  CipherSpec s;
  const auto dash = mode.find('-');
  s.mode = mode.substr(0, dash);
  if (dash != std::string::npos) {
    s.ivgen = mode.substr(dash + 1);
    const auto colon = s.ivgen.find(':');
    if (colon != std::string::npos) {
      s.ivgen_hash = s.ivgen.substr(colon + 1);
      s.ivgen = s.ivgen.substr(0, colon);
    }
  }
  const uint32_t one_key = s.mode == "xts" ? key_bytes / 2 : key_bytes;
  if (name == "aes") s.alg = "aes-" + std::to_string(one_key * 8);
  else if (name == "sm4") s.alg = "sm4";
  else if (name == "cast5") s.alg = "cast5-" + std::to_string(one_key * 8);
  else if (name == "des3_ede") s.alg = "3des";
  else s.alg = name + "-" + std::to_string(one_key * 8);
  IMGFS_ASSIGN_OR_RETURN(size_t need, KeyBytes(s));
  if (need != key_bytes)
    return Corrupt(what + ": the LUKS header's key size " + std::to_string(key_bytes) + " does not fit " + s.Describe());
  return s;
}

// H(be32(i) || chunk i) over each digest-sized chunk, in place.
Status Diffuse(uint8_t* block, size_t len, const EVP_MD* md) {
  const size_t dlen = size_t(EVP_MD_get_size(md));
  uint8_t digest[EVP_MAX_MD_SIZE];
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (!ctx) return Corrupt("the AF hash failed");
  for (size_t i = 0, off = 0; off < len; ++i, off += dlen) {
    uint8_t iv[4];
    StoreBE32(iv, uint32_t(i));
    const size_t n = std::min(dlen, len - off);
    unsigned int out = 0;
    if (!EVP_DigestInit_ex(ctx, md, nullptr) || !EVP_DigestUpdate(ctx, iv, 4) ||
        !EVP_DigestUpdate(ctx, block + off, n) || !EVP_DigestFinal_ex(ctx, digest, &out)) {
      EVP_MD_CTX_free(ctx);
      return Corrupt("the AF hash failed");
    }
    std::memcpy(block + off, digest, n);
  }
  OPENSSL_cleanse(digest, sizeof digest);
  EVP_MD_CTX_free(ctx);
  return Status::OK();
}

}  // namespace

Result<LuksHeader> ParseLuksHeader(const uint8_t* p, size_t n, uint64_t area, const std::string& what) {
  if (n < kLuksHeaderSize || std::memcmp(p, kMagic, 6) != 0) return Corrupt(what + ": no LUKS header");
  if (LoadBE16(p + 6) != 1) return Unsupported(what + ": LUKS version " + std::to_string(LoadBE16(p + 6)) + " is not supported");
  LuksHeader h;
  h.cipher_name = Field(p + 8, 32);
  h.cipher_mode = Field(p + 40, 32);
  h.hash = Field(p + 72, 32);
  h.payload_offset = LoadBE32(p + 104);
  h.key_bytes = LoadBE32(p + 108);
  std::memcpy(h.mk_digest.data(), p + 112, 20);
  std::memcpy(h.mk_digest_salt.data(), p + 132, 32);
  h.mk_digest_iter = LoadBE32(p + 164);
  h.uuid = Field(p + 168, 40);
  if (h.key_bytes == 0 || h.key_bytes > kMaxKeyBytes)
    return Corrupt(what + ": LUKS key size " + std::to_string(h.key_bytes) + " is out of range");
  if (h.mk_digest_iter == 0 || h.mk_digest_iter > kMaxIterations)
    return Corrupt(what + ": LUKS master key iterations " + std::to_string(h.mk_digest_iter) + " out of range");
  if (!DigestLength(h.hash)) return Unsupported(what + ": the LUKS hash " + h.hash + " is not available");
  IMGFS_ASSIGN_OR_RETURN(h.spec, SpecOf(h.cipher_name, h.cipher_mode, h.key_bytes, what));
  for (size_t i = 0; i < kLuksSlots; ++i) {
    const uint8_t* s = p + 208 + i * 48;
    LuksSlot& slot = h.slots[i];
    const uint32_t state = LoadBE32(s);
    if (state != kSlotActive && state != kSlotInactive)
      return Corrupt(what + ": LUKS key slot " + std::to_string(i) + " has an unknown state");
    slot.active = state == kSlotActive;
    slot.iterations = LoadBE32(s + 4);
    std::memcpy(slot.salt.data(), s + 8, 32);
    slot.key_offset = LoadBE32(s + 40);
    slot.stripes = LoadBE32(s + 44);
    if (!slot.active) continue;
    const std::string which = what + ": LUKS key slot " + std::to_string(i);
    if (slot.iterations == 0 || slot.iterations > kMaxIterations) return Corrupt(which + ": iterations out of range");
    if (slot.stripes == 0 || slot.stripes > kMaxStripes) return Corrupt(which + ": stripes out of range");
    const uint64_t begin = uint64_t(slot.key_offset) * kLuksSector;
    const uint64_t end = begin + uint64_t(h.key_bytes) * slot.stripes;
    if (begin < kLuksHeaderSize || end > area) return Corrupt(which + ": key material lies outside the header area");
  }
  return h;
}

std::vector<uint8_t> LuksHeader::Encode() const {
  std::vector<uint8_t> out(kLuksHeaderSize, 0);
  uint8_t* p = out.data();
  std::memcpy(p, kMagic, 6);
  StoreBE16(p + 6, 1);
  PutField(p + 8, 32, cipher_name);
  PutField(p + 40, 32, cipher_mode);
  PutField(p + 72, 32, hash);
  StoreBE32(p + 104, payload_offset);
  StoreBE32(p + 108, key_bytes);
  std::memcpy(p + 112, mk_digest.data(), 20);
  std::memcpy(p + 132, mk_digest_salt.data(), 32);
  StoreBE32(p + 164, mk_digest_iter);
  PutField(p + 168, 40, uuid);
  for (size_t i = 0; i < kLuksSlots; ++i) {
    uint8_t* s = p + 208 + i * 48;
    const LuksSlot& slot = slots[i];
    StoreBE32(s, slot.active ? kSlotActive : kSlotInactive);
    StoreBE32(s + 4, slot.iterations);
    std::memcpy(s + 8, slot.salt.data(), 32);
    StoreBE32(s + 40, slot.key_offset);
    StoreBE32(s + 44, slot.stripes);
  }
  return out;
}

Result<SecretBytes> AfMerge(const uint8_t* material, size_t key_bytes, uint32_t stripes, const std::string& hash) {
  const EVP_MD* md = EVP_get_digestbyname(hash.c_str());
  if (!md) return Unsupported("the hash " + hash + " is not available");
  SecretBytes d(key_bytes);
  for (uint32_t i = 0; i < stripes; ++i) {
    for (size_t j = 0; j < key_bytes; ++j) d.data()[j] ^= material[size_t(i) * key_bytes + j];
    if (i + 1 < stripes) IMGFS_RETURN_IF_ERROR(Diffuse(d.data(), key_bytes, md));
  }
  return d;
}

Result<std::vector<uint8_t>> AfSplit(const SecretBytes& key, uint32_t stripes, const std::string& hash) {
  const EVP_MD* md = EVP_get_digestbyname(hash.c_str());
  if (!md) return Unsupported("the hash " + hash + " is not available");
  const size_t kb = key.size();
  std::vector<uint8_t> out(kb * stripes);
  SecretBytes d(kb);
  for (uint32_t i = 0; i + 1 < stripes; ++i) {
    uint8_t* s = out.data() + size_t(i) * kb;
    IMGFS_RETURN_IF_ERROR(RandomBytes(s, kb));
    for (size_t j = 0; j < kb; ++j) d.data()[j] ^= s[j];
    IMGFS_RETURN_IF_ERROR(Diffuse(d.data(), kb, md));
  }
  uint8_t* last = out.data() + size_t(stripes - 1) * kb;
  for (size_t j = 0; j < kb; ++j) last[j] = d.data()[j] ^ key.data()[j];
  return out;
}

Result<SecretBytes> UnlockLuks(const LuksHeader& h, const io::File& file, uint64_t base, const SecretBytes& password,
                               const std::string& what) {
  for (const LuksSlot& slot : h.slots) {
    if (!slot.active) continue;
    IMGFS_ASSIGN_OR_RETURN(SecretBytes slot_key,
                           Pbkdf2(h.hash, password, slot.salt.data(), slot.salt.size(), slot.iterations, h.key_bytes));
    const size_t len = size_t(h.key_bytes) * slot.stripes;
    SecretBytes material(len);
    IMGFS_RETURN_IF_ERROR(file.PRead(base + uint64_t(slot.key_offset) * kLuksSector, material.data(), len));
    IMGFS_ASSIGN_OR_RETURN(auto cipher, SectorCipher::Make(h.spec, slot_key));
    IMGFS_RETURN_IF_ERROR(cipher->Decrypt(0, material.data(), len));
    IMGFS_ASSIGN_OR_RETURN(SecretBytes key, AfMerge(material.data(), h.key_bytes, slot.stripes, h.hash));
    IMGFS_ASSIGN_OR_RETURN(SecretBytes digest, Pbkdf2(h.hash, key, h.mk_digest_salt.data(), h.mk_digest_salt.size(),
                                                      h.mk_digest_iter, h.mk_digest.size()));
    if (CRYPTO_memcmp(digest.data(), h.mk_digest.data(), h.mk_digest.size()) == 0) return key;
  }
  return Status(Code::kNoKey, what + ": Invalid password, cannot unlock any keyslot");
}

Result<NewLuks> MakeLuks(const LuksParams& p, const SecretBytes& password, uint64_t align) {
  NewLuks n;
  LuksHeader& h = n.header;
  IMGFS_ASSIGN_OR_RETURN(size_t key_bytes, KeyBytes(p.spec));
  if (!DigestLength(p.hash)) return Unsupported("the hash " + p.hash + " is not available");
  h.key_bytes = uint32_t(key_bytes);
  h.spec = p.spec;
  const std::string alg = p.spec.alg;
  h.cipher_name = alg.rfind("aes", 0) == 0 ? "aes" : alg == "3des" ? "des3_ede" : alg.substr(0, alg.find('-'));
  h.cipher_mode = p.spec.mode;
  if (!p.spec.ivgen.empty()) h.cipher_mode += "-" + p.spec.ivgen + (p.spec.ivgen == "essiv" ? ":" + p.spec.ivgen_hash : "");
  h.hash = p.hash;
  n.master_key = SecretBytes(key_bytes);
  IMGFS_RETURN_IF_ERROR(RandomBytes(n.master_key.data(), key_bytes));
  IMGFS_RETURN_IF_ERROR(RandomBytes(h.mk_digest_salt.data(), 32));
  // The master key digest takes 1/8 of the slot's time, as qemu and
  // cryptsetup give it; both at least 1000 iterations.
  const uint32_t per_second = Pbkdf2Speed(p.hash, key_bytes, 1000);
  const uint64_t slot_iters = std::max<uint64_t>(1000, uint64_t(per_second) * p.iter_time_ms / 1000);
  h.mk_digest_iter = uint32_t(std::clamp<uint64_t>(slot_iters / 8, 1000, kMaxIterations));
  IMGFS_ASSIGN_OR_RETURN(SecretBytes digest, Pbkdf2(p.hash, n.master_key, h.mk_digest_salt.data(), 32,
                                                    h.mk_digest_iter, 20));
  std::memcpy(h.mk_digest.data(), digest.data(), 20);
  uint8_t uuid[16];
  IMGFS_RETURN_IF_ERROR(RandomBytes(uuid, 16));
  uuid[6] = uint8_t((uuid[6] & 0x0f) | 0x40);
  uuid[8] = uint8_t((uuid[8] & 0x3f) | 0x80);
  char text[37];
  std::snprintf(text, sizeof text, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", uuid[0],
                uuid[1], uuid[2], uuid[3], uuid[4], uuid[5], uuid[6], uuid[7], uuid[8], uuid[9], uuid[10], uuid[11],
                uuid[12], uuid[13], uuid[14], uuid[15]);
  h.uuid = text;
  // Slots at `align` steps after the header's first `align` bytes; the
  // payload after all eight.
  const uint64_t align_sectors = std::max<uint64_t>(1, align / kLuksSector);
  const uint64_t split_sectors = (uint64_t(key_bytes) * kStripes + kLuksSector - 1) / kLuksSector;
  const uint64_t step = (split_sectors + align_sectors - 1) / align_sectors * align_sectors;
  for (size_t i = 0; i < kLuksSlots; ++i) {
    h.slots[i].key_offset = uint32_t(align_sectors + i * step);
    h.slots[i].stripes = kStripes;
  }
  h.payload_offset = uint32_t(align_sectors + kLuksSlots * step);
  LuksSlot& s0 = h.slots[0];
  s0.active = true;
  s0.iterations = uint32_t(std::min<uint64_t>(slot_iters, kMaxIterations));
  IMGFS_RETURN_IF_ERROR(RandomBytes(s0.salt.data(), 32));
  IMGFS_ASSIGN_OR_RETURN(SecretBytes slot_key, Pbkdf2(p.hash, password, s0.salt.data(), 32, s0.iterations, key_bytes));
  IMGFS_ASSIGN_OR_RETURN(n.key_material, AfSplit(n.master_key, kStripes, p.hash));
  IMGFS_ASSIGN_OR_RETURN(auto cipher, SectorCipher::Make(p.spec, slot_key));
  IMGFS_RETURN_IF_ERROR(cipher->Encrypt(0, n.key_material.data(), n.key_material.size()));
  return n;
}

}  // namespace imgfs::crypto
