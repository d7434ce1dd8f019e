#include "engine/postprocess/mask_png.h"


#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/image/encode_png.h"
#include "engine/postprocess/parse.h"

namespace florence::engine {
namespace {

struct Point {
  double x;
  double y;
};

// Fills `polygon` (flat x, y coordinates) into the row-major `mask` by the
// rule of mask_png.h, one scanline of pixel centres at a time: the centres
// inside are those between the 1st and 2nd, 3rd and 4th, ... sorted crossings
// x_i, left-closed ([x_2i, x_2i+1)), which is where the number of crossings
// with cx < x_i is odd.
void FillPolygon(const std::vector<float>& polygon, int width, int height,
                 std::vector<uint8_t>* mask) {
  std::vector<Point> points;
  points.reserve(polygon.size() / 2);
  for (size_t i = 0; i + 2 <= polygon.size(); i += 2) {
    if (!std::isfinite(polygon[i]) || !std::isfinite(polygon[i + 1])) return;
    points.push_back(Point{polygon[i], polygon[i + 1]});
  }
  if (points.size() < 3) return;

  double min_y = points[0].y;
  double max_y = points[0].y;
  for (const Point& p : points) {
    min_y = std::min(min_y, p.y);
    max_y = std::max(max_y, p.y);
  }
  // Rows whose centre cy = y + 0.5 can be crossed: min_y <= cy < max_y.
  // Clamped in double before the int conversion.
  const int first_row = static_cast<int>(
      std::clamp(std::ceil(min_y - 0.5), 0.0, static_cast<double>(height)));
  const int end_row = static_cast<int>(
      std::clamp(std::ceil(max_y - 0.5), 0.0, static_cast<double>(height)));

  std::vector<double> crossings;
  for (int y = first_row; y < end_row; ++y) {
    const double cy = y + 0.5;
    crossings.clear();
    for (size_t i = 0, j = points.size() - 1; i < points.size(); j = i++) {
      const Point& a = points[j];
      const Point& b = points[i];
      if ((a.y > cy) != (b.y > cy)) {
        crossings.push_back(a.x + (cy - a.y) * (b.x - a.x) / (b.y - a.y));
      }
    }
    std::sort(crossings.begin(), crossings.end());
    uint8_t* row = mask->data() + static_cast<size_t>(y) * width;
    for (size_t k = 0; k + 1 < crossings.size(); k += 2) {
      // Centres x + 0.5 in [lo, hi): x from ceil(lo - 0.5) to
      // ceil(hi - 0.5) - 1 (exact: subtracting 0.5 from a double in the
      // image's range does not round).
      const double lo = std::clamp(std::ceil(crossings[k] - 0.5), 0.0,
                                   static_cast<double>(width));
      const double hi = std::clamp(std::ceil(crossings[k + 1] - 0.5), 0.0,
                                   static_cast<double>(width));
      std::fill(row + static_cast<int>(lo), row + static_cast<int>(hi),
                uint8_t{255});
    }
  }
}

}  // namespace

absl::StatusOr<std::string> PolygonMaskPng(
    const std::vector<PolygonInstance>& instances, int width, int height) {
  if (width <= 0 || height <= 0 ||
      int64_t{width} * int64_t{height} > kMaxMaskPixels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PolygonMaskPng: mask size ", width, "x", height,
        " must be positive and at most ", kMaxMaskPixels, " pixels"));
  }
  std::vector<uint8_t> mask(static_cast<size_t>(width) * height, 0);
  for (const PolygonInstance& instance : instances) {
    for (const std::vector<float>& polygon : instance.polygons) {
      FillPolygon(polygon, width, height, &mask);
    }
  }
  return EncodePng8(mask, width, height, 1);
}

}  // namespace florence::engine
