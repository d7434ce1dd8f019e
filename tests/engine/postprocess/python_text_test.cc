// The Python string rules the parsers reproduce (python_text.h); expected
// values are what CPython 3.11 gives for the same strings.
#include "engine/postprocess/python_text.h"

#include "gtest/gtest.h"

namespace florence::engine::python_text {
namespace {

TEST(PostprocessPythonTextTest, StripUsesUnicodeWhitespace) {
  EXPECT_EQ(Strip(" \t\n\v\f\r a b \r\n"), "a b");
  // U+3000, U+00A0, U+2003, U+0085, U+001F are str.isspace().
  EXPECT_EQ(Strip("\u3000\u00a0a\u2003\u0085\x1f"), "a");
  // U+200B (zero width space) and U+FEFF are not.
  EXPECT_EQ(Strip("\u200b a \ufeff"), "\u200b a \ufeff");
  EXPECT_EQ(Strip("   "), "");
  EXPECT_EQ(Strip(""), "");
}

TEST(PostprocessPythonTextTest, InvalidUtf8IsNotWhitespace) {
  EXPECT_EQ(Strip("\xa0 a \xc2"), "\xa0 a \xc2");
  EXPECT_EQ(SpaceLengthBefore("a\xa0", 2), 0u);
  EXPECT_EQ(SpaceLengthAt("\xc2\xa0", 0), 2u);
  EXPECT_EQ(SpaceLengthBefore("x\xe3\x80\x80", 4), 3u);
}

TEST(PostprocessPythonTextTest, RemoveAllIsOnePass) {
  EXPECT_EQ(RemoveAll("<s>a<s><s>b", "<s>"), "ab");
  EXPECT_EQ(RemoveAll("<<s>s>", "<s>"), "<s>");
  EXPECT_EQ(RemoveAll("", "<s>"), "");
}

TEST(PostprocessPythonTextTest, DropNonAscii) {
  EXPECT_EQ(DropNonAscii("caf\u00e9 \u4e2d\u6587 ok"), "caf  ok");
}

}  // namespace
}  // namespace florence::engine::python_text
