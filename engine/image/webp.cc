// WebP through libwebp's WebPAnimDecoder with default options (RGBA output,
// no threads): exactly how Pillow's _webp.c decodes every WebP, still or
// animated. The first frame is composed onto a transparent-black canvas; the
// alpha channel is then dropped, as by convert("RGB").
#include <webp/decode.h>
#include <webp/demux.h>

#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/image/codecs.h"
#include "engine/status_macros.h"

namespace florence::engine::image_internal {
namespace {

const char* StatusName(VP8StatusCode status) {
  switch (status) {
    case VP8_STATUS_OK:
      return "ok";
    case VP8_STATUS_OUT_OF_MEMORY:
      return "out of memory";
    case VP8_STATUS_INVALID_PARAM:
      return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR:
      return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE:
      return "unsupported feature";
    case VP8_STATUS_SUSPENDED:
      return "suspended";
    case VP8_STATUS_USER_ABORT:
      return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA:
      return "truncated (not enough data)";
  }
  return "unknown error";
}

struct AnimDecoderDeleter {
  void operator()(WebPAnimDecoder* dec) const { WebPAnimDecoderDelete(dec); }
};

}  // namespace

absl::StatusOr<RgbImage> DecodeWebp(absl::string_view bytes,
                                    const DecodeLimits& limits) {
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  WebPBitstreamFeatures features;
  const VP8StatusCode status = WebPGetFeatures(data, bytes.size(), &features);
  if (status != VP8_STATUS_OK) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid WebP: ", StatusName(status)));
  }
  FLORENCE_RETURN_IF_ERROR(
      CheckDimensions("WebP", features.width, features.height, limits));

  WebPAnimDecoderOptions options;
  if (!WebPAnimDecoderOptionsInit(&options)) {
    return absl::InternalError("WebP: libwebp version mismatch");
  }
  options.color_mode = MODE_RGBA;
  options.use_threads = 0;
  const WebPData webp_data = {data, bytes.size()};
  std::unique_ptr<WebPAnimDecoder, AnimDecoderDeleter> decoder(
      WebPAnimDecoderNew(&webp_data, &options));
  if (decoder == nullptr) {
    return absl::InvalidArgumentError(
        "invalid WebP: truncated or malformed container (RIFF chunks)");
  }
  WebPAnimInfo info;
  if (!WebPAnimDecoderGetInfo(decoder.get(), &info)) {
    return absl::InvalidArgumentError("invalid WebP: no image information");
  }
  // The canvas is what gets allocated; for a still image it equals the
  // bitstream size checked above.
  FLORENCE_RETURN_IF_ERROR(
      CheckDimensions("WebP", info.canvas_width, info.canvas_height, limits));
  uint8_t* rgba = nullptr;
  int timestamp = 0;
  if (!WebPAnimDecoderGetNext(decoder.get(), &rgba, &timestamp)) {
    return absl::InvalidArgumentError(
        "invalid WebP: the image data is corrupt or truncated");
  }
  RgbImage image = AllocateRgb(static_cast<int>(info.canvas_width),
                               static_cast<int>(info.canvas_height));
  const size_t pixels = size_t{info.canvas_width} * info.canvas_height;
  for (size_t i = 0; i < pixels; ++i) {
    std::memcpy(&image.rgb[3 * i], rgba + 4 * i, 3);
  }
  return image;
}

}  // namespace florence::engine::image_internal
