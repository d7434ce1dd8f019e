// TIFF through libtiff (first directory only), unpacked as Pillow's
// TiffImagePlugin OPEN_INFO table says, then converted to RGB:
//   MinIsBlack/MinIsWhite  1/2/4/8-bit grey (MinIsWhite inverted), scaled to
//                          0..255; 16-bit is "I;16" (saturated, never
//                          inverted); one extra sample (8-bit) dropped
//   Palette                1/2/4/8-bit, ColorMap entries' high bytes
//   RGB                    8/16-bit (high byte), extra samples dropped;
//                          associated alpha is un-premultiplied first
//   Separated (CMYK)       8/16-bit, Pillow's cmyk2rgb (InkSet ignored)
//   YCbCr                  only JPEG-compressed, converted by libjpeg to RGB
// Strips or tiles, contiguous or separate planes, any compression libtiff was
// built with. Not supported: signed/float samples, LAB and other photometric
// interpretations, 12/32-bit samples.
//
// libtiff's error handlers are per file here (TIFFOpenOptions, libtiff >=
// 4.5), so concurrent decodes do not share state, and nothing is printed.
#include <tiffio.h>

#include <algorithm>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/image/codecs.h"
#include "engine/status_macros.h"

namespace florence::engine::image_internal {
namespace {

// The memory libtiff reads from; also collects its first error message.
struct Source {
  const uint8_t* data = nullptr;
  uint64_t size = 0;
  uint64_t pos = 0;
  char error[512] = "";
};

tmsize_t OnRead(thandle_t handle, void* buf, tmsize_t n) {
  auto* src = static_cast<Source*>(handle);
  if (n <= 0 || src->pos >= src->size) return 0;
  const uint64_t count =
      std::min<uint64_t>(static_cast<uint64_t>(n), src->size - src->pos);
  std::memcpy(buf, src->data + src->pos, count);
  src->pos += count;
  return static_cast<tmsize_t>(count);
}

tmsize_t OnWrite(thandle_t, void*, tmsize_t) { return -1; }

toff_t OnSeek(thandle_t handle, toff_t offset, int whence) {
  auto* src = static_cast<Source*>(handle);
  uint64_t base = 0;
  if (whence == SEEK_CUR) base = src->pos;
  if (whence == SEEK_END) base = src->size;
  src->pos = base + offset;  // past the end is allowed; reads then return 0
  return src->pos;
}

int OnClose(thandle_t) { return 0; }
toff_t OnSize(thandle_t handle) { return static_cast<Source*>(handle)->size; }
int OnMap(thandle_t, void**, toff_t*) { return 0; }
void OnUnmap(thandle_t, void*, toff_t) {}

int OnError(TIFF*, void* user_data, const char* module, const char* fmt,
            va_list ap) {
  auto* src = static_cast<Source*>(user_data);
  if (src->error[0] == '\0') {
    int n = std::snprintf(src->error, sizeof(src->error),
                          "%s: ", module != nullptr ? module : "libtiff");
    if (n < 0 || n >= static_cast<int>(sizeof(src->error))) n = 0;
    std::vsnprintf(src->error + n, sizeof(src->error) - n, fmt, ap);
  }
  return 1;  // handled: do not call the global handler (stderr)
}

int OnWarning(TIFF*, void*, const char*, const char*, va_list) { return 1; }

struct TiffCloser {
  void operator()(TIFF* tif) const { TIFFClose(tif); }
};

absl::Status Invalid(const Source& src, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("invalid TIFF: ", what, src.error[0] != '\0' ? " (" : "",
                   src.error, src.error[0] != '\0' ? ")" : ""));
}

absl::Status Unsupported(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("unsupported TIFF: ", what));
}

enum class Kind { kGray, kPalette, kRgb, kCmyk };

struct Layout {
  uint32_t width = 0, height = 0;
  int bits = 0;           // per sample
  int samples = 0;        // per pixel
  bool separate = false;  // one plane per sample
  Kind kind = Kind::kGray;
  bool invert = false;      // MinIsWhite
  bool associated = false;  // premultiplied alpha in sample 3 (RGB)
  const uint16_t* colormap[3] = {nullptr, nullptr, nullptr};
};

