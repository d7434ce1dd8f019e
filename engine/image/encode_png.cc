#include "engine/image/encode_png.h"

#include <png.h>

#include <cstdio>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace florence::engine {
namespace {

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

// libpng's longjmp lands in this frame, which holds no objects with
// destructors. Returns false on error (writer->message says why).
bool Write(const uint8_t* pixels, int width, int height, int channels,
           PngWriter* writer) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, writer,
                                            OnPngError, OnPngWarning);
  if (png == nullptr) return false;
  png_infop info = png_create_info_struct(png);
  if (info == nullptr || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  // libpng refuses sides over 1,000,000 by default; PNG allows 2^31 - 1.
  png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
  png_set_write_fn(png, writer, OnPngWrite, OnPngFlush);
  png_set_IHDR(png, info, static_cast<png_uint_32>(width),
               static_cast<png_uint_32>(height), 8,
               channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  const size_t stride = static_cast<size_t>(width) * channels;
  for (int y = 0; y < height; ++y) {
    png_write_row(png, const_cast<png_bytep>(pixels + y * stride));
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}

}  // namespace

absl::StatusOr<std::string> EncodePng8(absl::Span<const uint8_t> pixels,
                                       int width, int height, int channels) {
  if (channels != 1 && channels != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("EncodePng8: channels must be 1 or 3, got ", channels));
  }
  if (width <= 0 || height <= 0 ||
      pixels.size() != static_cast<size_t>(width) * height * channels) {
    return absl::InvalidArgumentError(
        absl::StrCat("EncodePng8: a ", width, "x", height, "x", channels,
                     " image needs ", int64_t{width} * height * channels,
                     " bytes, got ", pixels.size()));
  }
  std::string out;
  PngWriter writer;
  writer.out = &out;
  if (!Write(pixels.data(), width, height, channels, &writer)) {
    return absl::InternalError(
        absl::StrCat("libpng failed to encode: ", writer.message));
  }
  return out;
}

}  // namespace florence::engine
