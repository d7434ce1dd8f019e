#include "engine/image/preprocess.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"

namespace florence::engine {
namespace {

// ---- Pillow's Resample.c, 8 bits per channel, BICUBIC ----------------------
// Kept in the same order of floating-point operations as Pillow so that the
// coefficients, and hence the pixels, are identical (the file is compiled with
// -ffp-contract=off for the same reason).

constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr double kBicubicSupport = 2.0;

double BicubicFilter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Filter taps for resampling `in_size` samples to `out_size`: output i reads
// inputs [bounds[2i], bounds[2i] + bounds[2i+1]) weighted by
// weights[i * ksize + k], fixed point with kPrecisionBits fractional bits.
struct Taps {
  int ksize = 0;
  std::vector<int> bounds;
  std::vector<int32_t> weights;
};

Taps PrecomputeTaps(int in_size, int out_size) {
  // Pillow's box is (0, 0, in_w, in_h) as floats; in1 - in0 is exact.
  const float in0 = 0.0f;
  const float in1 = static_cast<float>(in_size);
  const double scale = static_cast<double>(in1 - in0) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = kBicubicSupport * filterscale;
  Taps taps;
  taps.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  taps.bounds.resize(size_t{2} * out_size);
  taps.weights.assign(static_cast<size_t>(out_size) * taps.ksize, 0);
  std::vector<double> k(taps.ksize);
  const double inv_filterscale = 1.0 / filterscale;
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    double ww = 0.0;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    for (int x = 0; x < xmax; ++x) {
      const double w =
          BicubicFilter((x + xmin - center + 0.5) * inv_filterscale);
      k[x] = w;
      ww += w;
    }
    if (ww != 0.0) {
      for (int x = 0; x < xmax; ++x) k[x] /= ww;
    }
    for (int x = 0; x < xmax; ++x) {
      // normalize_coeffs_8bpc
      const double scaled = k[x] * (1 << kPrecisionBits);
      taps.weights[static_cast<size_t>(xx) * taps.ksize + x] =
          static_cast<int32_t>(k[x] < 0 ? -0.5 + scaled : 0.5 + scaled);
    }
    taps.bounds[2 * xx] = xmin;
    taps.bounds[2 * xx + 1] = xmax;
  }
  return taps;
}

inline uint8_t Clip8(int32_t v) {
  const int32_t shifted = v >> kPrecisionBits;  // arithmetic shift, as Pillow
  return static_cast<uint8_t>(shifted < 0 ? 0 : shifted > 255 ? 255 : shifted);
}

// Rows [first_row, first_row + out.height) of `in`, resampled horizontally
// into `out` (whose width is the target width).
void ResampleHorizontal(const RgbImage& in, int first_row, const Taps& taps,
                        RgbImage* out) {
  const size_t in_stride = size_t{3} * in.width;
  const size_t out_stride = size_t{3} * out->width;
  for (int y = 0; y < out->height; ++y) {
    const uint8_t* line = in.rgb.data() + in_stride * (y + first_row);
    uint8_t* dst = out->rgb.data() + out_stride * y;
    for (int xx = 0; xx < out->width; ++xx) {
      const int xmin = taps.bounds[2 * xx];
      const int xmax = taps.bounds[2 * xx + 1];
      const int32_t* k = &taps.weights[static_cast<size_t>(xx) * taps.ksize];
      int32_t ss0 = 1 << (kPrecisionBits - 1);
      int32_t ss1 = ss0, ss2 = ss0;
      const uint8_t* p = line + size_t{3} * xmin;
      for (int x = 0; x < xmax; ++x, p += 3) {
        ss0 += p[0] * k[x];
        ss1 += p[1] * k[x];
        ss2 += p[2] * k[x];
      }
      dst[3 * xx] = Clip8(ss0);
      dst[3 * xx + 1] = Clip8(ss1);
      dst[3 * xx + 2] = Clip8(ss2);
    }
  }
}

// `in` resampled vertically into `out` (same width, target height); the taps'
// bounds are rows of `in` shifted by -row_offset.
void ResampleVertical(const RgbImage& in, const Taps& taps, int row_offset,
                      RgbImage* out) {
  const size_t stride = size_t{3} * in.width;
  for (int yy = 0; yy < out->height; ++yy) {
    const int ymin = taps.bounds[2 * yy] - row_offset;
    const int ymax = taps.bounds[2 * yy + 1];
    const int32_t* k = &taps.weights[static_cast<size_t>(yy) * taps.ksize];
    uint8_t* dst = out->rgb.data() + stride * yy;
    for (size_t i = 0; i < stride; ++i) {
      int32_t ss = 1 << (kPrecisionBits - 1);
      const uint8_t* p = in.rgb.data() + stride * ymin + i;
      for (int y = 0; y < ymax; ++y, p += stride) ss += *p * k[y];
      dst[i] = Clip8(ss);
    }
  }
}

RgbImage NewImage(int width, int height) {
  RgbImage image;
  image.width = width;
  image.height = height;
  image.rgb.resize(size_t{3} * width * height);
  return image;
}

}  // namespace

