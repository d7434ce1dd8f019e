// Preprocess against transformers' CLIPImageProcessor (PIL backend, Florence-2
// configuration): from PIL's decoded pixels (isolates resize + normalize) and
// end to end from the encoded file through DecodeImage.
#include "engine/image/preprocess.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "engine/image/decode.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "openssl/evp.h"
#include "tests/engine/image/florence2_config.h"
#include "tests/engine/image/jpeg_writer.h"
#include "tests/engine/image/vectors.h"

namespace florence::engine {
namespace {

using ::florence::testdata::GoodImage;
using ::florence::testdata::ImageVectors;
using ::florence::testdata::ReadFileBytes;
using ::florence::testdata::ReadFloats;
using ::testing::HasSubstr;

const ImageVectors& Vectors() { return testdata::SharedImageVectors(); }

struct FloatDiff {
  double max = 0;
  double mean = 0;
  int64_t differing = 0;
};

FloatDiff Compare(const std::vector<float>& got,
                  const std::vector<float>& want) {
  FloatDiff d;
  double sum = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double delta = std::abs(double{got[i]} - double{want[i]});
    d.max = std::max(d.max, delta);
    sum += delta;
    d.differing += got[i] != want[i];
  }
  d.mean = got.empty() ? 0 : sum / got.size();
  return d;
}

RgbImage PilPixels(const GoodImage& v) {
  RgbImage image;
  image.width = v.width;
  image.height = v.height;
  const std::string bytes = ReadFileBytes(v.rgb);
  image.rgb.assign(bytes.begin(), bytes.end());
  return image;
}

// One processor output per distinct image size; the same pixels go through
// Preprocess here. Exact equality is expected: the resize is Pillow's code and
// the normalization numpy's float32 arithmetic.
TEST(ImagePreprocessTest, MatchesTheProcessorFromPilPixels) {
  const PreprocessConfig& config = Vectors().preprocess;
  int checked = 0;
  for (const GoodImage& v : Vectors().good) {
    if (v.pixel_values.empty()) continue;
    SCOPED_TRACE(v.name);
    ++checked;
    absl::StatusOr<std::vector<float>> got = Preprocess(PilPixels(v), config);
    ASSERT_TRUE(got.ok()) << got.status();
    const std::vector<float> want = ReadFloats(v.pixel_values);
    ASSERT_EQ(got->size(), want.size());
    const FloatDiff d = Compare(*got, want);
    std::printf(
        "  %-26s %5dx%-5d -> %lldx%lld  max|d| %.3g  mean|d| %.3g  differing "
        "%lld\n",
        v.name.c_str(), v.width, v.height, static_cast<long long>(config.size),
        static_cast<long long>(config.size), d.max, d.mean,
        static_cast<long long>(d.differing));
    EXPECT_EQ(d.differing, 0);
    EXPECT_LE(d.mean, 1.0 / 255);
  }
  EXPECT_GT(checked, 0);
}

std::string Sha256Hex(const std::vector<float>& values) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(values.data(), values.size() * sizeof(float), digest, &length,
             EVP_sha256(), nullptr);
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    absl::StrAppendFormat(&hex, "%02x", digest[i]);
  }
  return hex;
}

// Encoded file -> DecodeImage -> Preprocess, against the processor's
// pixel_values for PIL's decode of the same file, for every vector: in full
// (mean |d| <= 1/255 required, max reported) where the vectors hold the
// tensor, otherwise by its SHA-256 (which requires bit-identical output; a
// mismatch there points at the decode, see ImageDecodeTest).
TEST(ImagePreprocessTest, MatchesTheProcessorEndToEnd) {
  const PreprocessConfig& config = Vectors().preprocess;
  int full = 0, hashed = 0;
  for (const GoodImage& v : Vectors().good) {
    SCOPED_TRACE(v.name);
    absl::StatusOr<RgbImage> image = DecodeImage(ReadFileBytes(v.file));
    ASSERT_TRUE(image.ok()) << image.status();
    absl::StatusOr<std::vector<float>> got = Preprocess(*image, config);
    ASSERT_TRUE(got.ok()) << got.status();
    const GoodImage* ref = nullptr;
    for (const GoodImage& r : Vectors().good) {
      if (!r.pixel_values.empty() && r.rgb == v.rgb) ref = &r;
    }
    const bool same_hash = Sha256Hex(*got) == v.pixel_values_sha256;
    if (ref != nullptr) {
      ++full;
      const FloatDiff d = Compare(*got, ReadFloats(ref->pixel_values));
      std::printf("  %-26s max|d| %.3g  mean|d| %.3g  (full tensor)\n",
                  v.name.c_str(), d.max, d.mean);
      EXPECT_LE(d.mean, 1.0 / 255);
      EXPECT_EQ(same_hash, d.differing == 0);
    } else {
      ++hashed;
      std::printf("  %-26s %s  (sha256)\n", v.name.c_str(),
                  same_hash ? "identical" : "DIFFERENT");
      EXPECT_TRUE(same_hash) << "pixel_values differ from the processor's";
    }
  }
  std::printf("  %d vectors compared in full, %d by hash\n", full, hashed);
}

