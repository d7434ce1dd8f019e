// PNG through libpng, reading raw samples (no libpng transformations except
// de-interlacing) and converting them as Pillow's PngImagePlugin +
// convert("RGB") do:
//   grey 1/2/4/8-bit      scaled to 0..255 (x255, x85, x17, x1), replicated
//   grey 16-bit           mode "I;16": min(value, 255), replicated
//   grey+alpha, RGB, RGBA 8-bit as is, 16-bit high byte; alpha dropped
//   palette               PLTE lookup; indices past the palette are black;
//                         tRNS ignored
// gAMA/iCCP/sRGB are ignored, as by Pillow.
//
// libpng reports errors through a callback that must not return; ours
// longjmps to the setjmp in the functions below, which hold no C++ objects
// with destructors (the context that owns libpng's structs lives in the
// caller).
#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/image/codecs.h"
#include "engine/status_macros.h"

namespace florence::engine::image_internal {
namespace {

struct PngContext {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t pos = 0;
  char message[256] = "";
  char warning[256] =
      "";  // the last one: libpng often explains an error in a warning first

  PngContext() = default;
  PngContext(const PngContext&) = delete;
  PngContext& operator=(const PngContext&) = delete;
  ~PngContext() {
    if (png != nullptr) png_destroy_read_struct(&png, &info, nullptr);
  }
};

[[noreturn]] void OnError(png_structp png, png_const_charp message) {
  auto* ctx = static_cast<PngContext*>(png_get_error_ptr(png));
  std::snprintf(ctx->message, sizeof(ctx->message), "%s", message);
  png_longjmp(png, 1);
}

void OnWarning(png_structp png, png_const_charp message) {
  auto* ctx = static_cast<PngContext*>(png_get_error_ptr(png));
  std::snprintf(ctx->warning, sizeof(ctx->warning), "%s", message);
}

absl::Status PngError(const PngContext& ctx) {
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid PNG: ", ctx.message, ctx.warning[0] != '\0' ? " (" : "",
      ctx.warning, ctx.warning[0] != '\0' ? ")" : ""));
}

void OnRead(png_structp png, png_bytep out, size_t length) {
  auto* ctx = static_cast<PngContext*>(png_get_io_ptr(png));
  if (length > ctx->size - ctx->pos) {
    png_error(png, "truncated: the file ends early");
  }
  std::memcpy(out, ctx->data + ctx->pos, length);
  ctx->pos += length;
}

struct Header {
  png_uint_32 width = 0;
  png_uint_32 height = 0;
  int bit_depth = 0;
  int color_type = 0;
  int interlace = 0;
  png_colorp palette = nullptr;  // owned by libpng's info struct
  int palette_size = 0;
};

bool ReadHeader(PngContext* ctx, Header* header) {
  if (setjmp(png_jmpbuf(ctx->png))) return false;
  png_set_read_fn(ctx->png, ctx, OnRead);
  // libpng's default limit (1e6 per side) would pre-empt ours with a
  // different message; PNG itself allows 2^31-1.
  png_set_user_limits(ctx->png, 0x7fffffff, 0x7fffffff);
  png_read_info(ctx->png, ctx->info);
  png_get_IHDR(ctx->png, ctx->info, &header->width, &header->height,
               &header->bit_depth, &header->color_type, &header->interlace,
               nullptr, nullptr);
  if (header->color_type == PNG_COLOR_TYPE_PALETTE &&
      !png_get_PLTE(ctx->png, ctx->info, &header->palette,
                    &header->palette_size)) {
    png_error(ctx->png, "palette image without a PLTE chunk");
  }
  return true;
}

// One row of raw PNG samples (big-endian, packed below 8 bits) to RGB.
void ConvertRow(const Header& h, const uint8_t* in, uint8_t* out) {
  const int64_t width = h.width;
  const int depth = h.bit_depth;
  const int bytes = depth == 16 ? 2 : 1;
  switch (h.color_type) {
    case PNG_COLOR_TYPE_GRAY:
      for (int64_t x = 0; x < width; ++x) {
        uint8_t v;
        if (depth == 16) {
          v = Gray16ToGray8(
              static_cast<uint16_t>(in[2 * x] << 8 | in[2 * x + 1]));
        } else if (depth == 8) {
          v = in[x];
        } else {
          v = ScaleGray(PackedSample(in, x, depth), depth);
        }
        out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = v;
      }
      break;
    case PNG_COLOR_TYPE_GRAY_ALPHA:
      for (int64_t x = 0; x < width; ++x) {
        out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = in[2 * bytes * x];
      }
      break;
    case PNG_COLOR_TYPE_RGB:
    case PNG_COLOR_TYPE_RGB_ALPHA: {
      const int channels = h.color_type == PNG_COLOR_TYPE_RGB ? 3 : 4;
      for (int64_t x = 0; x < width; ++x) {
        const uint8_t* p = in + channels * bytes * x;
        out[3 * x] = p[0];
        out[3 * x + 1] = p[bytes];
        out[3 * x + 2] = p[2 * bytes];
      }
      break;
    }
    case PNG_COLOR_TYPE_PALETTE:
      for (int64_t x = 0; x < width; ++x) {
        const int index = depth == 8 ? in[x] : PackedSample(in, x, depth);
        if (index < h.palette_size) {
          out[3 * x] = h.palette[index].red;
          out[3 * x + 1] = h.palette[index].green;
          out[3 * x + 2] = h.palette[index].blue;
        } else {
          out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = 0;
        }
      }
      break;
  }
}

// Reads the image data into `image` (3 bytes per pixel). `raw` holds one raw
// row, or the whole raw image when interlaced (rowbytes * height).
bool ReadPixels(PngContext* ctx, const Header& h, size_t rowbytes, uint8_t* raw,
                uint8_t* image) {
  if (setjmp(png_jmpbuf(ctx->png))) return false;
  const size_t out_stride = size_t{3} * h.width;
  if (h.interlace != PNG_INTERLACE_NONE) {
    const int passes = png_set_interlace_handling(ctx->png);
    for (int pass = 0; pass < passes; ++pass) {
      for (png_uint_32 y = 0; y < h.height; ++y) {
        png_read_row(ctx->png, raw + rowbytes * y, nullptr);
      }
    }
    for (png_uint_32 y = 0; y < h.height; ++y) {
      ConvertRow(h, raw + rowbytes * y, image + out_stride * y);
    }
  } else {
    for (png_uint_32 y = 0; y < h.height; ++y) {
      png_read_row(ctx->png, raw, nullptr);
      ConvertRow(h, raw, image + out_stride * y);
    }
  }
  // The chunks after the image data are not read: Pillow ignores them too.
  return true;
}

}  // namespace

