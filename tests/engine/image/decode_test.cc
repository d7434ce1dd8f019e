// DecodeImage against Pillow: every vector's pixels vs PIL's
// Image.open(f).convert("RGB"), broken files, size limits, and robustness
// against truncated and corrupted copies of every vector.
#include "engine/image/decode.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "engine/image/encode_png.h"
#include "engine/image/preprocess.h"
#include "tests/engine/image/jpeg_writer.h"
#include "tests/engine/image/vectors.h"

namespace florence::engine {
namespace {

using ::florence::testdata::GoodImage;
using ::florence::testdata::ImageVectors;
using ::florence::testdata::ReadFileBytes;
using ::testing::HasSubstr;

const ImageVectors& Vectors() { return testdata::SharedImageVectors(); }

struct Diff {
  int max = 0;
  double mean = 0;
  int64_t differing = 0;  // bytes
};

Diff Compare(const std::vector<uint8_t>& got, const std::string& want) {
  Diff d;
  if (got.size() != want.size()) return {256, 256, -1};
  int64_t sum = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const int delta =
        std::abs(int{got[i]} - int{static_cast<uint8_t>(want[i])});
    d.max = std::max(d.max, delta);
    sum += delta;
    d.differing += delta != 0;
  }
  d.mean = got.empty() ? 0 : static_cast<double>(sum) / got.size();
  return d;
}

// Decodes every vector of `format` and compares with PIL, printing one line per
// image. Lossless formats must match exactly; lossy ones are decoded by the
// same libraries with the same settings as Pillow, so they should too, but a
// different libjpeg-turbo/libwebp version may round differently: they may
// differ by at most `lossy_max`, mean at most `lossy_mean`.
void CheckFormat(const std::string& format, int lossy_max, double lossy_mean) {
  int checked = 0;
  for (const GoodImage& v : Vectors().good) {
    if (v.format != format) continue;
    SCOPED_TRACE(v.name);
    ++checked;
    absl::StatusOr<RgbImage> image = DecodeImage(ReadFileBytes(v.file));
    ASSERT_TRUE(image.ok()) << image.status();
    ASSERT_EQ(image->width, v.width);
    ASSERT_EQ(image->height, v.height);
    const Diff d = Compare(image->rgb, ReadFileBytes(v.rgb));
    std::printf(
        "  %-26s %-5s PIL mode %-5s %5dx%-5d max|d| %3d  mean|d| %.6f  "
        "differing bytes %lld\n",
        v.name.c_str(), v.lossless ? "exact" : "lossy", v.pil_mode.c_str(),
        v.width, v.height, d.max, d.mean, static_cast<long long>(d.differing));
    if (v.lossless) {
      EXPECT_EQ(d.max, 0) << "lossless decode differs from PIL in "
                          << d.differing << " bytes";
    } else {
      EXPECT_LE(d.max, lossy_max);
      EXPECT_LE(d.mean, lossy_mean);
    }
  }
  EXPECT_GT(checked, 0) << "no " << format << " vectors";
}

TEST(ImageDecodeTest, JpegMatchesPil) { CheckFormat("jpeg", 0, 0); }
TEST(ImageDecodeTest, PngMatchesPil) { CheckFormat("png", 0, 0); }
TEST(ImageDecodeTest, WebpMatchesPil) { CheckFormat("webp", 0, 0); }
TEST(ImageDecodeTest, BmpMatchesPil) { CheckFormat("bmp", 0, 0); }
TEST(ImageDecodeTest, TiffMatchesPil) { CheckFormat("tiff", 0, 0); }

// Opt-in reduced-scale JPEG decoding (DecodeLimits::jpeg_scaled_min_side):
// libjpeg's DCT scaling by the largest of 8, 4, 2 that keeps both sides at
// least the minimum (rounded up as libjpeg does), the file's own size kept as
// the source size; without the option, or when even half would be too small,
// the file decodes in full.
TEST(ImageDecodeTest, ScaledJpegDecodeKeepsBothSidesAtLeastTheMinimum) {
  const std::string jpeg =
      testdata::EncodeJpeg(testdata::MakeLargePhoto(testdata::LargestJpegPhoto(Vectors()), 3264, 2448, 6), 90);
  absl::StatusOr<RgbImage> full = DecodeImage(jpeg);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->width, 3264);
  EXPECT_EQ(full->source_width, 0);
  struct Case {
    int min_side;
    int denom;
  };
  for (const Case c : {Case{0, 1}, Case{768, 2}, Case{600, 4}, Case{300, 8}, Case{409, 4},
                       Case{1225, 1}}) {
    SCOPED_TRACE(absl::StrCat("min side ", c.min_side));
    DecodeLimits limits;
    limits.jpeg_scaled_min_side = c.min_side;
    absl::StatusOr<RgbImage> image = DecodeImage(jpeg, limits);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->width, (3264 + c.denom - 1) / c.denom);
    EXPECT_EQ(image->height, (2448 + c.denom - 1) / c.denom);
    EXPECT_EQ(image->rgb.size(), size_t{3} * image->width * image->height);
    EXPECT_EQ(SourceWidth(*image), 3264);
    EXPECT_EQ(SourceHeight(*image), 2448);
    EXPECT_EQ(image->source_width, c.denom > 1 ? 3264 : 0);
    if (c.denom == 1) {
      EXPECT_EQ(image->rgb, full->rgb);
    }
  }
  // Every JPEG vector is smaller than twice the model's 768: with the option
  // it decodes exactly as without it (PIL's pixels).
  DecodeLimits at768;
  at768.jpeg_scaled_min_side = 768;
  for (const GoodImage& v : Vectors().good) {
    if (v.format != "jpeg") continue;
    SCOPED_TRACE(v.name);
    absl::StatusOr<RgbImage> image = DecodeImage(ReadFileBytes(v.file), at768);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->width, v.width);
    EXPECT_EQ(image->source_width, 0);
    EXPECT_EQ(Compare(image->rgb, ReadFileBytes(v.rgb)).max, 0);
  }
  // Other formats ignore it: the same large photo as PNG decodes in full.
  absl::StatusOr<std::string> png = EncodePng8(full->rgb, full->width, full->height, 3);
  ASSERT_TRUE(png.ok()) << png.status();
  absl::StatusOr<RgbImage> from_png = DecodeImage(*png, at768);
  ASSERT_TRUE(from_png.ok()) << from_png.status();
  EXPECT_EQ(from_png->width, 3264);
  EXPECT_EQ(from_png->source_width, 0);
  EXPECT_EQ(from_png->rgb, full->rgb);
}

