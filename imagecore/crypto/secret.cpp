// Secret memory and the store of qemu secret objects.
#include "imagecore/secret.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <set>
#include <utility>

#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "crypto/sector_cipher.h"
#include "imagecore/mutex.h"

namespace imgfs {
namespace {

// Every live secret mapping, for RelockSecretMemory.
struct Mappings {
  Mutex mu;
  std::set<std::pair<void*, size_t>> live GUARDED_BY(mu);
};
Mappings& TheMappings() {
  static Mappings* m = new Mappings();  // never destroyed: secrets may outlive static destruction
  return *m;
}

// A process that holds keys leaves no core dump and cannot be traced by
// its user's other processes; set once, for the rest of its life.
void ProtectProcess() {
  static std::once_flag once;
  std::call_once(once, [] { (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); });
}

}  // namespace

void RelockSecretMemory() {
  Mappings& m = TheMappings();
  MutexLock l(m.mu);
  for (const auto& [p, len] : m.live) (void)mlock(p, len);
}

SecretBytes::SecretBytes(size_t n) {
  if (n == 0) return;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t len = (n + page - 1) / page * page;
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  (void)madvise(p, len, MADV_DONTDUMP);
  (void)mlock(p, len);  // best effort: RLIMIT_MEMLOCK may say no
  ProtectProcess();
  {
    Mappings& m = TheMappings();
    MutexLock l(m.mu);
    m.live.insert({p, len});
  }
  p_ = static_cast<uint8_t*>(p);
  n_ = n;
  mapped_ = len;
}

SecretBytes::SecretBytes(const void* data, size_t n) : SecretBytes(n) {
  if (n) std::memcpy(p_, data, n);
}

SecretBytes::~SecretBytes() { Release(); }

SecretBytes::SecretBytes(SecretBytes&& o) noexcept : p_(o.p_), n_(o.n_), mapped_(o.mapped_) {
  o.p_ = nullptr;
  o.n_ = o.mapped_ = 0;
}

SecretBytes& SecretBytes::operator=(SecretBytes&& o) noexcept {
  if (this != &o) {
    Release();
    p_ = o.p_;
    n_ = o.n_;
    mapped_ = o.mapped_;
    o.p_ = nullptr;
    o.n_ = o.mapped_ = 0;
  }
  return *this;
}

void SecretBytes::Release() {
  if (!p_) return;
  OPENSSL_cleanse(p_, mapped_);
  {
    Mappings& m = TheMappings();
    MutexLock l(m.mu);
    m.live.erase({p_, mapped_});
  }
  munlock(p_, mapped_);
  munmap(p_, mapped_);
  p_ = nullptr;
  n_ = mapped_ = 0;
}

bool SecretBytes::Equals(const SecretBytes& o) const {
  return n_ == o.n_ && (n_ == 0 || CRYPTO_memcmp(p_, o.p_, n_) == 0);
}

Result<SecretBytes> DecodeBase64Secret(const std::string& text, const std::string& what) {
  return DecodeBase64Secret(SecretBytes(text.data(), text.size()), what);
}

Result<SecretBytes> DecodeBase64Secret(const SecretBytes& encoded, const std::string& what) {
  const auto* text = reinterpret_cast<const char*>(encoded.data());
  const size_t size = encoded.size();
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (size % 4) return InvalidArgument(what + ": the base64 data is not a multiple of 4 characters");
  size_t pad = 0;
  while (pad < 2 && pad < size && text[size - 1 - pad] == '=') ++pad;
  SecretBytes out(size / 4 * 3 - pad);
  size_t o = 0;
  for (size_t i = 0; i < size; i += 4) {
    uint32_t v = 0;
    for (size_t j = 0; j < 4; ++j) {
      const char c = text[i + j];
      const bool padding = c == '=' && i + 4 == size && j >= 4 - pad;
      const int d = padding ? 0 : value(c);
      if (d < 0) return InvalidArgument(what + ": the data is not valid base64");
      v = v << 6 | uint32_t(d);
    }
    const uint8_t bytes[3] = {uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)};
    for (size_t j = 0; j < 3 && o < out.size(); ++j) out.data()[o++] = bytes[j];
  }
  return out;
}

Result<SecretBytes> ReadKeyFile(const std::string& path) {
  constexpr size_t kMax = 64 << 10;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return IoError("key file " + path, errno);
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {  // a FIFO or a device would block or never end
    ::close(fd);
    return InvalidArgument("key file " + path + ": not a regular file");
  }
  SecretBytes buf(kMax + 1);
  size_t n = 0;
  for (;;) {
    const ssize_t r = ::read(fd, buf.data() + n, buf.size() - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int e = errno;
      ::close(fd);
      return IoError("key file " + path, e);
    }
    if (r == 0) break;
    n += size_t(r);
    if (n > kMax) break;
  }
  ::close(fd);
  if (n > kMax) return InvalidArgument("key file " + path + ": longer than 64 KiB");
  if (n && buf.data()[n - 1] == '\n') --n;
  if (n == 0) return InvalidArgument("key file " + path + ": empty");
  return buf.Prefix(n);
}