RgbImage ResizeBicubic(const RgbImage& image, int width, int height) {
  const bool need_horizontal = width != image.width;
  const bool need_vertical = height != image.height;
  if (!need_horizontal && !need_vertical) return image;
  const Taps vertical = PrecomputeTaps(image.height, height);

  // Pillow >= 13 runs the vertical pass first when the height shrinks and the
  // width does not (less work for the horizontal pass); the two orders round
  // differently, so follow it. (Pillow <= 12.2 always went horizontal first;
  // 12.3 only for images more than 100 times taller than wide.)
  const bool horizontal_first =
      !(width >= image.width && height < image.height);
  if (!horizontal_first) {
    RgbImage tall = NewImage(image.width, height);
    ResampleVertical(image, vertical, 0, &tall);
    if (!need_horizontal) return tall;
    RgbImage out = NewImage(width, height);
    ResampleHorizontal(tall, 0, PrecomputeTaps(image.width, width), &out);
    return out;
  }

  if (!need_horizontal) {
    RgbImage out = NewImage(width, height);
    ResampleVertical(image, vertical, 0, &out);
    return out;
  }
  // Only the source rows the vertical pass reads are resampled horizontally.
  const int first_row = vertical.bounds[0];
  const int last_row =
      vertical.bounds[2 * height - 2] + vertical.bounds[2 * height - 1];
  RgbImage wide = NewImage(width, last_row - first_row);
  ResampleHorizontal(image, first_row, PrecomputeTaps(image.width, width),
                     &wide);
  if (!need_vertical) return wide;  // first_row is 0: all rows
  RgbImage out = NewImage(width, height);
  ResampleVertical(wide, vertical, first_row, &out);
  return out;
}

absl::Status ValidatePreprocessConfig(const PreprocessConfig& config) {
  if (config.size < 1 || config.size > 8192) {
    return absl::InvalidArgumentError(absl::StrCat(
        "preprocess.size must be in [1, 8192], got ", config.size));
  }
  if (config.resample != "bicubic") {
    return absl::InvalidArgumentError(
        absl::StrCat("preprocess.resample must be \"bicubic\" (the only "
                     "filter implemented), got \"",
                     config.resample, "\""));
  }
  if (!(config.rescale_factor > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("preprocess.rescale_factor must be positive, got ",
                     config.rescale_factor));
  }
  for (int c = 0; c < 3; ++c) {
    if (config.std[c] == 0 || !std::isfinite(config.std[c]) ||
        !std::isfinite(config.mean[c])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "preprocess.mean/std[", c, "] must be finite with std non-zero"));
    }
  }
  return absl::OkStatus();
}

