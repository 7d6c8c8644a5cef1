#include "base/json_text.h"

#include <cctype>
#include <cstdint>

namespace imgfs {

namespace {

constexpr char32_t kReplacement = 0xFFFD;

bool IsCont(unsigned char c) { return (c & 0xC0) == 0x80; }

bool ValidCodepoint(char32_t cp) {
  if (cp > 0x10FFFF) return false;
  if (cp >= 0xD800 && cp <= 0xDFFF) return false;                   // surrogates
  if ((cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE) return false;  // noncharacters
  return true;
}

// Decodes one sequence at s[i], advancing i past what it consumed.
char32_t Decode(const std::string& s, size_t* i) {
  const unsigned char lead = static_cast<unsigned char>(s[*i]);
  ++*i;
  if (lead < 0x80) return lead;
  // The lead byte's run of ones gives the length, 2 to 6 bytes.
  int len = 0;
  while (len < 8 && (lead & (0x80 >> len))) ++len;
  if (len < 2 || len > 6) return kReplacement;  // a stray continuation, or FE/FF
  char32_t cp = lead & (0x7F >> len);
  for (int k = 1; k < len; ++k) {
    if (*i >= s.size() || !IsCont(static_cast<unsigned char>(s[*i]))) return kReplacement;  // cut short
    cp = cp << 6 | (static_cast<unsigned char>(s[*i]) & 0x3F);
    ++*i;
  }
  static const char32_t kMinOf[7] = {0, 0, 0x80, 0x800, 0x10000, 0x200000, 0x4000000};
  if (cp < kMinOf[len]) return len == 2 && cp == 0 ? 0 : kReplacement;  // overlong; C0 80 is NUL
  return ValidCodepoint(cp) ? cp : kReplacement;
}

void AppendUtf8(std::string* out, char32_t cp) {
  if (cp < 0x80) {
    out->push_back(char(cp));
  } else if (cp < 0x800) {
    out->push_back(char(0xC0 | cp >> 6));
    out->push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(char(0xE0 | cp >> 12));
    out->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(char(0xF0 | cp >> 18));
    out->push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  }
}

void MakeValid(nlohmann::ordered_json* j) {
  if (j->is_string()) {
    *j = QemuUtf8(j->get_ref<const std::string&>());
  } else if (j->is_structured()) {
    for (auto& v : *j) MakeValid(&v);  // keys are ours, always ASCII
  }
}

}  // namespace

std::string QemuUtf8(const std::string& bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) AppendUtf8(&out, Decode(bytes, &i));
  return out;
}

std::string DumpQemuJson(nlohmann::ordered_json j) {
  MakeValid(&j);
  std::string text = j.dump(4, ' ', /*ensure_ascii=*/true);
  // nlohmann writes \u00e9; qemu \u00E9. A backslash in the text starts
  // an escape, so stepping over escapes two characters at a time is exact.
  for (size_t i = 0; i + 1 < text.size(); ++i) {
    if (text[i] != '\\') continue;
    if (text[i + 1] == 'u')
      for (size_t k = i + 2; k < i + 6 && k < text.size(); ++k)
        text[k] = char(std::toupper(static_cast<unsigned char>(text[k])));
    ++i;
  }
  return text;
}

}  // namespace imgfs
