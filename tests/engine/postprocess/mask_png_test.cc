// PolygonMaskPng: the PNG is decoded back with the image decoder and the
// covered pixels are counted exactly (mask_png.h's fill rule).
#include "engine/postprocess/mask_png.h"

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/image/decode.h"
#include "engine/postprocess/parse.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace florence::engine {
namespace {

// The decoded mask: one value per pixel, after checking that the PNG is
// 8-bit grayscale of the right size and holds only 0 and 255.
std::vector<uint8_t> DecodeMask(const std::string& png, int width, int height) {
  // PNG signature, IHDR: width, height, bit depth 8, colour type 0 (gray).
  EXPECT_GE(png.size(), 33u);
  EXPECT_EQ(png.substr(0, 8), "\x89PNG\r\n\x1a\n");
  EXPECT_EQ(png.substr(12, 4), "IHDR");
  EXPECT_EQ(static_cast<uint8_t>(png[24]), 8) << "bit depth";
  EXPECT_EQ(static_cast<uint8_t>(png[25]), 0) << "colour type";
  absl::StatusOr<RgbImage> image = DecodeImage(png);
  EXPECT_TRUE(image.ok()) << image.status();
  if (!image.ok()) return {};
  EXPECT_EQ(image->width, width);
  EXPECT_EQ(image->height, height);
  std::vector<uint8_t> mask(image->rgb.size() / 3);
  for (size_t i = 0; i < mask.size(); ++i) {
    mask[i] = image->rgb[3 * i];
    EXPECT_EQ(image->rgb[3 * i + 1], mask[i]);
    EXPECT_EQ(image->rgb[3 * i + 2], mask[i]);
    EXPECT_TRUE(mask[i] == 0 || mask[i] == 255) << int{mask[i]};
  }
  return mask;
}

int Covered(const std::vector<uint8_t>& mask) {
  int n = 0;
  for (uint8_t v : mask) n += v == 255;
  return n;
}

std::vector<uint8_t> Draw(const std::vector<PolygonInstance>& instances,
                          int width, int height) {
  absl::StatusOr<std::string> png = PolygonMaskPng(instances, width, height);
  EXPECT_TRUE(png.ok()) << png.status();
  if (!png.ok()) return {};
  return DecodeMask(*png, width, height);
}

PolygonInstance Instance(std::vector<std::vector<float>> polygons) {
  return PolygonInstance{std::move(polygons), ""};
}

TEST(MaskPngTest, RectangleCoversItsHalfOpenPixelRange) {
  const std::vector<uint8_t> mask =
      Draw({Instance({{10, 20, 50, 20, 50, 60, 10, 60}})}, 64, 80);
  ASSERT_EQ(mask.size(), 64u * 80u);
  EXPECT_EQ(Covered(mask), 40 * 40);
  for (int y = 0; y < 80; ++y) {
    for (int x = 0; x < 64; ++x) {
      const bool inside = x >= 10 && x < 50 && y >= 20 && y < 60;
      ASSERT_EQ(mask[y * 64 + x], inside ? 255 : 0) << x << "," << y;
    }
  }
}

TEST(MaskPngTest, RectangleWithFractionalCorners) {
  // Centres x + 0.5 in [10.4, 20.6): x = 10..20; y + 0.5 in [5.5, 7.5): 5, 6.
  const std::vector<uint8_t> mask =
      Draw({Instance({{10.4f, 5.5f, 20.6f, 5.5f, 20.6f, 7.5f, 10.4f, 7.5f}})},
           32, 16);
  EXPECT_EQ(Covered(mask), 11 * 2);
}

TEST(MaskPngTest, Triangle) {
  // Centre inside iff (x + 0.5) + (y + 0.5) < 10.5, i.e. x + y <= 9: 55.
  const std::vector<uint8_t> mask =
      Draw({Instance({{0, 0, 10.5f, 0, 0, 10.5f}})}, 16, 16);
  EXPECT_EQ(Covered(mask), 55);
  for (int y = 0; y < 16; ++y) {
    for (int x = 0; x < 16; ++x) {
      ASSERT_EQ(mask[y * 16 + x], x + y <= 9 ? 255 : 0) << x << "," << y;
    }
  }
}

TEST(MaskPngTest, ConcavePolygon) {
  // A "U": the 30x30 square without the notch [10, 20) x [10, 30).
  const std::vector<uint8_t> mask =
      Draw({Instance(
               {{0, 0, 30, 0, 30, 30, 20, 30, 20, 10, 10, 10, 10, 30, 0, 30}})},
           40, 40);
  EXPECT_EQ(Covered(mask), 30 * 30 - 10 * 20);
  EXPECT_EQ(mask[15 * 40 + 15], 0);  // in the notch
  EXPECT_EQ(mask[5 * 40 + 15], 255);
}

TEST(MaskPngTest, EvenOddLeavesTheDoublyWoundHoleEmpty) {
  // Outer square, a zero-width bridge, the inner square, back over the
  // bridge: the inner square is crossed twice and stays empty.
  const std::vector<uint8_t> mask =
      Draw({Instance({{0, 0, 20, 0,  20, 20, 0,  20, 0, 0,
                       5, 5, 5,  15, 15, 15, 15, 5,  5, 5}})},
           20, 20);
  EXPECT_EQ(Covered(mask), 400 - 100);
}

TEST(MaskPngTest, OverlappingInstancesAndPolygonsAreUnited) {
  const std::vector<float> a = {0, 0, 10, 0, 10, 10, 0, 10};
  const std::vector<float> b = {5, 5, 15, 5, 15, 15, 5, 15};
  EXPECT_EQ(Covered(Draw({Instance({a}), Instance({b})}, 20, 20)),
            100 + 100 - 25);
  EXPECT_EQ(Covered(Draw({Instance({a, b})}, 20, 20)), 175);
  // The same polygon twice does not cancel either.
  EXPECT_EQ(Covered(Draw({Instance({a}), Instance({a})}, 20, 20)), 100);
}

// The scanline fill against the rule applied to every pixel centre on its
// own (pnpoly, mask_png.h), on random polygons whose vertices often sit on
// pixel centres and boundaries, where ties decide.
TEST(MaskPngTest, MatchesPnpolyAtEveryPixelCentre) {
  std::mt19937 rng(7);
  const int width = 23, height = 19;
  for (int round = 0; round < 200; ++round) {
    std::vector<float> polygon;
    const int points = 3 + static_cast<int>(rng() % 8);
    for (int i = 0; i < 2 * points; ++i) {
      const int side = i % 2 == 0 ? width : height;
      const float value =
          rng() % 2 == 0
              ? static_cast<float>(static_cast<int>(rng() % (2 * side + 8)) -
                                   8) /
                    2
              : std::uniform_real_distribution<float>(-3, side + 3)(rng);
      polygon.push_back(value);
    }
    const std::vector<uint8_t> mask =
        Draw({Instance({polygon})}, width, height);
    ASSERT_EQ(mask.size(), size_t{width} * height);
    for (int y = 0; y < height; ++y) {
      for (int x = 0; x < width; ++x) {
        const double cx = x + 0.5, cy = y + 0.5;
        bool inside = false;
        for (int i = 0, j = points - 1; i < points; j = i++) {
          const double ax = polygon[2 * j], ay = polygon[2 * j + 1];
          const double bx = polygon[2 * i], by = polygon[2 * i + 1];
          if ((ay > cy) != (by > cy) &&
              cx < ax + (cy - ay) * (bx - ax) / (by - ay)) {
            inside = !inside;
          }
        }
        ASSERT_EQ(mask[y * width + x], inside ? 255 : 0)
            << "round " << round << " pixel " << x << "," << y;
      }
    }
  }
}

TEST(MaskPngTest, ClipsToTheImage) {
  const std::vector<uint8_t> mask =
      Draw({Instance({{-100, -100, 1e9f, -100, 1e9f, 3, -100, 3}})}, 7, 5);
  EXPECT_EQ(Covered(mask), 7 * 3);
}

TEST(MaskPngTest, DegenerateAndNonFinitePolygonsDrawNothing) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<uint8_t> mask =
      Draw({Instance({{}, {1, 1}, {1, 1, 5, 5}, {1, 1, 5, 1, 5}}),
            Instance({{0, 0, inf, 0, 5, 5}, {0, 0, 5, nan, 5, 5}}),
            Instance({{0, 0, 5, 5, 10, 10}})},  // collinear: no area
           10, 10);
  EXPECT_EQ(Covered(mask), 0);
}

