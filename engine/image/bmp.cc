// BMP, hand-written after Pillow's BmpImagePlugin (what it accepts and how it
// unpacks each layout):
//   headers      12 (OS/2 core), 40, 52, 56, 64, 108, 124 bytes; a negative
//                height (top byte 0xFF) means top-down rows
//   1/4/8-bit    palette (BGRX entries, BGR for the 12-byte header); indices
//                past the palette are black. An 8-bit palette that is the grey
//                ramp 0..n-1 makes Pillow read the index itself as the grey
//                value, so indices past it stay grey, not black.
//   RLE8, RLE4   Pillow's BmpRleDecoder, quirks included (runs clipped to the
//                row, absolute runs may wrap, word alignment on the absolute
//                file offset); data ending before the last pixel is an error
//   16-bit       5-5-5 (BI_RGB or bitfields) or 5-6-5 bitfields, expanded as
//                v * 255 / 31 (63) with integer division
//   24/32-bit    BGR / BGRX; 32-bit bitfields in the layouts Pillow lists;
//                alpha dropped
// Every read is bounds-checked against the buffer.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/image/codecs.h"
#include "engine/status_macros.h"

namespace florence::engine::image_internal {
namespace {

constexpr uint32_t kRaw = 0, kRle8 = 1, kRle4 = 2, kBitfields = 3;

uint16_t U16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | p[1] << 8);
}
uint32_t U32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 |
         uint32_t{p[3]} << 24;
}

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("invalid BMP: ", what));
}
absl::Status Unsupported(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("unsupported BMP: ", what));
}

struct Header {
  int64_t width = 0;
  int64_t height = 0;
  bool top_down = false;
  int bits = 0;
  uint32_t compression = kRaw;
  uint64_t colors = 0;
  int palette_entry = 4;  // bytes per palette entry
  size_t palette_pos = 0;
  size_t data_pos = 0;
  uint32_t masks[4] = {0, 0, 0, 0};  // r, g, b, a (bitfields only)
};

absl::StatusOr<Header> ParseHeader(const uint8_t* d, size_t size) {
  if (size < 18) return Invalid("truncated file header");
  Header h;
  h.data_pos = U32(d + 10);
  const uint32_t header_size = U32(d + 14);
  if (header_size == 12) {
    if (size < 26) return Invalid("truncated info header");
    h.width = U16(d + 18);
    h.height = U16(d + 20);
    h.bits = U16(d + 24);
    h.palette_entry = 3;
  } else if (header_size == 40 || header_size == 52 || header_size == 56 ||
             header_size == 64 || header_size == 108 || header_size == 124) {
    if (size < 14 + header_size) return Invalid("truncated info header");
    h.width = U32(d + 18);
    const uint32_t height = U32(d + 22);
    h.top_down = d[25] == 0xFF;
    h.height = h.top_down ? (int64_t{1} << 32) - height : height;
    h.bits = U16(d + 28);
    h.compression = U32(d + 30);
    h.colors = U32(d + 46);
    if (h.compression == kBitfields) {
      // After a 40-byte header three masks follow it; longer headers contain
      // them (and alpha from 56 bytes on). Either way they start at 54.
      const int count = header_size >= 56 ? 4 : 3;
      if (size < 54 + 4 * size_t(count))
        return Invalid("truncated bitfield masks");
      for (int i = 0; i < count; ++i) h.masks[i] = U32(d + 54 + 4 * i);
    }
  } else {
    return Unsupported(
        absl::StrCat("header size ", header_size,
                     " (expected 12, 40, 52, 56, 64, 108 or 124)"));
  }
  h.palette_pos = 14 + header_size;
  if (h.bits != 1 && h.bits != 4 && h.bits != 8 && h.bits != 16 &&
      h.bits != 24 && h.bits != 32) {
    return Unsupported(absl::StrCat(h.bits, " bits per pixel"));
  }
  if (h.colors == 0 && h.bits <= 8) h.colors = uint64_t{1} << h.bits;
  if (h.bits <= 8 && h.data_pos == h.palette_pos) {
    h.data_pos +=
        h.palette_entry * h.colors;  // as Pillow: offset points at the palette
  }
  return h;
}

