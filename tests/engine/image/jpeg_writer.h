// Test and benchmark helper: encodes an RGB image as a baseline JPEG with
// libjpeg, and makes a large "photo" from a small real one, for code that
// needs large JPEGs (reduced-scale decoding) without storing any.
// Link JPEG::JPEG and florence_image.
#ifndef FLORENCE_TESTS_ENGINE_IMAGE_JPEG_WRITER_H_
#define FLORENCE_TESTS_ENGINE_IMAGE_JPEG_WRITER_H_

#include <cstdint>
#include <cstdio>  // jpeglib.h needs FILE and size_t
#include <cstdlib>
#include <string>

#include "engine/image/decode.h"
#include "engine/image/preprocess.h"

// clang-format off
#include <jpeglib.h>
// clang-format on

namespace florence::testdata {

// 4:2:0 baseline JPEG of `image` at `quality` (libjpeg's defaults otherwise).
inline std::string EncodeJpeg(const engine::RgbImage& image, int quality) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr err;
  cinfo.err = jpeg_std_error(&err);  // errors exit: acceptable in a test
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;  // NOLINT(runtime/int): libjpeg's type
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = static_cast<JDIMENSION>(image.width);
  cinfo.image_height = static_cast<JDIMENSION>(image.height);
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(image.rgb.data() + size_t{3} * image.width * cinfo.next_scanline);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  std::string out(reinterpret_cast<const char*>(buffer), size);
  jpeg_destroy_compress(&cinfo);
  std::free(buffer);
  return out;
}

// `source` (a real photo) resized to width x height with the bicubic filter,
// plus deterministic grain of +-`grain` levels per sample, so that the file
// carries high-frequency detail as a camera's does rather than the smooth
// blur of an upscale.
inline engine::RgbImage MakeLargePhoto(const engine::RgbImage& source, int width, int height,
                                       int grain) {
  engine::RgbImage photo = engine::ResizeBicubic(source, width, height);
  uint32_t state = 12345;
  for (uint8_t& v : photo.rgb) {
    state = state * 1664525u + 1013904223u;  // Numerical Recipes' LCG
    const int noise = static_cast<int>((state >> 24) % static_cast<uint32_t>(2 * grain + 1)) - grain;
    const int x = int{v} + noise;
    v = static_cast<uint8_t>(x < 0 ? 0 : x > 255 ? 255 : x);
  }
  return photo;
}

}  // namespace florence::testdata

#endif  // FLORENCE_TESTS_ENGINE_IMAGE_JPEG_WRITER_H_