absl::StatusOr<Layout> ReadLayout(TIFF* tif, const Source& src) {
  Layout l;
  uint16_t bits = 1, samples = 1, photometric = 0, planar = 1, format = 1,
           compression = 1;
  if (!TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &l.width) ||
      !TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &l.height)) {
    return Invalid(src, "no ImageWidth/ImageLength");
  }
  TIFFGetFieldDefaulted(tif, TIFFTAG_BITSPERSAMPLE, &bits);
  TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &samples);
  TIFFGetFieldDefaulted(tif, TIFFTAG_PLANARCONFIG, &planar);
  TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLEFORMAT, &format);
  TIFFGetFieldDefaulted(tif, TIFFTAG_COMPRESSION, &compression);
  if (!TIFFGetField(tif, TIFFTAG_PHOTOMETRIC, &photometric)) {
    return Invalid(src, "no PhotometricInterpretation");
  }
  uint16_t extra_count = 0;
  uint16_t* extra = nullptr;
  TIFFGetFieldDefaulted(tif, TIFFTAG_EXTRASAMPLES, &extra_count, &extra);
  l.bits = bits;
  l.samples = samples;
  l.separate = planar == PLANARCONFIG_SEPARATE && samples > 1;
  const std::string what =
      absl::StrFormat("photometric %d, %d samples of %d bits, sample format %d",
                      photometric, samples, bits, format);
  if (format != SAMPLEFORMAT_UINT) {
    return Unsupported(absl::StrCat(what, " (only unsigned integer samples)"));
  }
  switch (photometric) {
    case PHOTOMETRIC_MINISWHITE:
    case PHOTOMETRIC_MINISBLACK: {
      const bool ok =
          (samples == 1 &&
           (bits == 1 || bits == 2 || bits == 4 || bits == 8 || bits == 16)) ||
          (samples == 2 && bits == 8 &&
           (extra_count == 0 || extra[0] != EXTRASAMPLE_ASSOCALPHA));
      if (!ok) return Unsupported(what);
      l.kind = Kind::kGray;
      l.invert = photometric == PHOTOMETRIC_MINISWHITE && bits <= 8;
      break;
    }
    case PHOTOMETRIC_PALETTE:
      if (!((samples == 1 &&
             (bits == 1 || bits == 2 || bits == 4 || bits == 8)) ||
            (samples == 2 && bits == 8))) {
        return Unsupported(what);
      }
      if (!TIFFGetField(tif, TIFFTAG_COLORMAP, &l.colormap[0], &l.colormap[1],
                        &l.colormap[2])) {
        return Invalid(src, "palette image without a ColorMap");
      }
      l.kind = Kind::kPalette;
      break;
    case PHOTOMETRIC_YCBCR:
      if (compression != COMPRESSION_JPEG || bits != 8 || samples != 3) {
        return Unsupported(absl::StrCat(
            what,
            " (YCbCr only with JPEG compression, as Pillow reads it "
            "through its own RGBA path otherwise)"));
      }
      // libjpeg converts to RGB, as Pillow's TiffDecode.c asks.
      TIFFSetField(tif, TIFFTAG_JPEGCOLORMODE, JPEGCOLORMODE_RGB);
      l.kind = Kind::kRgb;
      break;
    case PHOTOMETRIC_RGB:
      if (!((bits == 8 && samples >= 3 && samples <= 6) ||
            (bits == 16 && (samples == 3 || samples == 4)))) {
        return Unsupported(what);
      }
      l.kind = Kind::kRgb;
      l.associated =
          samples >= 4 && extra_count > 0 && extra[0] == EXTRASAMPLE_ASSOCALPHA;
      break;
    case PHOTOMETRIC_SEPARATED:
      if (!((bits == 8 && samples >= 4 && samples <= 6) ||
            (bits == 16 && samples == 4))) {
        return Unsupported(what);
      }
      l.kind = Kind::kCmyk;
      break;
    default:
      return Unsupported(what);
  }
  return l;
}

