// DecodeImage against Pillow: every vector's pixels vs PIL's
// Image.open(f).convert("RGB"), broken files, size limits, and robustness
// against truncated and corrupted copies of every vector.
#include "engine/image/decode.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
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