// Pillow's BmpRleDecoder: fills `index` (width * height, in file row order).
absl::Status DecodeRle(const uint8_t* d, size_t size, const Header& h,
                       bool rle4, std::vector<uint8_t>* index) {
  const size_t width = static_cast<size_t>(h.width);
  const size_t dest = width * static_cast<size_t>(h.height);
  index->assign(dest, 0);
  uint8_t* out = index->data();
  size_t n = 0, x = 0, pos = h.data_pos;
  while (n < dest) {
    if (pos + 2 > size) break;
    size_t count = d[pos];
    const uint8_t byte = d[pos + 1];
    pos += 2;
    if (count != 0) {  // encoded run
      if (x + count > width) count = x < width ? width - x : 0;
      for (size_t i = 0; i < count && n < dest; ++i) {
        out[n++] = rle4 ? (i % 2 == 0 ? byte >> 4 : byte & 0x0F) : byte;
      }
      x += count;
    } else if (byte == 0) {  // end of line
      while (n % width != 0) out[n++] = 0;
      x = 0;
    } else if (byte == 1) {  // end of bitmap
      break;
    } else if (byte == 2) {  // delta
      if (pos + 2 > size) break;
      const size_t skip = d[pos] + size_t{d[pos + 1]} * width;
      pos += 2;
      n += std::min(dest - n, skip);  // already zero
      x = n % width;
    } else {  // absolute run of `byte` pixels
      const size_t pixels = std::min<size_t>(dest - n, byte);
      const size_t want = rle4 ? (pixels + 1) / 2 : pixels;
      const size_t got = std::min(want, size - pos);
      for (size_t i = 0; i < got; ++i) {
        const uint8_t v = d[pos + i];
        if (rle4) {
          out[n++] = v >> 4;
          if (2 * i + 1 < pixels) out[n++] = v & 0x0F;
        } else {
          out[n++] = v;
        }
      }
      pos += got;
      if (got < want || n == dest) break;
      x += byte;
      if (pos % 2 != 0) ++pos;
    }
  }
  if (n < dest) {
    return Invalid(absl::StrFormat(
        "RLE data ends after %d of %d pixels (truncated or ended early)", n,
        dest));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RgbImage> DecodeBmp(absl::string_view bytes,
                                   const DecodeLimits& limits) {
  const auto* d = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t size = bytes.size();
  FLORENCE_ASSIGN_OR_RETURN(const Header h, ParseHeader(d, size));

  // Colour table (1/4/8 bits).
  uint8_t palette[256][3] = {};
  bool gray_ramp = false;  // Pillow reads such images as mode "L"
  if (h.bits <= 8) {
    if (h.colors > 256) {
      return Invalid(
          absl::StrCat("palette of ", h.colors, " colours (at most 256)"));
    }
    const size_t palette_bytes = h.palette_entry * h.colors;
    if (h.palette_pos > size || size - h.palette_pos < palette_bytes) {
      return Invalid("truncated palette");
    }
    gray_ramp = h.bits == 8 && h.colors > 2;
    for (size_t i = 0; i < h.colors; ++i) {
      const uint8_t* e = d + h.palette_pos + h.palette_entry * i;
      palette[i][0] = e[2];
      palette[i][1] = e[1];
      palette[i][2] = e[0];
      gray_ramp = gray_ramp && e[0] == i && e[1] == i && e[2] == i;
    }
  }

  // Pixel layout.
  int shifts[3] = {16, 8, 0};  // r, g, b bit positions (24/32-bit)
  bool rgb565 = false;
  if (h.compression == kBitfields) {
    const uint32_t* m = h.masks;
    auto is = [m](uint32_t r, uint32_t g, uint32_t b, uint32_t a) {
      return m[0] == r && m[1] == g && m[2] == b && m[3] == a;
    };
    if (h.bits == 32 &&
        (is(0xFF0000, 0xFF00, 0xFF, 0) || is(0xFF000000, 0xFF0000, 0xFF00, 0) ||
         is(0xFF000000, 0xFF00, 0xFF, 0) ||
         is(0xFF000000, 0xFF0000, 0xFF00, 0xFF) ||
         is(0xFF, 0xFF00, 0xFF0000, 0xFF000000) ||
         is(0xFF0000, 0xFF00, 0xFF, 0xFF000000) ||
         is(0xFF000000, 0xFF00, 0xFF, 0xFF0000))) {
      for (int c = 0; c < 3; ++c) shifts[c] = __builtin_ctz(m[c]);
    } else if (h.bits == 32 && is(0, 0, 0, 0)) {
      // Pillow reads all-zero masks as BGRA.
    } else if (h.bits == 24 && m[0] == 0xFF0000 && m[1] == 0xFF00 &&
               m[2] == 0xFF) {
    } else if (h.bits == 16 && m[0] == 0xF800 && m[1] == 0x7E0 &&
               m[2] == 0x1F) {
      rgb565 = true;
    } else if (h.bits == 16 && m[0] == 0x7C00 && m[1] == 0x3E0 &&
               m[2] == 0x1F) {
    } else {
      return Unsupported(absl::StrFormat(
          "%d-bit bitfields layout (masks r=%#x g=%#x b=%#x a=%#x)", h.bits,
          m[0], m[1], m[2], m[3]));
    }
  } else if (h.compression == kRle8 || h.compression == kRle4) {
    if (h.bits != (h.compression == kRle8 ? 8 : 4)) {
      return Unsupported(absl::StrCat("RLE", h.compression == kRle8 ? 8 : 4,
                                      " compression with ", h.bits,
                                      " bits per pixel"));
    }
  } else if (h.compression != kRaw) {
    return Unsupported(absl::StrCat("compression ", h.compression,
                                    h.compression == 4   ? " (embedded JPEG)"
                                    : h.compression == 5 ? " (embedded PNG)"
                                                         : ""));
  }

  FLORENCE_RETURN_IF_ERROR(CheckDimensions("BMP", h.width, h.height, limits));
  const size_t width = static_cast<size_t>(h.width);
  const size_t height = static_cast<size_t>(h.height);

  // Source rows in file order: RLE decodes to one index per pixel; raw data
  // is used in place.
  std::vector<uint8_t> rle;
  const uint8_t* rows;
  size_t stride;
  if (h.compression == kRle8 || h.compression == kRle4) {
    FLORENCE_RETURN_IF_ERROR(
        DecodeRle(d, size, h, h.compression == kRle4, &rle));
    rows = rle.data();
    stride = width;
  } else {
    stride = ((width * h.bits + 31) >> 3) & ~size_t{3};
    const size_t last_row = (width * h.bits + 7) / 8;
    const size_t available = h.data_pos <= size ? size - h.data_pos : 0;
    if (available < last_row || (available - last_row) / stride < height - 1) {
      return Invalid(absl::StrFormat(
          "truncated pixel data (%dx%d at %d bits needs %d bytes from offset "
          "%d; the file has %d)",
          width, height, h.bits, stride * (height - 1) + last_row, h.data_pos,
          size));
    }
    rows = d + h.data_pos;
  }
  const int bits =
      (h.compression == kRle8 || h.compression == kRle4) ? 8 : h.bits;

  RgbImage image =
      AllocateRgb(static_cast<int>(width), static_cast<int>(height));
  for (size_t r = 0; r < height; ++r) {
    const uint8_t* in = rows + stride * r;
    uint8_t* out =
        image.rgb.data() + 3 * width * (h.top_down ? r : height - 1 - r);
    for (size_t x = 0; x < width; ++x, out += 3) {
      switch (bits) {
        case 1:
        case 4:
        case 8: {
          const uint8_t i = bits == 8 ? in[x] : PackedSample(in, x, bits);
          if (gray_ramp) {
            out[0] = out[1] = out[2] = i;
          } else if (i < h.colors) {
            std::memcpy(out, palette[i], 3);
          } else {
            out[0] = out[1] = out[2] = 0;
          }
          break;
        }
        case 16: {
          const int p = U16(in + 2 * x);
          if (rgb565) {
            out[0] = static_cast<uint8_t>(((p >> 11) & 31) * 255 / 31);
            out[1] = static_cast<uint8_t>(((p >> 5) & 63) * 255 / 63);
          } else {
            out[0] = static_cast<uint8_t>(((p >> 10) & 31) * 255 / 31);
            out[1] = static_cast<uint8_t>(((p >> 5) & 31) * 255 / 31);
          }
          out[2] = static_cast<uint8_t>((p & 31) * 255 / 31);
          break;
        }
        case 24:
          out[0] = in[3 * x + 2];
          out[1] = in[3 * x + 1];
          out[2] = in[3 * x];
          break;
        case 32: {
          const uint32_t p = U32(in + 4 * x);
          for (int c = 0; c < 3; ++c)
            out[c] = static_cast<uint8_t>(p >> shifts[c]);
          break;
        }
      }
    }
  }
  return image;
}

}  // namespace florence::engine::image_internal