namespace {

// The checks both preprocessing variants make before touching pixels.
absl::Status CheckPreprocessInputs(const RgbImage& image,
                                   const PreprocessConfig& config,
                                   absl::Span<float> out) {
  FLORENCE_RETURN_IF_ERROR(ValidatePreprocessConfig(config));
  if (out.size() != PreprocessedSize(config)) {
    return absl::InvalidArgumentError(absl::StrCat("output buffer holds ",
                                                   out.size(), " floats, need ",
                                                   PreprocessedSize(config)));
  }
  if (image.width <= 0 || image.height <= 0 ||
      image.rgb.size() != size_t{3} * image.width * image.height) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a valid RGB image: ", image.width, "x", image.height,
                     " with ", image.rgb.size(), " bytes"));
  }
  return absl::OkStatus();
}

// Writes `image` (already at its canvas size) normalized into the top-left of
// the size x size planes of `out`: rescale in double then float32
// (transformers' rescale), normalize in float32 (its normalize), one table
// per channel.
void NormalizeInto(const RgbImage& image, const PreprocessConfig& config,
                   absl::Span<float> out) {
  float table[3][256];
  for (int c = 0; c < 3; ++c) {
    const auto mean = static_cast<float>(config.mean[c]);
    const auto std = static_cast<float>(config.std[c]);
    for (int v = 0; v < 256; ++v) {
      const auto rescaled = static_cast<float>(v * config.rescale_factor);
      table[c][v] = (rescaled - mean) / std;
    }
  }
  const size_t size = static_cast<size_t>(config.size);
  const size_t plane = size * size;
  for (int y = 0; y < image.height; ++y) {
    for (int x = 0; x < image.width; ++x) {
      const uint8_t* px =
          &image.rgb[3 * (static_cast<size_t>(y) * image.width + x)];
      const size_t i = static_cast<size_t>(y) * size + x;
      out[i] = table[0][px[0]];
      out[plane + i] = table[1][px[1]];
      out[2 * plane + i] = table[2][px[2]];
    }
  }
}

}  // namespace

absl::Status PreprocessInto(const RgbImage& image,
                            const PreprocessConfig& config,
                            absl::Span<float> out) {
  FLORENCE_RETURN_IF_ERROR(CheckPreprocessInputs(image, config, out));
  const int size = static_cast<int>(config.size);
  NormalizeInto(ResizeBicubic(image, size, size), config, out);
  return absl::OkStatus();
}

absl::StatusOr<Letterbox> PreprocessLetterboxInto(const RgbImage& image,
                                                  const PreprocessConfig& config,
                                                  absl::Span<float> out) {
  FLORENCE_RETURN_IF_ERROR(CheckPreprocessInputs(image, config, out));
  const int size = static_cast<int>(config.size);
  Letterbox box;
  box.canvas_side = std::max(image.width, image.height);
  const double scale = static_cast<double>(size) / box.canvas_side;
  box.content_width = std::clamp(
      static_cast<int>(std::lround(image.width * scale)), 1, size);
  box.content_height = std::clamp(
      static_cast<int>(std::lround(image.height * scale)), 1, size);
  std::fill(out.begin(), out.end(), 0.0f);
  NormalizeInto(ResizeBicubic(image, box.content_width, box.content_height),
                config, out);
  return box;
}

std::vector<uint8_t> LetterboxTokenMask(const Letterbox& box, int size,
                                        int patch) {
  const int grid = size / patch;
  std::vector<uint8_t> mask(1 + static_cast<size_t>(grid) * grid, 0);
  mask[0] = 1;
  for (int gy = 0; gy < grid; ++gy) {
    for (int gx = 0; gx < grid; ++gx) {
      if (gy * patch < box.content_height && gx * patch < box.content_width) {
        mask[1 + static_cast<size_t>(gy) * grid + gx] = 1;
      }
    }
  }
  return mask;
}

absl::StatusOr<std::vector<float>> Preprocess(const RgbImage& image,
                                              const PreprocessConfig& config) {
  FLORENCE_RETURN_IF_ERROR(ValidatePreprocessConfig(config));
  std::vector<float> out(PreprocessedSize(config));
  FLORENCE_RETURN_IF_ERROR(PreprocessInto(image, config, absl::MakeSpan(out)));
  return out;
}

}  // namespace florence::engine
