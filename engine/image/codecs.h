// Internal to engine/image/: one decoder per format, each returning what
// PIL.Image.open(f).convert("RGB") returns (see decode.h for the contract), and
// the PIL conversions they share. Not part of the component's interface.
#ifndef FLORENCE_ENGINE_IMAGE_CODECS_H_
#define FLORENCE_ENGINE_IMAGE_CODECS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/image/decode.h"

namespace florence::engine::image_internal {

// OK if a width x height image may be decoded under `limits`; otherwise
// InvalidArgument naming the format, the size and the limit. Call it with the
// header's dimensions before allocating anything of that size.
absl::Status CheckDimensions(absl::string_view format, int64_t width,
                             int64_t height, const DecodeLimits& limits);

// An RgbImage of width x height with its pixel buffer allocated (zeroed).
// Call CheckDimensions first.
RgbImage AllocateRgb(int width, int height);

// `bytes` is non-empty and starts with the format's signature.
absl::StatusOr<RgbImage> DecodeJpeg(absl::string_view bytes,
                                    const DecodeLimits& limits);
absl::StatusOr<RgbImage> DecodePng(absl::string_view bytes,
                                   const DecodeLimits& limits);
absl::StatusOr<RgbImage> DecodeWebp(absl::string_view bytes,
                                    const DecodeLimits& limits);
absl::StatusOr<RgbImage> DecodeBmp(absl::string_view bytes,
                                   const DecodeLimits& limits);
absl::StatusOr<RgbImage> DecodeTiff(absl::string_view bytes,
                                    const DecodeLimits& limits);

// ---- PIL's pixel conversions (Pillow src/libImaging/Convert.c, Unpack.c) ----

// PIL "CMYK" -> "RGB" (cmyk2rgb): R = (255-K) - C*(255-K)/255, rounded as
// Pillow's MULDIV255 does.
inline void CmykToRgb(uint8_t c, uint8_t m, uint8_t y, uint8_t k,
                      uint8_t* rgb) {
  const int nk = 255 - k;
  auto muldiv255 = [](int a, int b) {
    const int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
  };
  auto clip8 = [](int v) {
    return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
  };
  rgb[0] = clip8(nk - muldiv255(c, nk));
  rgb[1] = clip8(nk - muldiv255(m, nk));
  rgb[2] = clip8(nk - muldiv255(y, nk));
}

// PIL "I;16" -> "RGB" (I16_RGB): saturates instead of scaling.
inline uint8_t Gray16ToGray8(uint16_t v) {
  return v > 255 ? 255 : static_cast<uint8_t>(v);
}

// PIL's premultiplied-alpha unpacking ("RGBa" -> "RGBA", unpackRGBa) of one
// colour sample.
inline uint8_t Unpremultiply(uint8_t v, uint8_t alpha) {
  if (alpha == 0) return 0;
  if (alpha == 255) return v;
  const int u = v * 255 / alpha;
  return static_cast<uint8_t>(u > 255 ? 255 : u);
}

// Sample `index` of a row of `bits`-bit samples packed MSB first (bits 1, 2,
// 4).
inline uint8_t PackedSample(const uint8_t* row, int64_t index, int bits) {
  const int64_t bit = index * bits;
  const int shift = 8 - bits - static_cast<int>(bit % 8);
  return static_cast<uint8_t>((row[bit / 8] >> shift) & ((1 << bits) - 1));
}

// A grey sample of `bits` bits (1, 2, 4 or 8) scaled to 0..255 the way PIL
// unpacks "1", "L;2", "L;4" and "L": 1 -> 255, 3 -> 255 (x85), 15 -> 255 (x17).
inline uint8_t ScaleGray(uint8_t v, int bits) {
  return static_cast<uint8_t>(v * (255 / ((1 << bits) - 1)));
}

}  // namespace florence::engine::image_internal

#endif  // FLORENCE_ENGINE_IMAGE_CODECS_H_