TEST(ImageDecodeTest, RejectsBrokenInputs) {
  ASSERT_FALSE(Vectors().bad.empty());
  for (const auto& v : Vectors().bad) {
    SCOPED_TRACE(absl::StrCat(v.name, " (", v.why, ")"));
    absl::StatusOr<RgbImage> image = DecodeImage(ReadFileBytes(v.file));
    ASSERT_FALSE(image.ok());
    std::printf("  %-28s -> %s\n", v.name.c_str(),
                image.status().ToString().c_str());
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(absl::AsciiStrToLower(image.status().message()),
                HasSubstr(v.message));
  }
}

// A little-endian TIFF of `width` x `height` 8-bit grey pixels in one tile of `tile` x `tile`, whose single
// byte of data stands for the whole tile: the header alone decides the tile buffer's size.
std::string TiledTiff(uint32_t width, uint32_t height, uint32_t tile) {
  std::string s = {'I', 'I', 42, 0, 8, 0, 0, 0};
  auto le = [&](uint32_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  constexpr uint16_t kShort = 3, kLong = 4;
  const std::vector<std::array<uint32_t, 3>> entries = {
      {256, kLong, width}, {257, kLong, height}, {258, kShort, 8},    {259, kShort, 1}, {262, kShort, 1},
      {277, kShort, 1},    {322, kLong, tile},   {323, kLong, tile},  {324, kLong, 0},  {325, kLong, 1}};
  const uint32_t data_offset = 8 + 2 + 12 * static_cast<uint32_t>(entries.size()) + 4;
  le(static_cast<uint32_t>(entries.size()), 2);
  for (const auto& [tag, type, value] : entries) {
    le(tag, 2);
    le(type, 2);
    le(1, 4);
    le(tag == 324 ? data_offset : value, 4);  // a SHORT sits in the low bytes of the value field
  }
  le(0, 4);  // no next IFD
  s.push_back('\x80');
  return s;
}

// A tiny tiled TIFF whose tiles claim a terabyte (2^20 x 2^20 bytes) is refused from its header, before any tile
// buffer exists; so is one whose tile merely dwarfs its 1x1 image (2^13 x 2^13 = 64 MiB).
TEST(ImageDecodeTest, RefusesTilesLargerThanTheImage) {
  for (uint32_t tile : {uint32_t{1} << 20, uint32_t{1} << 13}) {
    SCOPED_TRACE(tile);
    absl::StatusOr<RgbImage> image = DecodeImage(TiledTiff(1, 1, tile));
    ASSERT_FALSE(image.ok());
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument) << image.status();
    EXPECT_THAT(image.status().message(), HasSubstr("larger than a 1 x 1 image needs")) << image.status();
  }
}

