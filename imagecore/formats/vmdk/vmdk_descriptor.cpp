#include "formats/vmdk/vmdk_descriptor.h"

#include <cctype>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include "imagecore/mutex.h"

namespace imgfs::vmdk {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::string Unquote(std::string_view v) {
  v = Trim(v);
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  return std::string(v);
}

bool ParseHex32(std::string_view v, uint32_t* out) {
  v = Trim(v);
  if (v.empty() || v.size() > 8) return false;
  uint32_t x = 0;
  for (char c : v) {
    int d = std::isdigit(static_cast<unsigned char>(c)) ? c - '0'
            : (c >= 'a' && c <= 'f')                    ? c - 'a' + 10
            : (c >= 'A' && c <= 'F')                    ? c - 'A' + 10
                                                        : -1;
    if (d < 0) return false;
    x = x << 4 | uint32_t(d);
  }
  *out = x;
  return true;
}

bool ParseDecimal(std::string_view v, uint64_t* out) {
  if (v.empty() || v.size() > 19) return false;
  uint64_t x = 0;
  for (char c : v) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    x = x * 10 + uint64_t(c - '0');
  }
  *out = x;
  return true;
}

// Splits the next whitespace-separated word off `s`.
std::string_view NextWord(std::string_view* s) {
  *s = Trim(*s);
  size_t n = 0;
  while (n < s->size() && !std::isspace(static_cast<unsigned char>((*s)[n]))) ++n;
  std::string_view w = s->substr(0, n);
  s->remove_prefix(n);
  return w;
}

// ACCESS SECTORS TYPE ["FILE" [OFFSET]]
Result<ExtentLine> ParseExtentLine(std::string_view line) {
  ExtentLine e;
  std::string_view rest = line;
  const std::string_view access = NextWord(&rest);
  if (access == "RW") e.access = ExtentAccess::kRW;
  else if (access == "RDONLY") e.access = ExtentAccess::kRdOnly;
  else if (access == "NOACCESS") e.access = ExtentAccess::kNoAccess;
  else return Corrupt("invalid extent line (access '" + std::string(access) + "')");
  if (!ParseDecimal(NextWord(&rest), &e.sectors) || e.sectors == 0 || e.sectors > (uint64_t(1) << 52))
    return Corrupt("invalid extent line (size)");
  e.type = std::string(NextWord(&rest));
  if (e.type.empty()) return Corrupt("invalid extent line (no type)");
  rest = Trim(rest);
  if (!rest.empty()) {
    if (rest.front() != '"') return Corrupt("invalid extent line (file name not quoted)");
    const size_t close = rest.find('"', 1);
    if (close == std::string_view::npos) return Corrupt("invalid extent line (unterminated file name)");
    e.file = std::string(rest.substr(1, close - 1));
    e.has_file = true;
    rest = Trim(rest.substr(close + 1));
    if (!rest.empty()) {
      const std::string_view off = NextWord(&rest);
      if (!ParseDecimal(off, &e.offset) || !Trim(rest).empty()) return Corrupt("invalid extent line (offset)");
    }
  }
  if (e.type != "ZERO" && !e.has_file) return Corrupt("invalid extent line (no file name for " + e.type + ")");
  return e;
}

bool IsExtentLine(std::string_view line) {
  return line.rfind("RW ", 0) == 0 || line.rfind("RDONLY ", 0) == 0 || line.rfind("NOACCESS ", 0) == 0 ||
         line.rfind("RW\t", 0) == 0 || line.rfind("RDONLY\t", 0) == 0 || line.rfind("NOACCESS\t", 0) == 0;
}

}  // namespace

std::string CidText(uint32_t cid) {
  char s[16];
  std::snprintf(s, sizeof s, "%08x", cid);
  return s;
}

uint32_t NewCid() {
  static Mutex mu;
  static std::mt19937 gen{std::random_device{}()};
  MutexLock l(mu);
  uint32_t c;
  do c = uint32_t(gen()); while (c == kNoParent);
  return c;
}

bool LooksLikeDescriptor(const uint8_t* head, size_t len) {
  std::string_view s(reinterpret_cast<const char*>(head), len);
  const size_t nul = s.find('\0');
  if (nul != std::string_view::npos) s = s.substr(0, nul);
  if (Trim(s).rfind("# Disk DescriptorFile", 0) == 0) return true;
  // Without the comment: a version line and an extent or createType line.
  return s.find("version=") != std::string_view::npos && s.find("createType") != std::string_view::npos;
}

Result<Descriptor> ParseDescriptor(std::string_view text) {
  const size_t nul = text.find('\0');
  if (nul != std::string_view::npos) text = text.substr(0, nul);
  if (text.size() > kMaxDescriptorBytes) return Corrupt("descriptor larger than 1 MiB");
  Descriptor d;
  bool have_version = false;
  while (!text.empty()) {
    const size_t eol = text.find('\n');
    std::string_view line = Trim(text.substr(0, eol));
    text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
    if (line.empty() || line.front() == '#') continue;
    if (IsExtentLine(line)) {
      if (d.extents.size() >= kMaxExtents) return Corrupt("more than 4096 extents");
      IMGFS_ASSIGN_OR_RETURN(ExtentLine e, ParseExtentLine(line));
      d.extents.push_back(std::move(e));
      continue;
    }
    const size_t eq = line.find('=');
    if (eq == std::string_view::npos) continue;  // not key=value: ignored, as VMware does
    const std::string key(Trim(line.substr(0, eq)));
    const std::string_view value = Trim(line.substr(eq + 1));
    if (key == "version") {
      uint64_t v;
      if (!ParseDecimal(value, &v) || v < 1 || v > 3) return Corrupt("unsupported descriptor version '" + std::string(value) + "'");
      d.version = uint32_t(v);
      have_version = true;
    } else if (key == "CID") {
      if (!ParseHex32(value, &d.cid)) return Corrupt("invalid CID '" + std::string(value) + "'");
    } else if (key == "parentCID") {
      if (!ParseHex32(value, &d.parent_cid)) return Corrupt("invalid parentCID '" + std::string(value) + "'");
    } else if (key == "createType") {
      d.create_type = Unquote(value);
    } else if (key == "parentFileNameHint") {
      d.parent_hint = Unquote(value);
    } else if (key.rfind("ddb.", 0) == 0) {
      d.ddb.emplace_back(key, Unquote(value));
    }
  }
  if (!have_version) return Corrupt("descriptor without a version line");
  if (d.create_type.empty()) return Corrupt("descriptor without a createType");
  return d;
}

std::string WithExtents(const std::string& text, const std::vector<ExtentLine>& extents) {
  const std::string eol = text.find("\r\n") != std::string::npos ? "\r\n" : "\n";
  std::string lines;
  for (const ExtentLine& e : extents) {
    lines += e.access == ExtentAccess::kRW ? "RW " : e.access == ExtentAccess::kRdOnly ? "RDONLY " : "NOACCESS ";
    lines += std::to_string(e.sectors) + " " + e.type;
    if (e.has_file) lines += " \"" + e.file + "\"";
    if (e.type == "FLAT" || e.offset) lines += " " + std::to_string(e.offset);
    lines += eol;
  }
  std::string out;
  bool placed = false;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    end = end == std::string::npos ? text.size() : end + 1;
    const std::string_view line = Trim(std::string_view(text).substr(pos, end - pos));
    if (IsExtentLine(line)) {
      if (!placed) out += lines;
      placed = true;
    } else {
      out.append(text, pos, end - pos);
    }
    pos = end;
  }
  if (!placed) out += lines;
  return out;
}

}  // namespace imgfs::vmdk
