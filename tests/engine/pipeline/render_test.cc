// florence_render: PNG encoding round-trips through DecodeImage, and each
// result kind leaves visible marks where it should and nowhere else.
#include "engine/pipeline/render.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/image/decode.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace florence::engine {
namespace {

RgbImage Gray(int width, int height, uint8_t value = 128) {
  RgbImage image;
  image.width = width;
  image.height = height;
  image.rgb.assign(size_t{3} * width * height, value);
  return image;
}

bool Changed(const RgbImage& image, int x, int y, uint8_t background = 128) {
  const uint8_t* p = &image.rgb[3 * (size_t{1} * y * image.width + x)];
  return p[0] != background || p[1] != background || p[2] != background;
}

int CountChanged(const RgbImage& image) {
  int n = 0;
  for (int y = 0; y < image.height; ++y) {
    for (int x = 0; x < image.width; ++x) n += Changed(image, x, y);
  }
  return n;
}

TEST(RenderTest, PngRoundTripsExactly) {
  RgbImage image = Gray(37, 23);
  for (size_t i = 0; i < image.rgb.size(); ++i) {
    image.rgb[i] = static_cast<uint8_t>(i * 7919 % 251);
  }
  absl::StatusOr<std::string> png = EncodePng(image);
  ASSERT_TRUE(png.ok()) << png.status();
  absl::StatusOr<RgbImage> decoded = DecodeImage(*png);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->width, 37);
  EXPECT_EQ(decoded->height, 23);
  EXPECT_EQ(decoded->rgb, image.rgb);
}

TEST(RenderTest, EncodePngRejectsABadBuffer) {
  RgbImage image = Gray(4, 4);
  image.rgb.pop_back();
  EXPECT_EQ(EncodePng(image).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodePng(RgbImage{}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RenderTest, BoxOutlineAndLabel) {
  RgbImage image = Gray(200, 100);
  DetectionResult det;
  det.detections.push_back({Box{50, 40, 150, 90}, "car"});
  DrawResult(det, &image);
  EXPECT_TRUE(Changed(image, 100, 40));   // top edge
  EXPECT_TRUE(Changed(image, 150, 60));   // right edge
  EXPECT_TRUE(Changed(image, 100, 90));   // bottom edge
  EXPECT_FALSE(Changed(image, 100, 65));  // inside stays clear
  EXPECT_FALSE(Changed(image, 10, 90));   // far outside
  // The label tag sits above the top-left corner.
  int tag = 0;
  for (int y = 28; y < 40; ++y) {
    for (int x = 50; x < 70; ++x) tag += Changed(image, x, y);
  }
  EXPECT_GT(tag, 100);
}

TEST(RenderTest, OcrQuadsPolygonsAndText) {
  RgbImage quad = Gray(100, 100);
  OcrResult ocr;
  ocr.regions.push_back({QuadBox{{10, 10, 90, 10, 90, 50, 10, 50}}, "Hi"});
  DrawResult(ocr, &quad);
  EXPECT_TRUE(Changed(quad, 50, 50));
  EXPECT_FALSE(Changed(quad, 50, 80));

  RgbImage poly = Gray(100, 100);
  SegmentationResult seg;
  seg.instances.push_back({{{20, 20, 80, 20, 50, 80}}, ""});
  DrawResult(seg, &poly);
  EXPECT_TRUE(Changed(poly, 50, 40));  // filled inside
  EXPECT_FALSE(Changed(poly, 10, 90));

  RgbImage text = Gray(120, 60);
  DrawResult(TextResult{"a cat on a mat, \xE4\xB8\xAD"}, &text);
  EXPECT_GT(CountChanged(text), 100);
  EXPECT_FALSE(Changed(text, 60, 55));  // banner only at the top
}

TEST(RenderTest, CoordinatesOutsideTheImageAreClipped) {
  RgbImage image = Gray(50, 40);
  OpenVocabularyResult ovd;
  const float inf = std::numeric_limits<float>::infinity();
  ovd.detections.push_back({Box{-1e9f, -5, 1e9f, 1e6f}, "big"});
  ovd.detections.push_back({Box{NAN, 1, 2, inf}, ""});
  ovd.polygons.push_back({{{-100, -100, 500, -100, 500, 500}, {}, {3}}, "x"});
  DrawResult(ovd, &image);  // must not crash or write out of bounds
  EXPECT_GT(CountChanged(image), 0);
  EXPECT_EQ(image.rgb.size(), 3u * 50 * 40);
}

}  // namespace
}  // namespace florence::engine
