#include "engine/image/decode.h"

#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/image/codecs.h"

namespace florence::engine {
namespace image_internal {

absl::Status CheckDimensions(absl::string_view format, int64_t width,
                             int64_t height, const DecodeLimits& limits) {
  if (width <= 0 || height <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("invalid %s: the header gives a %dx%d image; width "
                        "and height must be positive",
                        format, width, height));
  }
  // Headers give at most 32-bit dimensions; once both fit in an int their
  // product fits in int64_t.
  constexpr int64_t kMaxSide = std::numeric_limits<int>::max();
  if (width > kMaxSide || height > kMaxSide ||
      width * height > limits.max_pixels) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s image of %dx%d pixels exceeds the limit of %d pixels (width x "
        "height); send a smaller image",
        format, width, height, limits.max_pixels));
  }
  return absl::OkStatus();
}

RgbImage AllocateRgb(int width, int height) {
  RgbImage image;
  image.width = width;
  image.height = height;
  image.rgb.resize(size_t{3} * static_cast<size_t>(width) *
                   static_cast<size_t>(height));
  return image;
}

}  // namespace image_internal

namespace {

enum class Format { kUnknown, kJpeg, kPng, kWebp, kBmp, kTiff, kGif, kOther };

struct Sniffed {
  Format format;
  const char* name;  // for formats recognised but not supported
};

Sniffed Sniff(absl::string_view b) {
  if (absl::StartsWith(b, "\xFF\xD8\xFF")) return {Format::kJpeg, "JPEG"};
  if (absl::StartsWith(b, "\x89PNG\r\n\x1A\n")) return {Format::kPng, "PNG"};
  if (b.size() >= 12 && absl::StartsWith(b, "RIFF") &&
      b.substr(8, 4) == "WEBP") {
    return {Format::kWebp, "WebP"};
  }
  if (absl::StartsWith(b, "BM")) return {Format::kBmp, "BMP"};
  if (absl::StartsWith(b, absl::string_view("II*\0", 4)) ||
      absl::StartsWith(b, absl::string_view("MM\0*", 4)) ||
      absl::StartsWith(b, absl::string_view("II+\0", 4)) ||
      absl::StartsWith(b, absl::string_view("MM\0+", 4))) {
    return {Format::kTiff, "TIFF"};
  }
  if (absl::StartsWith(b, "GIF87a") || absl::StartsWith(b, "GIF89a")) {
    return {Format::kGif, "GIF"};
  }
  if (b.size() >= 12 && b.substr(4, 4) == "ftyp") {
    return {Format::kOther, "HEIF/AVIF (ISO media)"};
  }
  if (absl::StartsWith(b, absl::string_view("\0\0\0\x0CjP  ", 8)) ||
      absl::StartsWith(b, "\xFF\x4F\xFF\x51")) {
    return {Format::kOther, "JPEG 2000"};
  }
  return {Format::kUnknown, nullptr};
}

constexpr absl::string_view kSupported = "JPEG, PNG, WebP, BMP or TIFF";

}  // namespace

absl::StatusOr<RgbImage> DecodeImage(absl::string_view bytes,
                                     const DecodeLimits& limits) {
  if (bytes.empty()) {
    return absl::InvalidArgumentError("image is empty (0 bytes)");
  }
  if (static_cast<int64_t>(bytes.size()) > limits.max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("image file of %d bytes exceeds the limit of %d bytes",
                        bytes.size(), limits.max_bytes));
  }
  const Sniffed sniffed = Sniff(bytes);
  switch (sniffed.format) {
    case Format::kJpeg:
      return image_internal::DecodeJpeg(bytes, limits);
    case Format::kPng:
      return image_internal::DecodePng(bytes, limits);
    case Format::kWebp:
      return image_internal::DecodeWebp(bytes, limits);
    case Format::kBmp:
      return image_internal::DecodeBmp(bytes, limits);
    case Format::kTiff:
      return image_internal::DecodeTiff(bytes, limits);
    case Format::kGif:
    case Format::kOther:
      return absl::InvalidArgumentError(absl::StrCat(
          "unsupported image format ", sniffed.name, "; send ", kSupported));
    case Format::kUnknown:
      break;
  }
  std::string head;
  for (size_t i = 0; i < bytes.size() && i < 8; ++i) {
    absl::StrAppendFormat(&head, "%s%02x", i ? " " : "",
                          static_cast<uint8_t>(bytes[i]));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unrecognized image format (first bytes ", head, "); send ", kSupported));
}

}  // namespace florence::engine
