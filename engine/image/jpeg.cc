// JPEG through libjpeg(-turbo), configured as Pillow's JpegDecode.c does:
// libjpeg's defaults (JDCT_ISLOW, fancy upsampling, no block smoothing effect
// on complete files) and an output colour space chosen by the component count
// (1: grey, 3: RGB, 4: CMYK, with YCCK converted to CMYK by libjpeg). Pillow
// then reads CMYK data as Adobe-inverted ("CMYK;I") and converts it to RGB with
// cmyk2rgb; grey is replicated.
//
// libjpeg reports fatal errors through error_exit, whose default calls exit();
// ours longjmps back. The longjmp only unwinds libjpeg's C frames: the
// functions that call setjmp below hold no C++ objects with destructors, and
// everything that owns memory lives in their callers.
#include <csetjmp>
#include <cstdio>  // jpeglib.h needs FILE and size_t
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/image/codecs.h"
#include "engine/status_macros.h"

// clang-format off
#include <jpeglib.h>
#include <jerror.h>
// clang-format on

namespace florence::engine::image_internal {
namespace {

// Progressive JPEGs may carry any number of scans, each a full pass over the
// coefficients: a known way to make a small file take minutes. Real encoders
// write about 10; libjpeg-turbo suggests a limit in this range.
constexpr int kMaxScans = 256;

struct ErrorManager {
  jpeg_error_mgr pub;  // first member: libjpeg passes &pub around
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool hit_eof;  // libjpeg ran out of data and padded with a fake EOI
};

struct JpegContext {
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  jpeg_progress_mgr progress;
  bool created = false;