absl::StatusOr<RgbImage> DecodePng(absl::string_view bytes,
                                   const DecodeLimits& limits) {
  PngContext ctx;
  ctx.data = reinterpret_cast<const uint8_t*>(bytes.data());
  ctx.size = bytes.size();
  ctx.png =
      png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, OnError, OnWarning);
  if (ctx.png != nullptr) ctx.info = png_create_info_struct(ctx.png);
  if (ctx.png == nullptr || ctx.info == nullptr) {
    return absl::ResourceExhaustedError("PNG: cannot create a libpng decoder");
  }
  Header header;
  if (!ReadHeader(&ctx, &header)) return PngError(ctx);
  FLORENCE_RETURN_IF_ERROR(
      CheckDimensions("PNG", header.width, header.height, limits));
  RgbImage image = AllocateRgb(static_cast<int>(header.width),
                               static_cast<int>(header.height));
  // Raw row size of the unmodified image: samples per pixel x bit depth.
  const int samples = header.color_type == PNG_COLOR_TYPE_GRAY_ALPHA  ? 2
                      : header.color_type == PNG_COLOR_TYPE_RGB       ? 3
                      : header.color_type == PNG_COLOR_TYPE_RGB_ALPHA ? 4
                                                                      : 1;
  const size_t rowbytes =
      (size_t{header.width} * samples * header.bit_depth + 7) / 8;
  std::vector<uint8_t> raw(header.interlace != PNG_INTERLACE_NONE
                               ? rowbytes * header.height
                               : rowbytes);
  if (!ReadPixels(&ctx, header, rowbytes, raw.data(), image.rgb.data())) {
    return PngError(ctx);
  }
  return image;
}

}  // namespace florence::engine::image_internal
