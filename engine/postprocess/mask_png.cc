#include "engine/postprocess/mask_png.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
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

// ---- PNG
// ----------------------------------------------------------------------

struct PngWriter {
  std::string* out = nullptr;
  char message[256] = "";
};

[[noreturn]] void OnPngError(png_structp png, png_const_charp message) {
  auto* w = static_cast<PngWriter*>(png_get_error_ptr(png));
  std::snprintf(w->message, sizeof(w->message), "%s", message);
  png_longjmp(png, 1);
}

void OnPngWarning(png_structp, png_const_charp) {}

void OnPngWrite(png_structp png, png_bytep data, size_t length) {
  auto* w = static_cast<PngWriter*>(png_get_io_ptr(png));
  w->out->append(reinterpret_cast<const char*>(data), length);
}

void OnPngFlush(png_structp) {}

// Writes `mask` (row-major, `width` bytes a row) as 8-bit grayscale, row by
// row (no table of row pointers, which would rival the mask's size for very
// narrow images). libpng's longjmp lands in this frame, which holds no objects
// with destructors. Returns false on error (writer->message says why).
bool WriteGrayPng(const uint8_t* mask, int width, int height,
                  PngWriter* writer) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, writer,
                                            OnPngError, OnPngWarning);
  if (png == nullptr) return false;
  png_infop info = png_create_info_struct(png);
  if (info == nullptr || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  // libpng refuses sides over 1,000,000 by default; PNG allows 2^31 - 1, and
  // kMaxMaskPixels bounds the size.
  png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
  png_set_write_fn(png, writer, OnPngWrite, OnPngFlush);
  png_set_IHDR(png, info, static_cast<png_uint_32>(width),
               static_cast<png_uint_32>(height), 8, PNG_COLOR_TYPE_GRAY,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < height; ++y) {
    png_write_row(png,
                  const_cast<png_bytep>(mask + static_cast<size_t>(y) * width));
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
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
  std::string out;
  PngWriter writer;
  writer.out = &out;
  if (!WriteGrayPng(mask.data(), width, height, &writer)) {
    return absl::InternalError(
        absl::StrCat("libpng failed to encode the mask: ", writer.message));
  }
  return out;
}

}  // namespace florence::engine