// The opt-in reduced-scale JPEG decode (DecodeLimits::jpeg_scaled_min_side)
// is not transformers' preprocessing; how far it moves the model's input: a
// large photo (with grain) decoded in full and at 1/2 (the 768 minimum), each
// resized and normalized as usual.
TEST(ImagePreprocessTest, ScaledJpegDecodeStaysCloseToTheFullDecode) {
  const PreprocessConfig& config = Vectors().preprocess;
  const std::string jpeg = testdata::EncodeJpeg(
      testdata::MakeLargePhoto(testdata::LargestJpegPhoto(Vectors()), 3264, 2448, 6), 90);
  absl::StatusOr<RgbImage> full = DecodeImage(jpeg);
  ASSERT_TRUE(full.ok()) << full.status();
  DecodeLimits limits;
  limits.jpeg_scaled_min_side = static_cast<int>(config.size);
  absl::StatusOr<RgbImage> scaled = DecodeImage(jpeg, limits);
  ASSERT_TRUE(scaled.ok()) << scaled.status();
  ASSERT_LT(scaled->width, full->width);
  absl::StatusOr<std::vector<float>> want = Preprocess(*full, config);
  absl::StatusOr<std::vector<float>> got = Preprocess(*scaled, config);
  ASSERT_TRUE(want.ok() && got.ok());
  const FloatDiff d = Compare(*got, *want);
  // One 8-bit level is 1 / 255 / std ~= 0.017 in normalized units.
  std::printf("  3264x2448 JPEG decoded at %dx%d: max|d| %.3g  mean|d| %.3g  (%.2f levels)\n",
              scaled->width, scaled->height, d.max, d.mean, d.mean * 255 * 0.226);
  EXPECT_GT(d.differing, 0);  // really another path
  EXPECT_LE(d.mean, 1.0 / 255 / 0.229);  // on average under one level (measured: 0.31)
}

// Noise in every combination of up/down/same per axis (both pass orders),
// against PIL's resize: must be identical.
TEST(ImageResizeTest, MatchesPilOnNoise) {
  ASSERT_FALSE(Vectors().resize.empty());
  for (const auto& r : Vectors().resize) {
    SCOPED_TRACE(r.name);
    RgbImage image;
    image.width = r.width;
    image.height = r.height;
    const std::string in = ReadFileBytes(r.input);
    image.rgb.assign(in.begin(), in.end());
    const RgbImage out = ResizeBicubic(image, r.out_width, r.out_height);
    ASSERT_EQ(out.width, r.out_width);
    ASSERT_EQ(out.height, r.out_height);
    const std::string want = ReadFileBytes(r.output);
    ASSERT_EQ(out.rgb.size(), want.size());
    int64_t differing = 0;
    int max = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      const int delta =
          std::abs(int{out.rgb[i]} - int{static_cast<uint8_t>(want[i])});
      differing += delta != 0;
      max = std::max(max, delta);
    }
    std::printf("  %-30s max|d| %d  differing bytes %lld\n", r.name.c_str(),
                max, static_cast<long long>(differing));
    EXPECT_EQ(differing, 0);
  }
}

TEST(ImageResizeTest, SameSizeIsACopy) {
  RgbImage image;
  image.width = 3;
  image.height = 2;
  image.rgb = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18};
  const RgbImage out = ResizeBicubic(image, 3, 2);
  EXPECT_EQ(out.rgb, image.rgb);
}

TEST(ImageResizeTest, ConstantImagesStayConstant) {
  for (const auto& [w, h] :
       {std::pair{1, 1}, {2, 900}, {1601, 3}, {768, 1000}}) {
    RgbImage image;
    image.width = w;
    image.height = h;
    image.rgb.resize(size_t{3} * w * h);
    for (size_t i = 0; i < image.rgb.size(); i += 3) {
      image.rgb[i] = 200;
      image.rgb[i + 1] = 0;
      image.rgb[i + 2] = 255;
    }
    const RgbImage out = ResizeBicubic(image, 768, 768);
    ASSERT_EQ(out.rgb.size(), size_t{3} * 768 * 768);
    for (size_t i = 0; i < out.rgb.size(); i += 3) {
      ASSERT_EQ(out.rgb[i], 200) << w << "x" << h;
      ASSERT_EQ(out.rgb[i + 1], 0) << w << "x" << h;
      ASSERT_EQ(out.rgb[i + 2], 255) << w << "x" << h;
    }
  }
}

TEST(ImagePreprocessTest, NormalizesPerChannel) {
  RgbImage image;
  image.width = image.height = 1;
  image.rgb = {0, 255, 128};
  PreprocessConfig config = testdata::Florence2PreprocessConfig();
  config.size = 2;
  absl::StatusOr<std::vector<float>> out = Preprocess(image, config);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 12u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_FLOAT_EQ((*out)[i], -0.485f / 0.229f);
    EXPECT_FLOAT_EQ((*out)[4 + i], (1.0f - 0.456f) / 0.224f);
    EXPECT_NEAR((*out)[8 + i], (128 / 255.0 - 0.406) / 0.225, 1e-6);
  }
}

TEST(ImagePreprocessTest, RejectsBadConfigAndBuffers) {
  RgbImage image;
  image.width = image.height = 1;
  image.rgb = {1, 2, 3};
  PreprocessConfig config = testdata::Florence2PreprocessConfig();
  config.resample = "bilinear";
  EXPECT_THAT(Preprocess(image, config).status().message(),
              HasSubstr("resample"));
  config = testdata::Florence2PreprocessConfig();
  config.size = 0;
  EXPECT_EQ(Preprocess(image, config).status().code(),
            absl::StatusCode::kInvalidArgument);
  config = testdata::Florence2PreprocessConfig();
  config.std[1] = 0;
  EXPECT_EQ(Preprocess(image, config).status().code(),
            absl::StatusCode::kInvalidArgument);
  config = testdata::Florence2PreprocessConfig();
  std::vector<float> small(10);
  EXPECT_THAT(PreprocessInto(image, config, absl::MakeSpan(small)).message(),
              HasSubstr("need 1769472"));
  EXPECT_EQ(Preprocess(RgbImage{}, config).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace florence::engine
