// Segmentation results as an image: every polygon of every instance filled
// into one binary mask of the original image, encoded as PNG.
//
// Torch-free; callable from any thread (no shared state).
#ifndef FLORENCE_ENGINE_POSTPROCESS_MASK_PNG_H_
#define FLORENCE_ENGINE_POSTPROCESS_MASK_PNG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/postprocess/parse.h"

namespace florence::engine {

// Largest mask PolygonMaskPng draws, in pixels (256 MiB of 8-bit samples).
inline constexpr int64_t kMaxMaskPixels = int64_t{1} << 28;

// An 8-bit grayscale PNG (no alpha, no interlacing) of `width` x `height`
// pixels: 255 where a pixel is covered, 0 elsewhere.
//
// Fill rule. Each polygon (parse.h: alternating x, y pixel coordinates of the
// original image; an odd trailing value is ignored) is closed by an edge from
// its last point back to its first. Pixel (x, y) is covered by it when the
// pixel's centre (x + 0.5, y + 0.5) is inside under the even-odd rule, with
// the crossing test of W. R. Franklin's pnpoly: the ray from the centre
// towards +x crosses edge (a, b) when (a.y > cy) != (b.y > cy) and
// cx < a.x + (cy - a.y) * (b.x - a.x) / (b.y - a.y) (in double precision).
// So a rectangle with integer corners x0 < x1, y0 < y1 covers exactly the
// (x1 - x0) * (y1 - y0) pixels [x0, x1) x [y0, y1), and a polygon that winds
// twice around a region leaves it empty. The mask is the union over all
// polygons of all instances: overlapping polygons and instances do not
// cancel each other. Polygons with fewer than 3 points, or with a coordinate
// that is not finite, cover nothing; parts outside the image are clipped.
//
// Errors: InvalidArgument if a side is not positive or width * height is
// more than kMaxMaskPixels; Internal if libpng fails.
absl::StatusOr<std::string> PolygonMaskPng(
    const std::vector<PolygonInstance>& instances, int width, int height);

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_POSTPROCESS_MASK_PNG_H_