  JpegContext() = default;
  JpegContext(const JpegContext&) = delete;
  JpegContext& operator=(const JpegContext&) = delete;
  ~JpegContext() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

[[noreturn]] void ErrorExit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings (level -1) and trace messages: never printed. Running out of data
// is a warning in libjpeg (it substitutes an EOI and fills the rest of the
// image with grey); Pillow treats it as an error ("image file is truncated"),
// and so do we. Other warnings (extraneous bytes, corrupt entropy data) are
// tolerated, as by Pillow.
void EmitMessage(j_common_ptr cinfo, int level) {
  if (level >= 0) return;
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  if (cinfo->err->msg_code == JWRN_JPEG_EOF) err->hit_eof = true;
  cinfo->err->num_warnings++;
}

void OutputMessage(j_common_ptr) {}

void OnProgress(j_common_ptr cinfo) {
  if (!cinfo->is_decompressor) return;
  auto* dinfo = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (dinfo->input_scan_number > kMaxScans) {
    auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
    std::snprintf(err->message, sizeof(err->message),
                  "more than %d progressive scans", kMaxScans);
    std::longjmp(err->jump, 1);
  }
}

// Creates the decompressor and reads the header. False on error (message in
// ctx->err.message).
bool ReadHeader(JpegContext* ctx, const unsigned char* data, size_t size) {
  ctx->cinfo.err = jpeg_std_error(&ctx->err.pub);
  ctx->err.pub.error_exit = ErrorExit;
  ctx->err.pub.emit_message = EmitMessage;
  ctx->err.pub.output_message = OutputMessage;
  std::snprintf(ctx->err.message, sizeof(ctx->err.message), "%s",
                "premature end of data");
  ctx->err.hit_eof = false;
  if (setjmp(ctx->err.jump)) return false;
  ctx->created = true;  // jpeg_destroy_decompress copes with a failed create
  jpeg_create_decompress(&ctx->cinfo);
  ctx->progress.progress_monitor = OnProgress;
  ctx->cinfo.progress = &ctx->progress;
  jpeg_mem_src(&ctx->cinfo, data, size);
  jpeg_read_header(&ctx->cinfo, TRUE);
  return true;
}

// Decodes every scanline into `out` (3 bytes per pixel), using `scratch`
// (width * 4 bytes) for grey and CMYK rows. False on error.
bool ReadPixels(JpegContext* ctx, uint8_t* out, uint8_t* scratch) {
  if (setjmp(ctx->err.jump)) return false;
  j_decompress_ptr cinfo = &ctx->cinfo;
  const int components = cinfo->num_components;
  cinfo->out_color_space = components == 1   ? JCS_GRAYSCALE
                           : components == 3 ? JCS_RGB
                                             : JCS_CMYK;
  jpeg_start_decompress(cinfo);
  const size_t width = cinfo->output_width;
  while (cinfo->output_scanline < cinfo->output_height) {
    uint8_t* dst = out + size_t{3} * width * cinfo->output_scanline;
    JSAMPROW row = components == 3 ? dst : scratch;
    if (jpeg_read_scanlines(cinfo, &row, 1) != 1) {
      std::snprintf(ctx->err.message, sizeof(ctx->err.message),
                    "decoder stalled at row %u", cinfo->output_scanline);
      return false;
    }
    if (components == 1) {
      for (size_t x = 0; x < width; ++x) {
        dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = scratch[x];
      }
    } else if (components == 4) {
      for (size_t x = 0; x < width; ++x) {
        const uint8_t* p = scratch + 4 * x;  // Adobe polarity: inverted
        CmykToRgb(255 - p[0], 255 - p[1], 255 - p[2], 255 - p[3], dst + 3 * x);
      }
    }
  }
  // jpeg_finish_decompress is skipped on purpose: Pillow accepts a file whose
  // scanlines are complete even if what follows them (EOI) is missing.
  return true;
}

// The largest DCT scaling denominator (8, 4, 2, else 1) that keeps both sides
// of a width x height image at least min_side (libjpeg rounds the scaled
// sides up). 1 when min_side <= 0.
int ScaleDenominator(int64_t width, int64_t height, int min_side) {
  if (min_side <= 0) return 1;
  for (int denom : {8, 4, 2}) {
    if ((width + denom - 1) / denom >= min_side &&
        (height + denom - 1) / denom >= min_side) {
      return denom;
    }
  }
  return 1;
}

// Sets the output scale 1/denom and computes output_width/height, the size
// jpeg_start_decompress will then use. False on error.
bool SetScale(JpegContext* ctx, int denom) {
  if (setjmp(ctx->err.jump)) return false;
  ctx->cinfo.scale_num = 1;
  ctx->cinfo.scale_denom = static_cast<unsigned int>(denom);
  jpeg_calc_output_dimensions(&ctx->cinfo);
  return true;
}

absl::Status JpegError(const ErrorManager& err) {
  if (err.hit_eof) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid JPEG: truncated (the data ends early): ", err.message));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("invalid JPEG: ", err.message));
}

}  // namespace

absl::StatusOr<RgbImage> DecodeJpeg(absl::string_view bytes,
                                    const DecodeLimits& limits) {
  JpegContext ctx;
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  if (!ReadHeader(&ctx, data, bytes.size()) || ctx.err.hit_eof) {
    return JpegError(ctx.err);
  }
  const int components = ctx.cinfo.num_components;
  if (components != 1 && components != 3 && components != 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unsupported JPEG: ", components,
        " colour components (only 1 = grey, 3 = colour, 4 = CMYK)"));
  }
  FLORENCE_RETURN_IF_ERROR(CheckDimensions("JPEG", ctx.cinfo.image_width,
                                           ctx.cinfo.image_height, limits));
  const int denom = ScaleDenominator(ctx.cinfo.image_width,
                                     ctx.cinfo.image_height,
                                     limits.jpeg_scaled_min_side);
  if (!SetScale(&ctx, denom)) return JpegError(ctx.err);
  RgbImage image = AllocateRgb(static_cast<int>(ctx.cinfo.output_width),
                               static_cast<int>(ctx.cinfo.output_height));
  if (denom > 1) {
    image.source_width = static_cast<int>(ctx.cinfo.image_width);
    image.source_height = static_cast<int>(ctx.cinfo.image_height);
  }
  std::vector<uint8_t> scratch(size_t{4} * ctx.cinfo.output_width);
  if (!ReadPixels(&ctx, image.rgb.data(), scratch.data()) || ctx.err.hit_eof) {
    return JpegError(ctx.err);
  }
  return image;
}

}  // namespace florence::engine::image_internal
