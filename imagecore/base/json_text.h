// JSON text as qemu-img writes it. Names in an image (snapshot names, file
// names, backing names) are bytes, not necessarily UTF-8; qemu shows each
// sequence it cannot decode as U+FFFD and escapes everything outside
// printable ASCII as \uXXXX with upper-case hex. Scripts that compare the
// two outputs see the same text.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace imgfs {

// `bytes` as valid UTF-8, decoded as qemu decodes them: a sequence that is
// malformed, overlong, a surrogate, a noncharacter or past U+10FFFF becomes
// U+FFFD; the two-byte NUL (C0 80, modified UTF-8) is U+0000.
std::string QemuUtf8(const std::string& bytes);
// `j` with every string made valid as above, indented by four spaces.
std::string DumpQemuJson(nlohmann::ordered_json j);

}  // namespace imgfs
