// Sector ciphers on OpenSSL's EVP interface. XTS where OpenSSL has no
// native mode for the cipher (aes-192, sm4) is built on ECB here.
#include "crypto/sector_cipher.h"

#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <mutex>
#include <vector>

#include "base/endian.h"

namespace imgfs::crypto {
namespace {

struct Family {
  const char* prefix;   // qemu's alg name without the key size ("aes")
  const char* openssl;  // OpenSSL's name before "-MODE" ("AES-256")
  size_t key_len;       // one key
  const char* qemu_alg;
};
// qemu's cipher algorithms that OpenSSL has. Serpent and twofish it has not.
const Family kFamilies[] = {
    {"aes", "AES-128", 16, "aes-128"}, {"aes", "AES-192", 24, "aes-192"}, {"aes", "AES-256", 32, "aes-256"},
    {"sm4", "SM4", 16, "sm4"},         {"3des", "DES-EDE3", 24, "3des"},  {"cast5", "CAST5", 16, "cast5-128"},
};

const Family* FindFamily(const std::string& alg) {
  for (const Family& f : kFamilies)
    if (alg == f.qemu_alg) return &f;
  return nullptr;
}

// CAST5 lives in OpenSSL 3's legacy provider, loaded beside the default
// one the first time a cipher is not found.
EVP_CIPHER* Fetch(const std::string& name) {
  if (EVP_CIPHER* c = EVP_CIPHER_fetch(nullptr, name.c_str(), nullptr)) return c;
  // Kept loaded for the process's life, and held here (volatile: the
  // stores stay), so that a leak checker sees them reachable.
  static OSSL_PROVIDER* volatile providers[2] = {};
  static std::once_flag once;
  std::call_once(once, [] {
    providers[0] = OSSL_PROVIDER_load(nullptr, "default");
    providers[1] = OSSL_PROVIDER_load(nullptr, "legacy");
  });
  (void)providers;
  return EVP_CIPHER_fetch(nullptr, name.c_str(), nullptr);
}

struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using Ctx = std::unique_ptr<EVP_CIPHER_CTX, CtxFree>;

Status Failed(const std::string& what) { return Corrupt("the " + what + " cipher failed"); }

// Multiplies the XTS tweak by x in GF(2^128), little-endian as IEEE 1619 has it.
void XtsNext(uint8_t* t) {
  uint8_t carry = 0;
  for (int i = 0; i < 16; ++i) {
    const uint8_t c = t[i] >> 7;
    t[i] = uint8_t(t[i] << 1 | carry);
    carry = c;
  }
  if (carry) t[0] ^= 0x87;
}

}  // namespace

std::string CipherSpec::Describe() const {
  std::string s = alg + "-" + mode;
  if (!ivgen.empty()) s += "-" + ivgen + (ivgen_hash.empty() || ivgen != "essiv" ? "" : ":" + ivgen_hash);
  return s;
}

Result<size_t> KeyBytes(const CipherSpec& spec) {
  const Family* f = FindFamily(spec.alg);
  if (!f) return Unsupported("the cipher " + spec.alg + " is not available (OpenSSL has no " + spec.alg + ")");
  if (spec.mode == "xts") return f->key_len * 2;
  if (spec.mode == "cbc" || spec.mode == "ctr" || spec.mode == "ecb") return f->key_len;
  return Unsupported("the cipher mode " + spec.mode + " is not supported");
}

size_t DigestLength(const std::string& hash) {
  const EVP_MD* md = EVP_get_digestbyname(hash.c_str());
  return md ? size_t(EVP_MD_get_size(md)) : 0;
}

Result<std::unique_ptr<SectorCipher>> SectorCipher::Make(const CipherSpec& spec, const SecretBytes& key,
                                                         size_t sector_size) {
  IMGFS_ASSIGN_OR_RETURN(size_t key_bytes, KeyBytes(spec));
  if (key.size() != key_bytes)
    return InvalidArgument(spec.Describe() + " takes a key of " + std::to_string(key_bytes) + " bytes, not " +
                           std::to_string(key.size()));
  const Family* f = FindFamily(spec.alg);
  std::unique_ptr<SectorCipher> c(new SectorCipher());
  c->spec_ = spec;
  c->sector_size_ = sector_size;
  const bool native_xts = spec.mode == "xts" && std::string(f->prefix) == "aes" && f->key_len != 24;
  const std::string mode = spec.mode == "xts" && !native_xts ? "ECB" : spec.mode;
  std::string name = std::string(f->openssl) + "-" + mode;
  for (char& ch : name) ch = char(std::toupper(static_cast<unsigned char>(ch)));
  c->cipher_ = Fetch(name);
  if (!c->cipher_) return Unsupported("the cipher " + spec.Describe() + " is not available (OpenSSL has no " + name + ")");
  c->block_ = size_t(EVP_CIPHER_get_block_size(c->cipher_));
  if (!native_xts && spec.mode == "xts" && c->block_ != 16)
    return Unsupported(spec.Describe() + ": xts needs a 16-byte block cipher");
  if (native_xts) c->block_ = 16;
  c->iv_len_ = spec.mode == "xts" ? 16 : size_t(EVP_CIPHER_get_iv_length(c->cipher_));
  if (spec.mode == "ctr") c->block_ = 1;
  c->key_ = SecretBytes(key.data(), key.size());
  if (spec.mode == "ecb") return c;  // qemu still names an IV generator ("ecb-plain64"); ECB uses none
  if (spec.ivgen == "plain" || spec.ivgen == "plain64") return c;
  if (spec.ivgen != "essiv") return Unsupported("the IV generator '" + spec.ivgen + "' is not supported");
  // ESSIV: the IV is the sector number encrypted under the hash of the key,
  // with the same cipher family at the digest's key size.
  const size_t dlen = DigestLength(spec.ivgen_hash);
  if (!dlen) return Unsupported("the hash " + spec.ivgen_hash + " is not available");
  const Family* ef = nullptr;
  for (const Family& g : kFamilies)
    if (std::string(g.prefix) == f->prefix && g.key_len == dlen) ef = &g;
  if (!ef) return Unsupported(spec.Describe() + ": no " + f->prefix + " key is " + std::to_string(dlen) + " bytes long");
  c->essiv_cipher_ = Fetch(std::string(ef->openssl) + "-ECB");
  if (!c->essiv_cipher_) return Unsupported("the essiv cipher " + std::string(ef->openssl) + "-ECB is not available");
  c->essiv_key_ = SecretBytes(dlen);
  unsigned int out = 0;
  if (!EVP_Digest(key.data(), key.size(), c->essiv_key_.data(), &out, EVP_get_digestbyname(spec.ivgen_hash.c_str()),
                  nullptr))
    return Failed("essiv hash");
  return c;
}

SectorCipher::~SectorCipher() {
  EVP_CIPHER_free(cipher_);
  EVP_CIPHER_free(essiv_cipher_);
}

void SectorCipher::MakeIv(uint64_t sector, uint8_t* iv) const {
  std::memset(iv, 0, iv_len_);
  uint8_t le[8];
  StoreLE64(le, spec_.ivgen == "plain" ? sector & 0xffffffffu : sector);
  std::memcpy(iv, le, std::min<size_t>(8, iv_len_));
}

Status SectorCipher::Run(uint64_t sector, uint8_t* data, size_t len, int enc) const {
  if (len % block_) return InvalidArgument("a sector cipher takes whole blocks");
  Ctx ctx(EVP_CIPHER_CTX_new());
  Ctx essiv(essiv_cipher_ ? EVP_CIPHER_CTX_new() : nullptr);
  if (!ctx || (essiv_cipher_ && !essiv)) return Failed(spec_.Describe());
  const bool generic_xts = spec_.mode == "xts" && EVP_CIPHER_get_mode(cipher_) == EVP_CIPH_ECB_MODE;
  const size_t half = key_.size() / 2;
  // Generic XTS: the data key is the first half; the second encrypts the tweak.
  Ctx tweak(generic_xts ? EVP_CIPHER_CTX_new() : nullptr);
  if (generic_xts) {
    if (!tweak || !EVP_CipherInit_ex2(ctx.get(), cipher_, key_.data(), nullptr, enc, nullptr) ||
        !EVP_CipherInit_ex2(tweak.get(), cipher_, key_.data() + half, nullptr, 1, nullptr))
      return Failed(spec_.Describe());
    EVP_CIPHER_CTX_set_padding(tweak.get(), 0);
  } else if (!EVP_CipherInit_ex2(ctx.get(), cipher_, key_.data(), nullptr, enc, nullptr)) {
    return Failed(spec_.Describe());
  }
  EVP_CIPHER_CTX_set_padding(ctx.get(), 0);
  if (essiv) {
    if (!EVP_CipherInit_ex2(essiv.get(), essiv_cipher_, essiv_key_.data(), nullptr, 1, nullptr))
      return Failed("essiv");
    EVP_CIPHER_CTX_set_padding(essiv.get(), 0);
  }
  uint8_t iv[32], t[16];
  int out = 0;
  for (size_t done = 0; done < len; done += sector_size_, ++sector) {
    const size_t n = std::min(sector_size_, len - done);
    uint8_t* p = data + done;
    if (iv_len_ && spec_.mode != "ecb") {
      MakeIv(sector, iv);
      if (essiv && !EVP_CipherUpdate(essiv.get(), iv, &out, iv, int(iv_len_))) return Failed("essiv");
    }
    if (generic_xts) {
      if (!EVP_CipherUpdate(tweak.get(), t, &out, iv, 16)) return Failed(spec_.Describe());
      uint8_t tw[16];
      std::memcpy(tw, t, 16);
      for (size_t b = 0; b < n; b += 16, XtsNext(tw))
        for (int i = 0; i < 16; ++i) p[b + i] ^= tw[i];
      if (!EVP_CipherUpdate(ctx.get(), p, &out, p, int(n))) return Failed(spec_.Describe());
      std::memcpy(tw, t, 16);
      for (size_t b = 0; b < n; b += 16, XtsNext(tw))
        for (int i = 0; i < 16; ++i) p[b + i] ^= tw[i];
      continue;
    }
    if ((iv_len_ && spec_.mode != "ecb" && !EVP_CipherInit_ex2(ctx.get(), nullptr, nullptr, iv, enc, nullptr)) ||
        !EVP_CipherUpdate(ctx.get(), p, &out, p, int(n)))
      return Failed(spec_.Describe());
  }
  return Status::OK();
}

Result<SecretBytes> Pbkdf2(const std::string& hash, const SecretBytes& password, const uint8_t* salt, size_t salt_len,
                           uint32_t iterations, size_t out_len) {
  const EVP_MD* md = EVP_get_digestbyname(hash.c_str());
  if (!md) return Unsupported("the hash " + hash + " is not available");
  SecretBytes out(out_len);
  static const char kEmpty = 0;
  const char* pw = password.empty() ? &kEmpty : reinterpret_cast<const char*>(password.data());
  if (!PKCS5_PBKDF2_HMAC(pw, int(password.size()), salt, int(salt_len), int(iterations), md, int(out_len), out.data()))
    return Failed("PBKDF2");
  return out;
}

uint32_t Pbkdf2Speed(const std::string& hash, size_t out_len, uint32_t ms) {
  const SecretBytes pw("imgfs", 5);
  const uint8_t salt[32] = {};
  uint64_t iters = 1 << 14, spent_us = 0;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    if (!Pbkdf2(hash, pw, salt, sizeof salt, uint32_t(iters), out_len).ok()) return 1000;
    spent_us = uint64_t(std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count());
    if (spent_us >= 100000 || iters >= (1u << 30)) break;
    iters *= 4;
  }
  const uint64_t per_ms = iters * 1000 / std::max<uint64_t>(spent_us, 1);
  return uint32_t(std::clamp<uint64_t>(per_ms * ms, 1000, UINT32_MAX));
}

Status RandomBytes(uint8_t* out, size_t n) {
  if (RAND_bytes(out, int(n)) != 1) return Failed("random generator");
  return Status::OK();
}

Result<SecretBytes> Aes256CbcDecrypt(const SecretBytes& key, const SecretBytes& iv, const SecretBytes& in) {
  if (in.size() % 16) return InvalidArgument("the encrypted secret is not whole AES blocks");
  SecretBytes out(in.size());
  Ctx ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  if (!ctx || !EVP_DecryptInit_ex2(ctx.get(), EVP_aes_256_cbc(), key.data(), iv.data(), nullptr))
    return Failed("AES-256-CBC");
  EVP_CIPHER_CTX_set_padding(ctx.get(), 0);
  if (!EVP_DecryptUpdate(ctx.get(), out.data(), &n, in.data(), int(in.size()))) return Failed("AES-256-CBC");
  return out;
}

}  // namespace imgfs::crypto
