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
  // The encoded image's own size when it was decoded at reduced scale
  // (DecodeLimits::jpeg_scaled_min_side); 0 = width x height. Coordinates
  // refer to the source size.
  int source_width = 0;
  int source_height = 0;
};

// The size an image's coordinates refer to: its source size if it was decoded
// at reduced scale, else its own.
inline int SourceWidth(const RgbImage& image) {
  return image.source_width > 0 ? image.source_width : image.width;
}
inline int SourceHeight(const RgbImage& image) {
  return image.source_height > 0 ? image.source_height : image.height;
}

// Bounds checked before any pixel buffer is allocated.
struct DecodeLimits {
  int64_t max_pixels = int64_t{64}
                       << 20;  // width * height (64 Mpx: 192 MiB of RGB)
  int64_t max_bytes = int64_t{64} << 20;  // size of the encoded file
  // JPEG only, opt-in (0 = off, the default: full size, PIL's pixels): > 0
  // lets the decoder use libjpeg's DCT scaling, decoding at 1/2, 1/4 or 1/8 of
  // the size (the smallest of them that keeps both sides >= this), which
  // skips most of the inverse DCT and colour conversion of a large photo. The
  // pixels then differ from a full decode followed by the same resize (not
  // transformers' preprocessing: no parity); source_width/height keep the
  // file's size. The pixel limit still applies to the file's size.
  int jpeg_scaled_min_side = 0;
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