namespace {

struct ObjectSpec {
  std::map<std::string, std::string> props;
};

// "secret,id=a,data=b": qemu's syntax, where ",," is a literal comma.
Result<ObjectSpec> ParseObject(const std::string& spec) {
  std::vector<std::string> parts(1);
  for (size_t i = 0; i < spec.size(); ++i) {
    if (spec[i] == ',' && i + 1 < spec.size() && spec[i + 1] == ',') {
      parts.back() += ',';
      ++i;
    } else if (spec[i] == ',') {
      parts.emplace_back();
    } else {
      parts.back() += spec[i];
    }
  }
  ObjectSpec o;
  for (size_t i = 0; i < parts.size(); ++i) {
    const auto eq = parts[i].find('=');
    if (i == 0 && eq == std::string::npos) {
      o.props["qom-type"] = parts[i];
      continue;
    }
    if (eq == std::string::npos) return InvalidArgument("--object: Invalid parameter '" + parts[i] + "'");
    const std::string key = parts[i].substr(0, eq);
    if (o.props.count(key)) return InvalidArgument("--object: Parameter '" + key + "' given twice");
    o.props[key] = parts[i].substr(eq + 1);
  }
  return o;
}

Result<SecretBytes> ReadSecretFile(const std::string& path, const std::string& id) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("secret " + id + ": Unable to read " + path);
  std::vector<char> buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  SecretBytes s(buf.data(), buf.size());
  OPENSSL_cleanse(buf.data(), buf.size());
  return s;
}

// keyid/iv: the data is AES-256-CBC ciphertext under the master secret
// (base64 where format=base64), padded with a count in its last byte.
Result<SecretBytes> DecryptSecret(const SecretBytes& master, const std::string& iv_b64, SecretBytes data, bool base64,
                                  const std::string& id) {
  const std::string what = "secret " + id;
  if (master.size() != 32) return InvalidArgument(what + ": the key secret must be 32 bytes, not " + std::to_string(master.size()));
  IMGFS_ASSIGN_OR_RETURN(SecretBytes iv, DecodeBase64Secret(iv_b64, what + ": iv"));
  if (iv.size() != 16) return InvalidArgument(what + ": the iv must be 16 bytes, not " + std::to_string(iv.size()));
  if (base64) {
    IMGFS_ASSIGN_OR_RETURN(data, DecodeBase64Secret(data, what));
  }
  IMGFS_ASSIGN_OR_RETURN(SecretBytes plain, crypto::Aes256CbcDecrypt(master, iv, data));
  const size_t pad = plain.empty() ? 0 : plain.data()[plain.size() - 1];
  if (pad > 16 || pad > plain.size())
    return InvalidArgument(what + ": the decrypted data is not padded as expected (wrong key or iv?)");
  return plain.Prefix(plain.size() - pad);
}

}  // namespace

Status SecretStore::AddObject(const std::string& spec) {
  IMGFS_ASSIGN_OR_RETURN(ObjectSpec o, ParseObject(spec));
  auto& p = o.props;
  const std::string type = p.count("qom-type") ? p["qom-type"] : "";
  if (type != "secret")
    return Unsupported("--object " + (type.empty() ? std::string("?") : type) +
                       ": imgfs takes secret objects only (not throttle groups, TLS or others)");
  const std::string id = p.count("id") ? p["id"] : "";
  if (id.empty()) return InvalidArgument("--object secret: Parameter 'id' is missing");
  for (const auto& [k, v] : p)
    if (k != "qom-type" && k != "id" && k != "data" && k != "file" && k != "format" && k != "keyid" && k != "iv")
      return InvalidArgument("secret " + id + ": Property '" + k + "' not found");
  if (p.count("data") == p.count("file"))
    return InvalidArgument("secret " + id + ": exactly one of 'data' and 'file' must be given");
  const std::string format = p.count("format") ? p["format"] : "raw";
  if (format != "raw" && format != "base64")
    return InvalidArgument("secret " + id + ": format '" + format + "' is neither raw nor base64");
  if (p.count("keyid") != p.count("iv"))
    return InvalidArgument("secret " + id + ": 'keyid' and 'iv' go together");
  if (secrets_.count(id)) return InvalidArgument("attempt to add duplicate property '" + id + "'");
  SecretBytes raw;
  if (p.count("data")) {
    raw = SecretBytes(p["data"].data(), p["data"].size());
    OPENSSL_cleanse(p["data"].data(), p["data"].size());
  } else {
    IMGFS_ASSIGN_OR_RETURN(raw, ReadSecretFile(p["file"], id));
  }
  SecretBytes value;
  if (p.count("keyid")) {
    IMGFS_ASSIGN_OR_RETURN(const SecretBytes* master, Find(p["keyid"]));
    IMGFS_ASSIGN_OR_RETURN(value, DecryptSecret(*master, p["iv"], std::move(raw), format == "base64", id));
  } else if (format == "base64") {
    IMGFS_ASSIGN_OR_RETURN(value, DecodeBase64Secret(raw, "secret " + id));
  } else {
    value = std::move(raw);
  }
  secrets_[id] = std::make_unique<SecretBytes>(std::move(value));
  return Status::OK();
}

Result<const SecretBytes*> SecretStore::Find(const std::string& id) const {
  auto it = secrets_.find(id);
  if (it == secrets_.end()) return NotFound("No secret with id '" + id + "'");
  return it->second.get();
}

}  // namespace imgfs
