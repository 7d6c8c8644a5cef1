// What the luks format and qcow2's LUKS encryption share: unlocking with
// the key the keyring holds, info fields, and create's options.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <map>

#include "crypto/luks.h"
#include "imagecore/format.h"

namespace imgfs::crypto {

// The cipher that the key given for `file` (see keyring.h) unlocks in the
// LUKS header at `base`; null, with `*locked` saying why, where no key was
// given. A wrong key is an error (kNoKey).
Result<std::unique_ptr<SectorCipher>> OpenLuksCipher(const io::File& file, uint64_t base,
                                                             const LuksHeader& h, std::string* locked);
// qemu-img info's format-specific fields of a LUKS header.
std::vector<ImageInfo::Field> LuksInfoFields(const LuksHeader& h);

// The -o options of a new LUKS header (prefixed "encrypt." in qcow2), and
// the parameters they ask for; `prefix` is "" or "encrypt.".
extern const char* const kLuksCreateOptions;
Result<LuksParams> ParseLuksOptions(std::map<std::string, std::string>& options, const std::string& prefix,
                                            const std::string& what);
// The passphrase that create's key-secret option names.
Result<const SecretBytes*> CreateSecret(const CreateOptions& opts, const std::string& key, const std::string& what);

}  // namespace imgfs::crypto
