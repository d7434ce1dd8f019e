// UTF-8 helpers against the Rust / Python behaviour they reproduce.
#include "engine/tokenizer/utf8.h"

#include <string>

#include "gtest/gtest.h"

namespace florence::engine::utf8 {
namespace {

constexpr char kFffd[] = "\xEF\xBF\xBD";

std::string R(int n) {  // n replacement characters
  std::string out;
  for (int i = 0; i < n; ++i) out += kFffd;
  return out;
}

// Rust String::from_utf8_lossy: one U+FFFD per maximal ill-formed subpart.
TEST(Utf8Lossy, ReplacesMaximalSubpartsLikeRust) {
  EXPECT_EQ(Lossy(""), "");
  EXPECT_EQ(Lossy("abc \xC3\xA9 \xF0\x9F\x98\x80"),
            "abc \xC3\xA9 \xF0\x9F\x98\x80");
  EXPECT_EQ(Lossy("a\xFF"
                  "b"),
            "a" + R(1) + "b");
  EXPECT_EQ(Lossy("\xC3"), R(1));  // truncated at the end
  EXPECT_EQ(Lossy("\xC3("), R(1) + "(");
  EXPECT_EQ(Lossy("\xE2\x82"), R(1));  // 2 of 3 bytes: one subpart
  EXPECT_EQ(Lossy("\xE2\x82("), R(1) + "(");
  EXPECT_EQ(Lossy("\xF0\x9F\x98"), R(1));      // 3 of 4 bytes
  EXPECT_EQ(Lossy("\xE0\x80\x80"), R(3));      // overlong: E0 needs A0..BF
  EXPECT_EQ(Lossy("\xC0\xAF"), R(2));          // C0 never starts a sequence
  EXPECT_EQ(Lossy("\xED\xA0\x80"), R(3));      // surrogate
  EXPECT_EQ(Lossy("\xF4\x90\x80\x80"), R(4));  // above U+10FFFF
  EXPECT_EQ(Lossy("\xF8\x88\x80\x80\x80"), R(5));
  EXPECT_EQ(Lossy("\x80\x80"), R(2));  // lone continuation bytes
  EXPECT_EQ(Lossy(std::string("a\0b", 3)), std::string("a\0b", 3));
}

TEST(Utf8IsValid, AcceptsOnlyWellFormed) {
  EXPECT_TRUE(IsValid(""));
  EXPECT_TRUE(IsValid("\xF4\x8F\xBF\xBF"));  // U+10FFFF
  EXPECT_FALSE(IsValid("\xF4\x90\x80\x80"));
  EXPECT_FALSE(IsValid("\xED\xB0\x80"));
  EXPECT_FALSE(IsValid("ok\xC3"));
}

TEST(Utf8PythonStrip, StripsWhatPythonStrips) {
  // str.isspace(): White_Space plus U+001C..U+001F; not U+200B / U+FEFF.
  EXPECT_EQ(
      PythonStrip(" \t\n\r\x0b\x0c\x1c\x1f a b \xC2\x85\xC2\xA0\xE3\x80\x80"),
      "a b");
  EXPECT_EQ(PythonStrip("\xE2\x80\x8Bx\xE2\x80\x8B"),
            "\xE2\x80\x8Bx\xE2\x80\x8B");
  EXPECT_EQ(PythonStrip("  "), "");
  EXPECT_EQ(PythonStrip(""), "");
  EXPECT_EQ(PythonStrip("x"), "x");
}

TEST(Utf8Truncate, NeverCutsASequence) {
  EXPECT_EQ(TruncateAtCodePoint("ab\xC3\xA9", 3), "ab");
  EXPECT_EQ(TruncateAtCodePoint("ab\xC3\xA9", 4), "ab\xC3\xA9");
  EXPECT_EQ(TruncateAtCodePoint("abc", 10), "abc");
}

}  // namespace
}  // namespace florence::engine::utf8
