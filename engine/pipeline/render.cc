#include "engine/pipeline/render.h"


#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "engine/image/encode_png.h"

namespace florence::engine {
namespace {

// ---- Canvas -------------------------------------------------------------

struct Color {
  uint8_t r, g, b;
};

// Distinct, saturated colours for successive instances.
constexpr std::array<Color, 10> kPalette = {{{230, 25, 75},
                                             {60, 180, 75},
                                             {0, 130, 200},
                                             {245, 130, 48},
                                             {145, 30, 180},
                                             {70, 240, 240},
                                             {240, 50, 230},
                                             {210, 245, 60},
                                             {255, 225, 25},
                                             {0, 128, 128}}};

class Canvas {
 public:
  explicit Canvas(RgbImage* image) : im_(image) {}

  int width() const { return im_->width; }
  int height() const { return im_->height; }

  // Blends `c` over pixel (x, y) with opacity `alpha`; outside = no-op.
  void Blend(int x, int y, Color c, float alpha = 1.0f) {
    if (x < 0 || y < 0 || x >= im_->width || y >= im_->height) return;
    uint8_t* p = &im_->rgb[3 * (static_cast<size_t>(y) * im_->width + x)];
    const uint8_t rgb[3] = {c.r, c.g, c.b};
    for (int k = 0; k < 3; ++k) {
      p[k] = static_cast<uint8_t>(
          std::lround(p[k] * (1.0f - alpha) + rgb[k] * alpha));
    }
  }

  void FillRect(int x0, int y0, int x1, int y1, Color c, float alpha = 1.0f) {
    x0 = std::max(x0, 0);
    y0 = std::max(y0, 0);
    x1 = std::min(x1, im_->width);
    y1 = std::min(y1, im_->height);
    for (int y = y0; y < y1; ++y) {
      for (int x = x0; x < x1; ++x) Blend(x, y, c, alpha);
    }
  }

  // A line `thickness` pixels wide (square pen) from (x0, y0) to (x1, y1).
  void Line(double x0, double y0, double x1, double y1, Color c,
            int thickness) {
    if (!std::isfinite(x0) || !std::isfinite(y0) || !std::isfinite(x1) ||
        !std::isfinite(y1)) {
      return;
    }
    // Clamp far-away endpoints so the step count stays bounded.
    const double lim = 4.0 * std::max(im_->width, im_->height) + 16;
    auto clamp = [lim](double v) { return std::clamp(v, -lim, lim); };
    x0 = clamp(x0), y0 = clamp(y0), x1 = clamp(x1), y1 = clamp(y1);
    const int steps = static_cast<int>(
        std::ceil(std::max(std::abs(x1 - x0), std::abs(y1 - y0))));
    const int lo = -(thickness - 1) / 2;
    for (int i = 0; i <= steps; ++i) {
      const double t = steps == 0 ? 0.0 : static_cast<double>(i) / steps;
      const int x = static_cast<int>(std::floor(x0 + t * (x1 - x0)));
      const int y = static_cast<int>(std::floor(y0 + t * (y1 - y0)));
      FillRect(x + lo, y + lo, x + lo + thickness, y + lo + thickness, c);
    }
  }

  // Closed outline through `xy` (alternating x, y).
  void Outline(const std::vector<float>& xy, Color c, int thickness) {
    const size_t n = xy.size() / 2;
    if (n == 1) Line(xy[0], xy[1], xy[0], xy[1], c, thickness);
    for (size_t i = 0; n > 1 && i < n; ++i) {
      const size_t j = (i + 1) % n;
      Line(xy[2 * i], xy[2 * i + 1], xy[2 * j], xy[2 * j + 1], c, thickness);
    }
  }

  // Even-odd scanline fill of the polygon `xy`, blended with `alpha`.
  void FillPolygon(const std::vector<float>& xy, Color c, float alpha) {
    const size_t n = xy.size() / 2;
    if (n < 3) return;
    std::vector<double> crossings;
    for (int y = 0; y < im_->height; ++y) {
      const double sy = y + 0.5;
      crossings.clear();
      for (size_t i = 0; i < n; ++i) {
        const size_t j = (i + 1) % n;
        const double ya = xy[2 * i + 1], yb = xy[2 * j + 1];
        if ((ya <= sy) == (yb <= sy)) continue;
        const double xa = xy[2 * i], xb = xy[2 * j];
        crossings.push_back(xa + (sy - ya) * (xb - xa) / (yb - ya));
      }
      std::sort(crossings.begin(), crossings.end());
      for (size_t k = 0; k + 1 < crossings.size(); k += 2) {
        const double from = std::max(crossings[k], -1.0);
        const double to =
            std::min(crossings[k + 1], static_cast<double>(im_->width) + 1);
        for (int x = static_cast<int>(std::ceil(from - 0.5)); x + 0.5 < to;
             ++x) {
          Blend(x, y, c, alpha);
        }
      }
    }
  }

