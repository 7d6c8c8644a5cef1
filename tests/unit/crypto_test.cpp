// The crypto pieces: secrets as qemu takes them, the AF splitter, sector
// ciphers and their IVs, and LUKS headers made and unlocked.
#include <gtest/gtest.h>
#include <sys/prctl.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "crypto/luks.h"
#include "crypto/sector_cipher.h"
#include "imagecore/file.h"
#include "imagecore/secret.h"

namespace imgfs {
namespace {

std::string Str(const SecretBytes& s) { return std::string(reinterpret_cast<const char*>(s.data()), s.size()); }

TEST(Secret, Base64AsQemuDecodesIt) {
  EXPECT_EQ(Str(DecodeBase64Secret("aHVudGVyMg==", "t").value()), "hunter2");
  EXPECT_EQ(Str(DecodeBase64Secret("YWJj", "t").value()), "abc");
  EXPECT_EQ(DecodeBase64Secret("", "t").value().size(), 0u);
  EXPECT_FALSE(DecodeBase64Secret("abc", "t").ok());    // not whole quads
  EXPECT_FALSE(DecodeBase64Secret("ab!d", "t").ok());   // not the alphabet
  EXPECT_FALSE(DecodeBase64Secret("a=bc", "t").ok());   // padding inside
}

TEST(Secret, StoreTakesQemusObjects) {
  SecretStore s;
  ASSERT_TRUE(s.AddObject("secret,id=a,data=x,,y").ok());  // ",," is a comma
  EXPECT_EQ(Str(*s.Find("a").value()), "x,y");
  ASSERT_TRUE(s.AddObject("secret,id=b,data=aHVudGVyMg==,format=base64").ok());
  EXPECT_EQ(Str(*s.Find("b").value()), "hunter2");
  EXPECT_EQ(s.AddObject("secret,id=a,data=again").code(), Code::kInvalidArgument);  // duplicate id
  EXPECT_FALSE(s.AddObject("secret,data=x").ok());                                 // no id
  EXPECT_FALSE(s.AddObject("secret,id=c").ok());                                   // no data
  EXPECT_FALSE(s.AddObject("secret,id=c,data=x,file=/y").ok());                    // both
  EXPECT_FALSE(s.AddObject("secret,id=c,data=x,format=hex").ok());
  EXPECT_FALSE(s.AddObject("secret,id=c,data=x,keyid=a").ok());                    // keyid without iv
  EXPECT_EQ(s.AddObject("secret,id=c,data=AAAAAAAAAAAAAAAAAAAAAA==,keyid=a,iv=AAAAAAAAAAAAAAAAAAAAAA==,format=base64")
                .code(),
            Code::kInvalidArgument);  // the master is not 32 bytes
  EXPECT_EQ(s.AddObject("throttle-group,id=t").code(), Code::kUnsupported);
  EXPECT_EQ(s.Find("nope").status().code(), Code::kNotFound);
}

TEST(Secret, MessagesNeverHoldTheSecret) {
  SecretStore s;
  Status st = s.AddObject("secret,id=a,data=sup3rs3cret,format=base64");  // not base64: refused
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message().find("sup3rs3cret"), std::string::npos) << st.message();
}

TEST(Secret, AProcessHoldingSecretsLeavesNoCoreDump) {
  SecretBytes s("x", 1);
  EXPECT_EQ(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
}

TEST(Secret, KeyFilesLoseOneTrailingNewline) {
  const std::string dir = testing::TempDir();
  auto write = [&](const std::string& name, const std::string& text) {
    FILE* f = std::fopen((dir + name).c_str(), "wb");
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
    return dir + name;
  };
  EXPECT_EQ(Str(ReadKeyFile(write("k1", "pw\n")).value()), "pw");
  EXPECT_EQ(Str(ReadKeyFile(write("k2", "pw\n\n")).value()), "pw\n");
  EXPECT_EQ(Str(ReadKeyFile(write("k3", "pw")).value()), "pw");
  EXPECT_FALSE(ReadKeyFile(write("k4", "")).ok());
  EXPECT_FALSE(ReadKeyFile(write("k5", std::string(65 << 10, 'x'))).ok());
  EXPECT_FALSE(ReadKeyFile(dir + "missing").ok());
  EXPECT_FALSE(ReadKeyFile("/dev/zero").ok());  // not a regular file: no endless read
}

TEST(Af, SplitThenMergeGivesTheKey) {
  for (size_t kb : {16u, 24u, 64u}) {  // 24 with sha256: a last, partial digest chunk
    for (const char* hash : {"sha1", "sha256", "sha512"}) {
      SecretBytes key(kb);
      for (size_t i = 0; i < kb; ++i) key.data()[i] = uint8_t(i * 7 + 3);
      auto split = crypto::AfSplit(key, 4000, hash);
      ASSERT_TRUE(split.ok());
      auto merged = crypto::AfMerge(split->data(), kb, 4000, hash);
      ASSERT_TRUE(merged.ok());
      EXPECT_TRUE(merged->Equals(key)) << kb << " " << hash;
      (*split)[1234] ^= 1;  // one flipped bit anywhere spoils the key
      EXPECT_FALSE(crypto::AfMerge(split->data(), kb, 4000, hash)->Equals(key));
    }
  }
}

TEST(SectorCipher, XtsMatchesIeee1619Vector4) {
  // IEEE P1619 XTS-AES-128 vector 4: data unit 0, 512 bytes 00..ff twice.
  // (Vector 1 has two equal keys, which OpenSSL refuses.)
  const uint8_t k[32] = {0x27, 0x18, 0x28, 0x18, 0x28, 0x45, 0x90, 0x45, 0x23, 0x53, 0x60,
                         0x28, 0x74, 0x71, 0x35, 0x26, 0x31, 0x41, 0x59, 0x26, 0x53, 0x58,
                         0x97, 0x93, 0x23, 0x84, 0x62, 0x64, 0x33, 0x83, 0x27, 0x95};
  auto c = crypto::SectorCipher::Make({"aes-128", "xts", "plain64", ""}, SecretBytes(k, sizeof k));
  ASSERT_TRUE(c.ok());
  uint8_t data[512];
  for (int i = 0; i < 512; ++i) data[i] = uint8_t(i);
  ASSERT_TRUE(c.value()->Encrypt(0, data, sizeof data).ok());
  const uint8_t want[16] = {0x27, 0xa7, 0x47, 0x9b, 0xef, 0xa1, 0xd4, 0x76,
                            0x48, 0x9f, 0x30, 0x8c, 0xd4, 0xcf, 0xa6, 0xe2};
  EXPECT_EQ(std::memcmp(data, want, 16), 0);
}

std::vector<uint8_t> Sectors(size_t n) {
  std::vector<uint8_t> v(n * 512);
  for (size_t i = 0; i < v.size(); ++i) v[i] = uint8_t(i * 31 + 7);
  return v;
}

TEST(SectorCipher, EverySpecRoundTripsAndEachSectorHasItsOwnIv) {
  const crypto::CipherSpec specs[] = {
      {"aes-256", "xts", "plain64", ""}, {"aes-192", "xts", "plain64", ""}, {"aes-128", "cbc", "essiv", "sha256"},
      {"aes-256", "cbc", "plain", ""},   {"aes-256", "ctr", "plain64", ""}, {"sm4", "xts", "plain64", ""},
  };
  for (const auto& spec : specs) {
    SecretBytes key(crypto::KeyBytes(spec).value());
    for (size_t i = 0; i < key.size(); ++i) key.data()[i] = uint8_t(i + 1);
    auto c = crypto::SectorCipher::Make(spec, key);
    ASSERT_TRUE(c.ok()) << spec.Describe() << ": " << c.status().message();
    const auto plain = Sectors(4);
    auto data = plain;
    ASSERT_TRUE(c.value()->Encrypt(100, data.data(), data.size()).ok());
    EXPECT_NE(data, plain);
    // Two sectors of different content encrypt differently; the same bytes
    // in two sectors too (the IV differs).
    auto same = Sectors(1);
    auto again = same;
    ASSERT_TRUE(c.value()->Encrypt(5, same.data(), 512).ok());
    ASSERT_TRUE(c.value()->Encrypt(6, again.data(), 512).ok());
    EXPECT_NE(same, again) << spec.Describe();
    ASSERT_TRUE(c.value()->Decrypt(100, data.data(), data.size()).ok());
    EXPECT_EQ(data, plain) << spec.Describe();
  }
}

TEST(SectorCipher, PlainWrapsAt32BitsPlain64DoesNot) {
  SecretBytes key(32);
  for (const char* iv : {"plain", "plain64"}) {
    auto c = crypto::SectorCipher::Make({"aes-256", "cbc", iv, ""}, key).value();
    auto a = Sectors(1), b = Sectors(1);
    ASSERT_TRUE(c->Encrypt(7, a.data(), 512).ok());
    ASSERT_TRUE(c->Encrypt(7 + (1ull << 32), b.data(), 512).ok());
    EXPECT_EQ(a == b, std::string(iv) == "plain") << iv;
  }
}

TEST(SectorCipher, RefusesWhatItCannotServe) {
  SecretBytes key(32);
  EXPECT_EQ(crypto::SectorCipher::Make({"serpent-256", "xts", "plain64", ""}, key).status().code(), Code::kUnsupported);
  EXPECT_FALSE(crypto::SectorCipher::Make({"aes-256", "xts", "plain64", ""}, key).ok());  // xts takes 64 bytes
  EXPECT_FALSE(crypto::SectorCipher::Make({"aes-256", "cbc", "essiv", "sha1"}, key).ok());  // no 20-byte aes
}

TEST(Luks, MadeThenUnlockedWithItsPassphraseOnly) {
  crypto::LuksParams p;
  p.iter_time_ms = 10;
  const SecretBytes pw("correct horse", 13);
  auto made = crypto::MakeLuks(p, pw, 4096);
  ASSERT_TRUE(made.ok()) << made.status().message();
  const crypto::LuksHeader& h = made->header;
  EXPECT_EQ(h.payload_offset, 4040u);  // qemu's layout for aes-256-xts
  EXPECT_EQ(h.slots[1].key_offset, 512u);
  auto file = io::NewMemFile();
  const auto header = h.Encode();
  ASSERT_TRUE(file->PWrite(0, header.data(), header.size()).ok());
  ASSERT_TRUE(file->PWrite(uint64_t(h.slots[0].key_offset) * 512, made->key_material.data(), made->key_material.size()).ok());
  ASSERT_TRUE(file->Truncate(uint64_t(h.payload_offset) * 512).ok());
  uint8_t raw[crypto::kLuksHeaderSize];
  ASSERT_TRUE(file->PRead(0, raw, sizeof raw).ok());
  auto parsed = crypto::ParseLuksHeader(raw, sizeof raw, file->Size(), "t");
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_EQ(parsed->spec.Describe(), "aes-256-xts-plain64");
  auto key = crypto::UnlockLuks(parsed.value(), *file, 0, pw, "t");
  ASSERT_TRUE(key.ok());
  EXPECT_TRUE(key->Equals(made->master_key));
  auto wrong = crypto::UnlockLuks(parsed.value(), *file, 0, SecretBytes("correct horsf", 13), "t");
  EXPECT_EQ(wrong.status().code(), Code::kNoKey);
}

TEST(Luks, HostileHeadersAreRefused) {
  crypto::LuksParams p;
  p.iter_time_ms = 10;
  auto made = crypto::MakeLuks(p, SecretBytes("x", 1), 4096).value();
  auto parse = [](std::vector<uint8_t> h, uint64_t area) { return crypto::ParseLuksHeader(h.data(), h.size(), area, "t"); };
  const uint64_t area = uint64_t(made.header.payload_offset) * 512;
  ASSERT_TRUE(parse(made.header.Encode(), area).ok());
  EXPECT_FALSE(parse(made.header.Encode(), 8192).ok());  // key material past the area
  auto h = made.header;
  h.slots[0].iterations = 0xffffffff;  // an unlock that would run for hours
  EXPECT_FALSE(parse(h.Encode(), area).ok());
  h = made.header;
  h.key_bytes = 4096;
  EXPECT_FALSE(parse(h.Encode(), area).ok());
  h = made.header;
  h.slots[0].stripes = 0;
  EXPECT_FALSE(parse(h.Encode(), area).ok());
  auto bytes = made.header.Encode();
  bytes[6] = 0;
  bytes[7] = 2;  // LUKS2
  EXPECT_EQ(parse(bytes, area).status().code(), Code::kUnsupported);
}

}  // namespace
}  // namespace imgfs