// Reads every sample into `planes` (one buffer, or one per sample when
// separate), `row_bytes` per row.
absl::Status ReadSamples(TIFF* tif, const Source& src, const Layout& l,
                         std::vector<std::vector<uint8_t>>* planes,
                         size_t* row_bytes) {
  const int plane_count = l.separate ? l.samples : 1;
  const int per_plane = l.separate ? 1 : l.samples;
  *row_bytes = (size_t{l.width} * per_plane * l.bits + 7) / 8;
  planes->assign(plane_count, std::vector<uint8_t>(*row_bytes * l.height));
  if (TIFFIsTiled(tif)) {
    uint32_t tw = 0, th = 0;
    TIFFGetField(tif, TIFFTAG_TILEWIDTH, &tw);
    TIFFGetField(tif, TIFFTAG_TILELENGTH, &th);
    const tmsize_t tile_size = TIFFTileSize(tif);
    const tmsize_t tile_row = TIFFTileRowSize(tif);
    if (tw == 0 || th == 0 || tile_size <= 0 || tile_row <= 0 ||
        (size_t{tw} * per_plane * l.bits) % 8 != 0) {
      return Invalid(src, "bad tile geometry");
    }
    // The header sets the tile size and libtiff bounds it by nothing: a few hundred bytes could ask for a
    // terabyte. A tile is never larger than a whole plane of the image (or a few MiB for small images).
    const size_t plane_bytes = *row_bytes * l.height;
    constexpr size_t kSmallImageTileBytes = size_t{4} << 20;
    if (static_cast<size_t>(tile_size) > std::max(plane_bytes, kSmallImageTileBytes)) {
      return Invalid(src, absl::StrFormat("a tile of %u x %u (%d bytes) is larger than a %u x %u image needs",
                                          tw, th, static_cast<int64_t>(tile_size), l.width, l.height));
    }
    std::vector<uint8_t> tile(static_cast<size_t>(tile_size));
    for (int s = 0; s < plane_count; ++s) {
      for (uint32_t ty = 0; ty < l.height; ty += th) {
        for (uint32_t tx = 0; tx < l.width; tx += tw) {
          if (TIFFReadTile(tif, tile.data(), tx, ty, 0,
                           static_cast<uint16_t>(s)) < 0) {
            return Invalid(
                src,
                absl::StrFormat("cannot read the tile at (%d, %d)", tx, ty));
          }
          const uint32_t cols = std::min(tw, l.width - tx);
          const size_t offset = size_t{tx} * per_plane * l.bits / 8;
          const size_t count = (size_t{cols} * per_plane * l.bits + 7) / 8;
          for (uint32_t y = 0; y < th && ty + y < l.height; ++y) {
            std::memcpy((*planes)[s].data() + *row_bytes * (ty + y) + offset,
                        tile.data() + static_cast<size_t>(tile_row) * y, count);
          }
        }
      }
    }
  } else {
    // TIFFReadScanline may write a whole scanline as libtiff sizes it.
    std::vector<uint8_t> line(
        std::max<size_t>(*row_bytes, TIFFScanlineSize(tif)));
    for (int s = 0; s < plane_count; ++s) {
      for (uint32_t y = 0; y < l.height; ++y) {
        if (TIFFReadScanline(tif, line.data(), y, static_cast<uint16_t>(s)) <
            0) {
          return Invalid(src, absl::StrFormat("cannot read row %d", y));
        }
        std::memcpy((*planes)[s].data() + *row_bytes * y, line.data(),
                    *row_bytes);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RgbImage> DecodeTiff(absl::string_view bytes,
                                    const DecodeLimits& limits) {
  Source src;
  src.data = reinterpret_cast<const uint8_t*>(bytes.data());
  src.size = bytes.size();
  TIFFOpenOptions* options = TIFFOpenOptionsAlloc();
  if (options == nullptr)
    return absl::ResourceExhaustedError("TIFF: out of memory");
  TIFFOpenOptionsSetErrorHandlerExtR(options, OnError, &src);
  TIFFOpenOptionsSetWarningHandlerExtR(options, OnWarning, &src);
  // Bounds libtiff's own buffers (strips, tiles, tag arrays): the largest
  // legitimate one is an uncompressed single strip of the whole image.
  TIFFOpenOptionsSetMaxSingleMemAlloc(
      options, static_cast<tmsize_t>(limits.max_pixels * 8 + (16 << 20)));
  std::unique_ptr<TIFF, TiffCloser> tif(
      TIFFClientOpenExt("memory", "rm", &src, OnRead, OnWrite, OnSeek, OnClose,
                        OnSize, OnMap, OnUnmap, options));
  TIFFOpenOptionsFree(options);
  if (tif == nullptr) return Invalid(src, "cannot read the header");

  FLORENCE_ASSIGN_OR_RETURN(const Layout l, ReadLayout(tif.get(), src));
  FLORENCE_RETURN_IF_ERROR(CheckDimensions("TIFF", l.width, l.height, limits));
  std::vector<std::vector<uint8_t>> planes;
  size_t row_bytes = 0;
  FLORENCE_RETURN_IF_ERROR(ReadSamples(tif.get(), src, l, &planes, &row_bytes));

  RgbImage image =
      AllocateRgb(static_cast<int>(l.width), static_cast<int>(l.height));
  const int per_plane = l.separate ? 1 : l.samples;
  const int max_value = (1 << (l.bits < 16 ? l.bits : 8)) - 1;
  for (uint32_t y = 0; y < l.height; ++y) {
    // Sample s of pixel x, as an 8-bit value (16-bit: high byte) unless
    // `full` asks for the raw 16-bit value.
    auto sample = [&](int s, size_t x, bool full = false) -> int {
      const uint8_t* row = planes[l.separate ? s : 0].data() + row_bytes * y;
      const size_t i = x * per_plane + (l.separate ? 0 : s);
      switch (l.bits) {
        case 8:
          return row[i];
        case 16: {
          uint16_t v;  // libtiff has swapped to host order
          std::memcpy(&v, row + 2 * i, 2);
          return full ? v : v >> 8;
        }
        default:
          return PackedSample(row, static_cast<int64_t>(i), l.bits);
      }
    };
    uint8_t* out = image.rgb.data() + size_t{3} * l.width * y;
    for (size_t x = 0; x < l.width; ++x, out += 3) {
      switch (l.kind) {
        case Kind::kGray: {
          uint8_t v;
          if (l.bits == 16) {
            v = Gray16ToGray8(static_cast<uint16_t>(sample(0, x, true)));
          } else {
            int raw = sample(0, x);
            if (l.invert) raw = max_value - raw;
            v = ScaleGray(static_cast<uint8_t>(raw), l.bits);
          }
          out[0] = out[1] = out[2] = v;
          break;
        }
        case Kind::kPalette: {
          const int i = sample(0, x);
          for (int c = 0; c < 3; ++c)
            out[c] = static_cast<uint8_t>(l.colormap[c][i] >> 8);
          break;
        }
        case Kind::kRgb:
          for (int c = 0; c < 3; ++c)
            out[c] = static_cast<uint8_t>(sample(c, x));
          if (l.associated) {
            const auto alpha = static_cast<uint8_t>(sample(3, x));
            for (int c = 0; c < 3; ++c) out[c] = Unpremultiply(out[c], alpha);
          }
          break;
        case Kind::kCmyk:
          CmykToRgb(static_cast<uint8_t>(sample(0, x)),
                    static_cast<uint8_t>(sample(1, x)),
                    static_cast<uint8_t>(sample(2, x)),
                    static_cast<uint8_t>(sample(3, x)), out);
          break;
      }
    }
  }
  return image;
}

}  // namespace florence::engine::image_internal