TEST(MaskPngTest, OddTrailingValueIsIgnored) {
  // {1,1, 5,1, 5,5, 7}: the triangle (1,1) (5,1) (5,5) and a stray 7.
  const std::vector<uint8_t> mask =
      Draw({Instance({{1, 1, 5, 1, 5, 5, 7}})}, 8, 8);
  const std::vector<uint8_t> expected =
      Draw({Instance({{1, 1, 5, 1, 5, 5}})}, 8, 8);
  EXPECT_EQ(mask, expected);
  EXPECT_GT(Covered(mask), 0);
}

TEST(MaskPngTest, NoInstancesGiveAnEmptyMaskOfTheImageSize) {
  const std::vector<uint8_t> mask = Draw({}, 3, 2);
  EXPECT_EQ(mask, std::vector<uint8_t>(6, 0));
  EXPECT_EQ(Draw({Instance({})}, 1, 1), std::vector<uint8_t>(1, 0));
}

TEST(MaskPngTest, RefusesBadSizes) {
  for (const auto& [w, h] :
       std::vector<std::pair<int, int>>{{0, 10},
                                        {10, 0},
                                        {-1, 10},
                                        {10, -5},
                                        {1 << 15, 1 << 14},
                                        {(1 << 14) + 1, 1 << 14},
                                        {1 << 30, 1 << 30}}) {
    absl::StatusOr<std::string> png = PolygonMaskPng({}, w, h);
    EXPECT_EQ(png.status().code(), absl::StatusCode::kInvalidArgument)
        << w << "x" << h;
  }
}

TEST(MaskPngTest, WideMaskBeyondLibpngsDefaultLimit) {
  // libpng's default user limit is 1,000,000 pixels a side.
  absl::StatusOr<std::string> png = PolygonMaskPng(
      {Instance({{0, 0, 1'500'000, 0, 1'500'000, 1, 0, 1}})}, 1'500'000, 2);
  ASSERT_TRUE(png.ok()) << png.status();
  DecodeLimits limits;
  absl::StatusOr<RgbImage> image = DecodeImage(*png, limits);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->width, 1'500'000);
  EXPECT_EQ(image->height, 2);
  EXPECT_EQ(image->rgb[0], 255);
  EXPECT_EQ(image->rgb[3 * 1'500'000], 0);
}

}  // namespace
}  // namespace florence::engine
