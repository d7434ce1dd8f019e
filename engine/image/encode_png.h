// PNG encoding of 8-bit pixels with libpng: RGB results drawn by
// florence2-run / the server, and grayscale segmentation masks. Thread-safe.
#ifndef FLORENCE_ENGINE_IMAGE_ENCODE_PNG_H_
#define FLORENCE_ENGINE_IMAGE_ENCODE_PNG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace florence::engine {

// `pixels` is row-major, `channels` (1 = gray, 3 = RGB) bytes per pixel, no
// row padding: exactly width * height * channels bytes. Written row by row, so
// no table of row pointers is built; any side up to 2^31 - 1 is allowed.
// InvalidArgument for bad sizes or channel counts, Internal if libpng fails.
absl::StatusOr<std::string> EncodePng8(absl::Span<const uint8_t> pixels,
                                       int width, int height, int channels);

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_IMAGE_ENCODE_PNG_H_
