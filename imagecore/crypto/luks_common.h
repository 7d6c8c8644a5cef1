// What the luks format and qcow2's LUKS encryption share: unlocking with
// the key the keyring holds, info fields, and create's options.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <map>

#include "crypto/keyed_cipher.h"
#include "crypto/luks.h"
#include "imagecore/format.h"

namespace imgfs::crypto {

// The cipher of the LUKS header `h` at `base` of `file`, keyed by the
// keyring (keyed_cipher.h). A key given for the file that opens no slot is
// an error (kNoKey); no key at all leaves the image locked.
Result<std::shared_ptr<KeyedCipher>> LuksCipher(const io::File& file, uint64_t base, const LuksHeader& h);
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
