#pragma once

#include <memory>
#include <string>

#include "crypto/luks.h"
#include "imagecore/format.h"

namespace imgfs::qcow2 {

struct NewEncryption {
  uint32_t method = 0;  // crypt_method: 0 none, 1 aes, 2 luks
  SecretBytes password;
  std::unique_ptr<crypto::NewLuks> luks;
  // The LUKS header area's length (0: none).
  uint64_t AreaBytes() const;
  // Writes the LUKS header and its key material at `offset` of `file`.
  Status WriteArea(io::File& file, uint64_t offset) const;
  // This process opens the new image with its key from now on.
  Status RememberKey(const io::File& file) const;
};

// Takes the encryption options (encrypt.*, encryption=on) out of
// `opts.options`; a new LUKS header is made already.
Result<NewEncryption> TakeEncryptionOptions(CreateOptions& opts, const std::string& what);

}  // namespace imgfs::qcow2
