// The aspect-preserving (letterbox) preprocessing: content placement, the
// padding value, the canvas size in original pixels and the token mask.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "engine/image/preprocess.h"
#include "tests/engine/image/florence2_config.h"

namespace florence::engine {
namespace {

// A deterministic, non-uniform photo-like pattern.
RgbImage Pattern(int w, int h) {
  RgbImage img;
  img.width = w;
  img.height = h;
  img.rgb.resize(size_t{3} * w * h);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &img.rgb[3 * (size_t{1} * y * w + x)];
      p[0] = static_cast<uint8_t>((x * 7 + y * 3) & 0xff);
      p[1] = static_cast<uint8_t>((x * x + y) & 0xff);
      p[2] = static_cast<uint8_t>(((x ^ y) * 5) & 0xff);
    }
  }
  return img;
}

TEST(Letterbox, LandscapeFillsTheWidthAndPadsTheBottom) {
  const PreprocessConfig config = testdata::Florence2PreprocessConfig();
  const RgbImage image = Pattern(600, 400);
  std::vector<float> out(PreprocessedSize(config), 123.0f);
  auto box = PreprocessLetterboxInto(image, config, absl::MakeSpan(out));
  ASSERT_TRUE(box.ok()) << box.status();
  EXPECT_EQ(box->canvas_side, 600);
  EXPECT_EQ(box->content_width, 768);
  EXPECT_EQ(box->content_height, 512);  // 400 * 768 / 600
  // The content is the same bicubic resize, normalized like PreprocessInto.
  const RgbImage resized = ResizeBicubic(image, 768, 512);
  const size_t plane = 768 * 768;
  for (int y : {0, 100, 511}) {
    for (int x : {0, 333, 767}) {
      for (int c = 0; c < 3; ++c) {
        const uint8_t v = resized.rgb[3 * (size_t{1} * y * 768 + x) + c];
        const float want = (static_cast<float>(v * config.rescale_factor) -
                            static_cast<float>(config.mean[c])) /
                           static_cast<float>(config.std[c]);
        EXPECT_EQ(out[c * plane + y * 768 + x], want) << x << "," << y << "," << c;
      }
    }
  }
  // Everything below the content is 0 (the normalized mean colour).
  for (int c = 0; c < 3; ++c) {
    for (int y = 512; y < 768; y += 17) {
      for (int x = 0; x < 768; x += 13) EXPECT_EQ(out[c * plane + y * 768 + x], 0.0f);
    }
  }
  const std::vector<uint8_t> mask = LetterboxTokenMask(*box, 768, 32);
  ASSERT_EQ(mask.size(), 577u);
  int real = 0;
  for (uint8_t m : mask) real += m;
  EXPECT_EQ(real, 1 + 16 * 24);  // the pooled token + 16 of 24 token rows
  EXPECT_EQ(mask[1 + 15 * 24 + 23], 1);
  EXPECT_EQ(mask[1 + 16 * 24], 0);
}

TEST(Letterbox, PortraitPadsTheRightAndPartialCellsCount) {
  const PreprocessConfig config = testdata::Florence2PreprocessConfig();
  std::vector<float> out(PreprocessedSize(config));
  auto box = PreprocessLetterboxInto(Pattern(191, 384), config, absl::MakeSpan(out));
  ASSERT_TRUE(box.ok());
  EXPECT_EQ(box->canvas_side, 384);
  EXPECT_EQ(box->content_height, 768);
  EXPECT_EQ(box->content_width, 382);  // round(191 * 2)
  const std::vector<uint8_t> mask = LetterboxTokenMask(*box, 768, 32);
  int real = 0;
  for (uint8_t m : mask) real += m;
  EXPECT_EQ(real, 1 + 24 * 12);  // 382 px: 11 full cells and one partial per row
}

TEST(Letterbox, ASquareImageIsExactlyTheResizePath) {
  const PreprocessConfig config = testdata::Florence2PreprocessConfig();
  const RgbImage image = Pattern(300, 300);
  std::vector<float> letterbox(PreprocessedSize(config));
  std::vector<float> resize(PreprocessedSize(config));
  auto box = PreprocessLetterboxInto(image, config, absl::MakeSpan(letterbox));
  ASSERT_TRUE(box.ok());
  ASSERT_TRUE(PreprocessInto(image, config, absl::MakeSpan(resize)).ok());
  EXPECT_EQ(letterbox, resize);
  EXPECT_EQ(box->canvas_side, 300);
  const std::vector<uint8_t> mask = LetterboxTokenMask(*box, 768, 32);
  for (uint8_t m : mask) EXPECT_EQ(m, 1);
}

TEST(Letterbox, BadInputIsInvalidArgument) {
  const PreprocessConfig config = testdata::Florence2PreprocessConfig();
  std::vector<float> out(10);
  EXPECT_EQ(PreprocessLetterboxInto(Pattern(4, 4), config, absl::MakeSpan(out)).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> full(PreprocessedSize(config));
  EXPECT_EQ(PreprocessLetterboxInto(RgbImage{}, config, absl::MakeSpan(full)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace florence::engine