// The oversized vectors are headers with (almost) no pixel data behind them:
// an error that names their dimensions and the limit can only come from the
// header check, before any decoding.
TEST(ImageDecodeTest, RefusesOversizedHeadersBeforeDecoding) {
  ASSERT_FALSE(Vectors().oversized.empty());
  for (const auto& v : Vectors().oversized) {
    SCOPED_TRACE(v.name);
    absl::StatusOr<RgbImage> image = DecodeImage(ReadFileBytes(v.file));
    ASSERT_FALSE(image.ok());
    std::printf("  %-20s -> %s\n", v.name.c_str(),
                image.status().ToString().c_str());
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(image.status().message(),
                HasSubstr(absl::StrCat(v.width, "x", v.height)));
    EXPECT_THAT(image.status().message(),
                HasSubstr("exceeds the limit of 67108864 pixels"));
  }
}

TEST(ImageDecodeTest, EnforcesThePixelLimitInEveryFormat) {
  for (const GoodImage& v : Vectors().good) {
    SCOPED_TRACE(v.name);
    const std::string bytes = ReadFileBytes(v.file);
    DecodeLimits limits;
    limits.max_pixels = int64_t{v.width} * v.height;
    EXPECT_TRUE(DecodeImage(bytes, limits).ok());
    limits.max_pixels -= 1;
    absl::StatusOr<RgbImage> image = DecodeImage(bytes, limits);
    ASSERT_FALSE(image.ok());
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(image.status().message(),
                HasSubstr(absl::StrCat(v.width, "x", v.height)));
  }
}

TEST(ImageDecodeTest, EnforcesTheByteLimit) {
  const GoodImage& v = Vectors().good.front();
  const std::string bytes = ReadFileBytes(v.file);
  DecodeLimits limits;
  limits.max_bytes = static_cast<int64_t>(bytes.size());
  EXPECT_TRUE(DecodeImage(bytes, limits).ok());
  limits.max_bytes -= 1;
  absl::StatusOr<RgbImage> image = DecodeImage(bytes, limits);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(image.status().message(), HasSubstr("exceeds the limit"));
}

TEST(ImageDecodeTest, RejectsEmptyAndUnknownInput) {
  EXPECT_EQ(DecodeImage("").status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<RgbImage> image = DecodeImage("hello, world");
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(image.status().message(), HasSubstr("68 65 6c 6c 6f"));
}

// A file cut short anywhere before its pixel data ends is InvalidArgument (as
// in PIL: "image file is truncated"), and a file with flipped bytes gives an
// image or InvalidArgument -- never a crash, an abort or another status.
TEST(ImageDecodeTest, SurvivesTruncatedAndCorruptedCopies) {
  std::mt19937 rng(7);
  int decoded = 0, rejected = 0;
  for (const GoodImage& v : Vectors().good) {
    SCOPED_TRACE(v.name);
    const std::string bytes = ReadFileBytes(v.file);
    for (int i = 1; i < 8; ++i) {
      const std::string cut = bytes.substr(0, bytes.size() * i / 8);
      // Like PIL, PNG decoding stops after the image data: losing (part of)
      // the 12-byte IEND chunk is harmless.
      if (v.format == "png" && bytes.size() - cut.size() <= 12) continue;
      absl::StatusOr<RgbImage> image = DecodeImage(cut);
      EXPECT_FALSE(image.ok())
          << "cut to " << cut.size() << " of " << bytes.size() << " bytes";
      EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument)
          << "cut to " << cut.size() << " bytes: " << image.status();
    }
    for (int trial = 0; trial < 12; ++trial) {
      std::string corrupt = bytes;
      const int flips = 1 + trial % 4;
      for (int f = 0; f < flips; ++f) {
        // Mostly in the first kilobyte, where the headers are.
        const size_t limit =
            trial % 2 ? corrupt.size() : std::min<size_t>(corrupt.size(), 1024);
        corrupt[rng() % limit] ^= static_cast<char>(1 + rng() % 255);
      }
      absl::StatusOr<RgbImage> image = DecodeImage(corrupt);
      if (image.ok()) {
        ++decoded;
        EXPECT_EQ(image->rgb.size(), size_t{3} * image->width * image->height);
      } else {
        ++rejected;
        EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument)
            << image.status();
      }
    }
  }
  std::printf("  damaged copies: %d decoded, %d rejected\n", decoded, rejected);
}

}  // namespace
}  // namespace florence::engine
