// Visualisation of a parsed Florence-2 result for people (florence2-run
// --draw): boxes, OCR quads and polygons are drawn onto the original image
// with their labels in a small built-in bitmap font, and the picture is
// encoded as PNG.
//
// Labels are drawn in 5x7 ASCII glyphs; other characters show as '?'. Pure-
// text results (captions, OCR) are written in a banner at the top. Drawing is
// clipped to the image, so coordinates outside it (bins past 999) are safe.
//
// Torch-free; no shared state, callable from any thread.
#ifndef FLORENCE_ENGINE_PIPELINE_RENDER_H_
#define FLORENCE_ENGINE_PIPELINE_RENDER_H_

#include <string>

#include "absl/status/statusor.h"
#include "engine/image/decode.h"
#include "engine/postprocess/parse.h"

namespace florence::engine {

// Draws `result` onto `image` in place. Line width and glyph size scale with
// the image. `image` must hold 3 * width * height bytes.
void DrawResult(const TaskResult& result, RgbImage* image);

// The image as an 8-bit RGB PNG file. InvalidArgument for an empty image or a
// buffer of the wrong size; Internal if libpng fails.
absl::StatusOr<std::string> EncodePng(const RgbImage& image);

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_PIPELINE_RENDER_H_