 private:
  RgbImage* im_;  // not owned
};

// ---- Text ---------------------------------------------------------------

// 5x7 ASCII glyphs for ' ' .. '~': five column bytes each, bit 0 the top row
// (the classic HD44780-style font; descenders use bit 7).
constexpr uint8_t kFont[95][5] = {
    {0x00, 0x00, 0x00, 0x00, 0x00}, {0x00, 0x00, 0x5F, 0x00, 0x00},
    {0x00, 0x07, 0x00, 0x07, 0x00}, {0x14, 0x7F, 0x14, 0x7F, 0x14},
    {0x24, 0x2A, 0x7F, 0x2A, 0x12}, {0x23, 0x13, 0x08, 0x64, 0x62},
    {0x36, 0x49, 0x56, 0x20, 0x50}, {0x00, 0x08, 0x07, 0x03, 0x00},
    {0x00, 0x1C, 0x22, 0x41, 0x00}, {0x00, 0x41, 0x22, 0x1C, 0x00},
    {0x2A, 0x1C, 0x7F, 0x1C, 0x2A}, {0x08, 0x08, 0x3E, 0x08, 0x08},
    {0x00, 0x80, 0x70, 0x30, 0x00}, {0x08, 0x08, 0x08, 0x08, 0x08},
    {0x00, 0x00, 0x60, 0x60, 0x00}, {0x20, 0x10, 0x08, 0x04, 0x02},
    {0x3E, 0x51, 0x49, 0x45, 0x3E}, {0x00, 0x42, 0x7F, 0x40, 0x00},
    {0x72, 0x49, 0x49, 0x49, 0x46}, {0x21, 0x41, 0x49, 0x4D, 0x33},
    {0x18, 0x14, 0x12, 0x7F, 0x10}, {0x27, 0x45, 0x45, 0x45, 0x39},
    {0x3C, 0x4A, 0x49, 0x49, 0x31}, {0x41, 0x21, 0x11, 0x09, 0x07},
    {0x36, 0x49, 0x49, 0x49, 0x36}, {0x46, 0x49, 0x49, 0x29, 0x1E},
    {0x00, 0x00, 0x14, 0x00, 0x00}, {0x00, 0x40, 0x34, 0x00, 0x00},
    {0x00, 0x08, 0x14, 0x22, 0x41}, {0x14, 0x14, 0x14, 0x14, 0x14},
    {0x00, 0x41, 0x22, 0x14, 0x08}, {0x02, 0x01, 0x59, 0x09, 0x06},
    {0x3E, 0x41, 0x5D, 0x59, 0x4E}, {0x7C, 0x12, 0x11, 0x12, 0x7C},
    {0x7F, 0x49, 0x49, 0x49, 0x36}, {0x3E, 0x41, 0x41, 0x41, 0x22},
    {0x7F, 0x41, 0x41, 0x41, 0x3E}, {0x7F, 0x49, 0x49, 0x49, 0x41},
    {0x7F, 0x09, 0x09, 0x09, 0x01}, {0x3E, 0x41, 0x41, 0x51, 0x73},
    {0x7F, 0x08, 0x08, 0x08, 0x7F}, {0x00, 0x41, 0x7F, 0x41, 0x00},
    {0x20, 0x40, 0x41, 0x3F, 0x01}, {0x7F, 0x08, 0x14, 0x22, 0x41},
    {0x7F, 0x40, 0x40, 0x40, 0x40}, {0x7F, 0x02, 0x1C, 0x02, 0x7F},
    {0x7F, 0x04, 0x08, 0x10, 0x7F}, {0x3E, 0x41, 0x41, 0x41, 0x3E},
    {0x7F, 0x09, 0x09, 0x09, 0x06}, {0x3E, 0x41, 0x51, 0x21, 0x5E},
    {0x7F, 0x09, 0x19, 0x29, 0x46}, {0x26, 0x49, 0x49, 0x49, 0x32},
    {0x03, 0x01, 0x7F, 0x01, 0x03}, {0x3F, 0x40, 0x40, 0x40, 0x3F},
    {0x1F, 0x20, 0x40, 0x20, 0x1F}, {0x3F, 0x40, 0x38, 0x40, 0x3F},
    {0x63, 0x14, 0x08, 0x14, 0x63}, {0x03, 0x04, 0x78, 0x04, 0x03},
    {0x61, 0x59, 0x49, 0x4D, 0x43}, {0x00, 0x7F, 0x41, 0x41, 0x41},
    {0x02, 0x04, 0x08, 0x10, 0x20}, {0x00, 0x41, 0x41, 0x41, 0x7F},
    {0x04, 0x02, 0x01, 0x02, 0x04}, {0x40, 0x40, 0x40, 0x40, 0x40},
    {0x00, 0x03, 0x07, 0x08, 0x00}, {0x20, 0x54, 0x54, 0x78, 0x40},
    {0x7F, 0x28, 0x44, 0x44, 0x38}, {0x38, 0x44, 0x44, 0x44, 0x28},
    {0x38, 0x44, 0x44, 0x28, 0x7F}, {0x38, 0x54, 0x54, 0x54, 0x18},
    {0x00, 0x08, 0x7E, 0x09, 0x02}, {0x18, 0xA4, 0xA4, 0x9C, 0x78},
    {0x7F, 0x08, 0x04, 0x04, 0x78}, {0x00, 0x44, 0x7D, 0x40, 0x00},
    {0x20, 0x40, 0x40, 0x3D, 0x00}, {0x7F, 0x10, 0x28, 0x44, 0x00},
    {0x00, 0x41, 0x7F, 0x40, 0x00}, {0x7C, 0x04, 0x78, 0x04, 0x78},
    {0x7C, 0x08, 0x04, 0x04, 0x78}, {0x38, 0x44, 0x44, 0x44, 0x38},
    {0xFC, 0x18, 0x24, 0x24, 0x18}, {0x18, 0x24, 0x24, 0x18, 0xFC},
    {0x7C, 0x08, 0x04, 0x04, 0x08}, {0x48, 0x54, 0x54, 0x54, 0x24},
    {0x04, 0x04, 0x3F, 0x44, 0x24}, {0x3C, 0x40, 0x40, 0x20, 0x7C},
    {0x1C, 0x20, 0x40, 0x20, 0x1C}, {0x3C, 0x40, 0x30, 0x40, 0x3C},
    {0x44, 0x28, 0x10, 0x28, 0x44}, {0x4C, 0x90, 0x90, 0x90, 0x7C},
    {0x44, 0x64, 0x54, 0x4C, 0x44}, {0x00, 0x08, 0x36, 0x41, 0x00},
    {0x00, 0x00, 0x77, 0x00, 0x00}, {0x00, 0x41, 0x36, 0x08, 0x00},
    {0x02, 0x01, 0x02, 0x04, 0x02},
};
constexpr int kGlyphAdvance = 6;  // 5 columns + 1 space
constexpr int kGlyphRows = 8;     // 7 + descender row

// The printable ASCII of UTF-8 `text`: one character per code point, '?' for
// anything outside ' '..'~' (control characters included).
std::string Printable(absl::string_view text) {
  std::string out;
  for (const char ch : text) {
    const auto b = static_cast<unsigned char>(ch);
    if ((b & 0xC0) == 0x80) continue;  // UTF-8 continuation byte
    out.push_back(b >= 0x20 && b < 0x7F ? static_cast<char>(b) : '?');
  }
  return out;
}

void DrawText(Canvas& canvas, int x, int y, absl::string_view ascii, int scale,
              Color color) {
  for (const char ch : ascii) {
    const auto* columns = kFont[static_cast<unsigned char>(ch) - 0x20];
    for (int cx = 0; cx < 5; ++cx) {
      for (int cy = 0; cy < kGlyphRows; ++cy) {
        if ((columns[cx] >> cy) & 1) {
          canvas.FillRect(x + cx * scale, y + cy * scale, x + (cx + 1) * scale,
                          y + (cy + 1) * scale, color);
        }
      }
    }
    x += kGlyphAdvance * scale;
  }
}

Color TextColorOn(Color background) {
  const int luma = 299 * background.r + 587 * background.g + 114 * background.b;
  return luma > 150000 ? Color{0, 0, 0} : Color{255, 255, 255};
}

struct Style {
  int thickness;
  int scale;  // glyph pixel size
};

Style StyleFor(const Canvas& canvas) {
  const int side = std::min(canvas.width(), canvas.height());
  return {std::max(1, side / 300), std::max(1, side / 400)};
}

// A filled label tag with its lower-left corner at (x, y), moved inside the
// image where it would leave it.
void DrawLabel(Canvas& canvas, double x, double y, absl::string_view label,
               Color color, const Style& style) {
  const std::string text = Printable(label);
  if (text.empty()) return;
  const int pad = style.scale;
  const int w =
      static_cast<int>(text.size()) * kGlyphAdvance * style.scale + 2 * pad;
  const int h = kGlyphRows * style.scale + 2 * pad;
  int left = std::isfinite(x) ? static_cast<int>(std::floor(x)) : 0;
  int top = std::isfinite(y) ? static_cast<int>(std::floor(y)) - h : 0;
  left = std::clamp(left, 0, std::max(0, canvas.width() - w));
  top = std::clamp(top, 0, std::max(0, canvas.height() - h));
  canvas.FillRect(left, top, left + w, top + h, color);
  DrawText(canvas, left + pad, top + pad, text, style.scale,
           TextColorOn(color));
}

void DrawBox(Canvas& canvas, const Box& b, absl::string_view label, Color color,
             const Style& style) {
  canvas.Outline({b.x1, b.y1, b.x2, b.y1, b.x2, b.y2, b.x1, b.y2}, color,
                 style.thickness);
  DrawLabel(canvas, std::min(b.x1, b.x2), std::min(b.y1, b.y2), label, color,
            style);
}

void DrawInstance(Canvas& canvas, const PolygonInstance& instance, Color color,
                  const Style& style) {
  for (const std::vector<float>& polygon : instance.polygons) {
    canvas.FillPolygon(polygon, color, 0.35f);
    canvas.Outline(polygon, color, style.thickness);
  }
  for (const std::vector<float>& polygon : instance.polygons) {
    if (polygon.size() >= 2) {
      DrawLabel(canvas, polygon[0], polygon[1], instance.label, color, style);
      break;
    }
  }
}

// Pure text: wrapped lines on a dark banner across the top.
void DrawBanner(Canvas& canvas, absl::string_view text, const Style& style) {
  const std::string ascii = Printable(text);
  if (ascii.empty()) return;
  const int pad = 2 * style.scale;
  const int per_line =
      std::max(1, (canvas.width() - 2 * pad) / (kGlyphAdvance * style.scale));
  std::vector<std::string> lines;
  for (size_t i = 0; i < ascii.size(); i += per_line) {
    lines.push_back(ascii.substr(i, per_line));
  }
  const int line_h = (kGlyphRows + 2) * style.scale;
  canvas.FillRect(0, 0, canvas.width(),
                  2 * pad + static_cast<int>(lines.size()) * line_h,
                  Color{0, 0, 0}, 0.6f);
  for (size_t i = 0; i < lines.size(); ++i) {
    DrawText(canvas, pad, pad + static_cast<int>(i) * line_h, lines[i],
             style.scale, Color{255, 255, 255});
  }
}

}  // namespace

void DrawResult(const TaskResult& result, RgbImage* image) {
  if (image == nullptr || image->width <= 0 || image->height <= 0 ||
      image->rgb.size() != size_t{3} * image->width * image->height) {
    return;
  }
  Canvas canvas(image);
  const Style style = StyleFor(canvas);
  auto color = [](size_t i) { return kPalette[i % kPalette.size()]; };
  if (const auto* text = std::get_if<TextResult>(&result)) {
    DrawBanner(canvas, text->text, style);
  } else if (const auto* det = std::get_if<DetectionResult>(&result)) {
    for (size_t i = 0; i < det->detections.size(); ++i) {
      DrawBox(canvas, det->detections[i].box, det->detections[i].label,
              color(i), style);
    }
  } else if (const auto* ocr = std::get_if<OcrResult>(&result)) {
    for (size_t i = 0; i < ocr->regions.size(); ++i) {
      const auto& p = ocr->regions[i].quad.points;
      canvas.Outline(std::vector<float>(p.begin(), p.end()), color(i),
                     style.thickness);
      DrawLabel(canvas, p[0], p[1], ocr->regions[i].text, color(i), style);
    }
  } else if (const auto* seg = std::get_if<SegmentationResult>(&result)) {
    for (size_t i = 0; i < seg->instances.size(); ++i) {
      DrawInstance(canvas, seg->instances[i], color(i), style);
    }
  } else if (const auto* ovd = std::get_if<OpenVocabularyResult>(&result)) {
    for (size_t i = 0; i < ovd->detections.size(); ++i) {
      DrawBox(canvas, ovd->detections[i].box, ovd->detections[i].label,
              color(i), style);
    }
    for (size_t i = 0; i < ovd->polygons.size(); ++i) {
      DrawInstance(canvas, ovd->polygons[i], color(i), style);
    }
  }
}

absl::StatusOr<std::string> EncodePng(const RgbImage& image) {
  return EncodePng8(image.rgb, image.width, image.height, 3);
}

}  // namespace florence::engine
