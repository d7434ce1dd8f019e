// Decoding request images (JPEG, PNG, WebP, BMP, TIFF) to 8-bit RGB, giving the
// pixels the Python reference gets from `PIL.Image.open(f).convert("RGB")`.
//
// Florence-2's image processor (transformers' CLIPImageProcessor with
// do_convert_rgb = null) converts nothing itself; its documented use is
// `processor(images=Image.open(f).convert("RGB"))`. This decoder reproduces
// that, including PIL's choices where decoders could differ:
//   - Alpha is dropped, not composited: PIL's convert("RGB") of RGBA, LA, PA
//     and palette+tRNS images keeps the colour channels as stored, whatever the
//     alpha. (transformers' own convert_to_rgb, used when do_convert_rgb is
//     true, would composite onto white instead; Florence-2 does not use it.)
//   - EXIF orientation is NOT applied: Image.open does not rotate, so the model
//     sees the pixels in stored order and boxes refer to the stored width and
//     height. Clients that want upright images must rotate before sending.
//   - JPEG: libjpeg-turbo with PIL's settings (integer slow DCT, fancy
//     upsampling); CMYK/YCCK JPEGs are read with Adobe's inverted polarity and
//     converted with PIL's formula R = (255-K) - C*(255-K)/255.
//   - 16-bit samples keep their high byte (PNG/TIFF RGB, RGBA, gray+alpha), but
//     a 16-bit single-channel grey image is PIL mode "I;16", whose conversion
//     to RGB saturates: min(value, 255). Most such images come out nearly
//     white; that is what PIL, and so the reference pipeline, produces.
//   - ICC profiles and PNG gamma are ignored, as PIL does without ImageCms.
//   - Multi-frame files (animated WebP, multi-page TIFF) give their first
//   frame.
// GIF and other formats PIL reads are not supported.
//
// Thread-safe: no global state; every call uses its own decoder instances.
#ifndef FLORENCE_ENGINE_IMAGE_DECODE_H_
#define FLORENCE_ENGINE_IMAGE_DECODE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace florence::engine {

// Interleaved 8-bit RGB, row-major: pixel (x, y) is rgb[3 * (y * width + x)].
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;  // size 3 * width * height
};

// Bounds checked before any pixel buffer is allocated.
struct DecodeLimits {
  int64_t max_pixels = int64_t{64}
                       << 20;  // width * height (64 Mpx: 192 MiB of RGB)
  int64_t max_bytes = int64_t{64} << 20;  // size of the encoded file
};

// Decodes an encoded image. The format is sniffed from the leading bytes; the
// file name or MIME type plays no part.
//
// Errors, all InvalidArgument with a message that names the format and says
// what is wrong: empty input, more than limits.max_bytes, an unrecognised or
// unsupported format, a header claiming more than limits.max_pixels pixels
// (refused after reading only the header), zero width or height, truncated or
// corrupt data, and format variants outside what is listed above (e.g. 12-bit
// JPEG, float TIFF). Never aborts the process on bad input.
absl::StatusOr<RgbImage> DecodeImage(absl::string_view bytes,
                                     const DecodeLimits& limits = {});

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_IMAGE_DECODE_H_
